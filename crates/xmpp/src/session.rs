//! A bound XMPP session: stanzas from the client become hub calls, hub events become
//! stanzas, and stream management (XEP-0198) counts, acknowledges and resends them.
//!
//! The session is independent of the transport: TCP streams (and later WebSocket and BOSH)
//! authenticate the client, then hand a [`Transport`] to [`run`].
//!
//! Acknowledgements decide delivery. A message becomes "delivered" in the hub (its
//! delivery cursor moves) only when the client acknowledged it with XEP-0198, or, for a
//! client without stream management, when it was written to the connection. A session
//! whose connection drops keeps everything unacknowledged for `resume_timeout`; if it is
//! not resumed by then, what was unacknowledged is still past the delivery cursor, so it
//! is in the message cache for the person's next session.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use switchboard_core::hub::{EventStream, Principal, SessionSlot};
use switchboard_core::model::*;
use switchboard_core::{Address, HubError};
use switchboard_xmpp_proto::{Element, StreamError};

use crate::Line;
use crate::disco;
use crate::jid::{self, Target};
use crate::mam;
use crate::roster::{self, Directions};
use crate::stanza::*;

/// What a transport hands the session.
pub enum Incoming {
    /// The client opened (or, after SASL, reopened) the stream, addressed to this domain.
    Open {
        to: Option<String>,
    },
    Stanza(Element),
    /// The client closed the stream cleanly.
    Close,
    /// Nothing to read, but the transport learnt something (a delivery confirmation).
    Tick,
    /// The connection is gone without a close.
    Gone,
    /// The client broke the stream's rules.
    Error(StreamError),
}

/// One client connection's stream, whatever carries it.
pub trait Transport: Send {
    /// The next thing from the client. Must be cancel-safe: the session waits for it and for
    /// hub events at once.
    fn read(&mut self) -> impl Future<Output = Incoming> + Send;
    /// Sends complete top-level elements, in order (a WebSocket sends one per message).
    fn write(&mut self, items: &[String]) -> impl Future<Output = std::io::Result<()>> + Send;
    /// Answers the client's stream opening: the transport's stream header (or framing
    /// `<open/>`) followed by these features.
    fn open(
        &mut self,
        features: Option<Element>,
    ) -> impl Future<Output = std::io::Result<()>> + Send;
    /// The stream restarts after SASL success: parser state is reset.
    fn restart(&mut self);
    /// Whether the client's connection is encrypted (PLAIN is offered only then).
    fn secure(&self) -> bool;
    /// Whether a successful write means the client has what was written (a socket: as far
    /// as the server can ever know). BOSH learns it from the client's later requests.
    fn confirms_on_write(&self) -> bool {
        true
    }
    /// For transports that confirm later: what was written so far carries journal positions
    /// up to `pos`.
    fn written_upto(&mut self, _pos: Pos) {}
    /// For transports that confirm later: the highest position the client has confirmed
    /// since the last call.
    fn take_confirmed(&mut self) -> Option<Pos> {
        None
    }
    /// Ends the stream, with a stream error condition first if one is given.
    fn close(&mut self, error: Option<(&str, Option<&str>)>) -> impl Future<Output = ()> + Send;
}

/// A session whose connection dropped, waiting to be resumed.
pub struct Detached {
    state: Box<State>,
    stream: EventStream,
    since: Instant,
}

/// Stream management state (XEP-0198).
struct Sm {
    /// Set when the client asked for resumption.
    resume_id: Option<String>,
    /// Stanzas received from the client and handled.
    inbound: u32,
    /// Stanzas sent to the client.
    outbound: u32,
    /// Sent and not yet acknowledged: (count, journal position, the stanza as sent).
    unacked: VecDeque<(u32, Option<Pos>, String)>,
    /// An `<r/>` is outstanding.
    requested: bool,
}

/// A message this client sent and asked a receipt or marker for.
struct AwaitingReceipt {
    conversation: ConversationId,
    seq: Seq,
    id: String,
    peer: Address,
    markable: bool,
    receipt: bool,
}

const MAX_AWAITING: usize = 256;
const MAX_SEEN: usize = 1024;
const HISTORY_ON_JOIN: usize = 20;

struct State {
    principal: Principal,
    slot: Arc<SessionSlot>,
    resource: String,
    full_jid: String,
    /// The client sent its initial presence: it is available and gets presence.
    available: bool,
    /// Presence that arrived before the initial presence, newest per person.
    held: HashMap<Address, Arc<PresenceUpdate>>,
    /// The client asked for its roster: it gets roster pushes.
    interested: bool,
    roster: HashMap<Address, Directions>,
    carbons: bool,
    /// Direct conversations known to exist, with the peer.
    peers: HashMap<ConversationId, Address>,
    /// Rooms joined, with this session's nick.
    rooms: HashMap<ConversationId, String>,
    sm: Option<Sm>,
    awaiting: VecDeque<AwaitingReceipt>,
    /// Messages from others by their id, for chat markers: (conversation, number).
    seen: HashMap<String, (ConversationId, Seq)>,
    seen_order: VecDeque<String>,
    /// Client ids of messages this session sent: they come back in replays after a
    /// resumption and must not be shown as someone else's.
    sent_ids: HashSet<String>,
    pushes: u64,
    /// The highest journal position written to a client without stream management.
    written: Option<Pos>,
    out: Vec<String>,
    inactive: bool,
    /// Where directed presence went, to tell them when this session goes unavailable.
    directed: HashSet<(Address, Option<String>)>,
}

enum Flow {
    Continue,
    Closed,
}

/// The stream features after authentication.
pub fn features_after_auth() -> Element {
    Element::new("features", switchboard_xmpp_proto::NS_STREAMS)
        .with_child(Element::new("bind", NS_BIND))
        .with_child(
            Element::new("session", NS_SESSION).with_child(Element::new("optional", NS_SESSION)),
        )
        .with_child(Element::new("sm", NS_SM))
        .with_child(Element::new("csi", NS_CSI))
        .with_child(disco::caps_feature())
}

/// Runs an authenticated stream: resource binding or resumption, then the session until the
/// connection ends.
pub async fn run<T: Transport>(line: Arc<Line>, t: &mut T, principal: Principal) {
    let deadline = tokio::time::Instant::now() + line.config.negotiation_timeout;
    let (mut state, mut stream) = loop {
        let incoming = match tokio::time::timeout_at(deadline, t.read()).await {
            Ok(incoming) => incoming,
            Err(_) => {
                t.close(Some((
                    "connection-timeout",
                    Some("no resource was bound in time"),
                )))
                .await;
                end_login(&line, &principal).await;
                return;
            }
        };
        let el = match incoming {
            Incoming::Stanza(el) => el,
            Incoming::Tick => continue,
            Incoming::Open { .. } => {
                t.close(Some(("bad-format", Some("the stream was already opened"))))
                    .await;
                end_login(&line, &principal).await;
                return;
            }
            Incoming::Close => {
                t.close(None).await;
                end_login(&line, &principal).await;
                return;
            }
            Incoming::Gone => {
                end_login(&line, &principal).await;
                return;
            }
            Incoming::Error(e) => {
                t.close(Some((e.condition(), Some(e.text())))).await;
                end_login(&line, &principal).await;
                return;
            }
        };
        let reply = if el.is("resume", NS_SM) {
            match resume(&line, &principal, &el).await {
                Ok(found) => break found,
                Err(failed) => failed,
            }
        } else if el.name() == "iq"
            && el.attr("type") == Some("set")
            && el.get_child("bind", NS_BIND).is_some()
        {
            match bind(&line, &principal, &el).await {
                Ok(found) => break found,
                Err(reply) => reply,
            }
        } else if el.is("enable", NS_SM) {
            sm_failed("unexpected-request", None)
        } else if el.name() == "iq" {
            error_reply(&el, Condition::NotAllowed, Some("bind a resource first"))
        } else {
            t.close(Some(("not-authorized", Some("bind a resource first"))))
                .await;
            end_login(&line, &principal).await;
            return;
        };
        if t.write(&[reply.to_xml_in(NS_CLIENT)]).await.is_err() {
            end_login(&line, &principal).await;
            return;
        }
    };
    // A resumed session keeps its original login; the one just made is not needed.
    if state.principal.login != principal.login {
        end_login(&line, &principal).await;
    }

    let mut stopping = line.stopping.subscribe();
    let mut shaper = switchboard_core::limits::Shaper::new(
        switchboard_core::limits::Rate {
            per_second: line.config.stanzas_per_second,
            burst: line.config.stanza_burst.max(1.0),
        },
        std::time::Instant::now(),
    );
    let takeover = Arc::new(tokio::sync::Notify::new());
    let mut registered: Option<String> = None;
    let flow = loop {
        // A resumable session can be taken over by a resumption on another connection.
        if registered.is_none()
            && let Some(id) = state.sm.as_ref().and_then(|sm| sm.resume_id.clone())
        {
            line.takeovers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone(), (state.principal.user, takeover.clone()));
            registered = Some(id);
        }
        // Whatever is queued goes out before waiting again (the bind or resumption answer
        // on the first turn).
        state.request_ack(&line);
        let out = std::mem::take(&mut state.out);
        if !out.is_empty() {
            if t.write(&out).await.is_err() {
                break Flow::Continue;
            }
            match state.written.take() {
                Some(pos) if t.confirms_on_write() => line.hub.ack(&state.slot, pos),
                Some(pos) => t.written_upto(pos),
                None => {}
            }
        }
        if let Some(pos) = t.take_confirmed() {
            line.hub.ack(&state.slot, pos);
        }
        let step = tokio::select! {
            incoming = t.read() => match incoming {
                Incoming::Stanza(el) => {
                    let step = state.handle(&line, el).await;
                    // A client over its rate is simply read more slowly.
                    let wait = shaper.take(std::time::Instant::now());
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    step
                }
                Incoming::Tick => Ok(()),
                Incoming::Open { .. } => Err(("bad-format", "the stream was already opened".to_string())),
                Incoming::Close => {
                    let _ = t.write(&std::mem::take(&mut state.out)).await;
                    t.close(None).await;
                    break Flow::Closed;
                }
                Incoming::Gone => break Flow::Continue,
                Incoming::Error(e) => {
                    let _ = t.write(&std::mem::take(&mut state.out)).await;
                    t.close(Some((e.condition(), Some(e.text())))).await;
                    break Flow::Closed;
                }
            },
            () = takeover.notified() => {
                t.close(Some(("conflict", Some("the session was resumed on another connection")))).await;
                break Flow::Continue;
            }
            () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                let _ = t.write(&std::mem::take(&mut state.out)).await;
                t.close(Some(("system-shutdown", Some("the server is stopping; reconnect shortly")))).await;
                break Flow::Closed;
            }
            event = stream.next() => match event {
                Some(event) => {
                    state.on_event(&line, event).await;
                    Ok(())
                }
                None => match reattach(&line, &state, &stream).await {
                    Some(fresh) => {
                        stream = fresh;
                        Ok(())
                    }
                    None => {
                        let _ = t.write(&std::mem::take(&mut state.out)).await;
                        t.close(Some(("conflict", Some("this session was ended on the server")))).await;
                        break Flow::Closed;
                    }
                },
            },
        };
        if let Err((condition, text)) = step {
            let _ = t.write(&std::mem::take(&mut state.out)).await;
            t.close(Some((condition, Some(&text)))).await;
            break Flow::Closed;
        }
        if state.too_far_behind(&line) {
            // Bounded memory: the connection goes, the session waits to be resumed with
            // what it kept; what comes meanwhile waits in the hub, then in the store.
            t.close(Some((
                "policy-violation",
                Some("too many stanzas went unacknowledged; resume the stream"),
            )))
            .await;
            break Flow::Continue;
        }
    };
    if let Some(id) = registered {
        let mut takeovers = line.takeovers.lock().unwrap_or_else(|e| e.into_inner());
        if takeovers
            .get(&id)
            .is_some_and(|(_, t)| Arc::ptr_eq(t, &takeover))
        {
            takeovers.remove(&id);
        }
    }
    match flow {
        Flow::Continue
            if state.sm.as_ref().is_some_and(|sm| sm.resume_id.is_some())
                && !*line.stopping.borrow() =>
        {
            park(&line, state, stream);
        }
        _ => end(&line, state, stream).await,
    }
}

/// Ends a login that has no session (or no longer needs one).
async fn end_login(line: &Line, principal: &Principal) {
    if let Err(e) = line.hub.logout(principal).await {
        tracing::debug!(error = %e, "could not end an XMPP login");
    }
}

/// Ends a session that waited to be resumed.
pub(crate) async fn end_detached(line: &Line, d: Detached) {
    end(line, d.state, d.stream).await;
}

/// Ends a session for good: the person's presence is updated and what was not
/// acknowledged stays in the message cache.
async fn end(line: &Line, mut state: Box<State>, stream: EventStream) {
    drop(stream);
    state.undirect(line);
    release_resource(line, &state.principal.address, &state.resource);
    line.hub.close_session(&state.slot);
    end_login(line, &state.principal).await;
}

fn park(line: &Arc<Line>, state: Box<State>, stream: EventStream) {
    let Some(id) = state.sm.as_ref().and_then(|sm| sm.resume_id.clone()) else {
        return;
    };
    let since = Instant::now();
    line.detached
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            id.clone(),
            Detached {
                state,
                stream,
                since,
            },
        );
    line.parked.notify_waiters();
    tracing::debug!("XMPP session detached; waiting for resumption");
    let line = line.clone();
    tokio::spawn(async move {
        tokio::time::sleep(line.config.resume_timeout).await;
        let expired = {
            let mut detached = line.detached.lock().unwrap_or_else(|e| e.into_inner());
            match detached.get(&id) {
                Some(d) if d.since == since => detached.remove(&id),
                _ => None,
            }
        };
        if let Some(d) = expired {
            tracing::debug!("XMPP session not resumed in time; ended");
            end(&line, d.state, d.stream).await;
        }
    });
}

/// The hub stream ended: the session was ended on the server (then `None`), or this client
/// fell behind and its queue was cut, in which case it continues from the store.
async fn reattach(line: &Line, state: &State, stream: &EventStream) -> Option<EventStream> {
    if state.slot.is_ended() {
        return None;
    }
    line.hub
        .resume_session(&state.principal, &state.slot.id, stream.position())
        .await
        .ok()
}

fn sm_failed(condition: &str, h: Option<u32>) -> Element {
    let mut el = Element::new("failed", NS_SM).with_child(Element::new(condition, NS_STANZAS));
    if let Some(h) = h {
        el.set_attr("h", h.to_string());
    }
    el
}

/// How long a resumption waits for the connection it takes over to let go.
const TAKEOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

async fn resume(
    line: &Line,
    principal: &Principal,
    el: &Element,
) -> Result<(Box<State>, EventStream), Element> {
    let previd = el.attr("previd").unwrap_or_default();
    let h: u32 = el
        .attr("h")
        .and_then(|h| h.parse().ok())
        .ok_or_else(|| sm_failed("bad-request", None))?;
    // The old connection may not have noticed yet that its client is gone (a phone that
    // switched networks): ask it to let go, and wait until it has detached the session.
    let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
    loop {
        let parked = line.parked.notified();
        tokio::pin!(parked);
        parked.as_mut().enable();
        if line
            .detached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(previd)
        {
            break;
        }
        let live = line
            .takeovers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(previd)
            .filter(|(user, _)| *user == principal.user)
            .map(|(_, live)| live.clone());
        let Some(live) = live else { break };
        live.notify_one();
        if tokio::time::timeout_at(deadline, parked).await.is_err() {
            break;
        }
    }
    let detached = {
        let mut map = line.detached.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(previd) {
            Some(d) if d.state.principal.user == principal.user => map.remove(previd),
            _ => None,
        }
    };
    let Some(Detached {
        mut state, stream, ..
    }) = detached
    else {
        return Err(sm_failed("item-not-found", None));
    };
    state.on_ack(line, h);
    let sm = state
        .sm
        .as_mut()
        .expect("a detached session has stream management");
    let resumed = Element::new("resumed", NS_SM)
        .with_attr("previd", previd)
        .with_attr("h", sm.inbound.to_string());
    state.out.push(resumed.to_xml());
    // Resend what the client did not acknowledge; it is counted again from `h`.
    sm.outbound = h;
    sm.requested = false;
    let unacked = std::mem::take(&mut sm.unacked);
    for (_, pos, xml) in unacked {
        state.push_counted(xml, pos);
    }
    tracing::debug!(user = %principal.address, "XMPP session resumed");
    Ok((state, stream))
}

fn release_resource(line: &Line, address: &Address, resource: &str) {
    let mut map = line.resources.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(list) = map.get_mut(address.as_str()) {
        list.retain(|r| r != resource);
        if list.is_empty() {
            map.remove(address.as_str());
        }
    }
}

/// Binds a resource (RFC 6120 §7) and opens the hub session behind it.
async fn bind(
    line: &Line,
    principal: &Principal,
    iq: &Element,
) -> Result<(Box<State>, EventStream), Element> {
    let wanted = iq
        .get_child("bind", NS_BIND)
        .and_then(|b| b.get_child("resource", NS_BIND))
        .map(|r| r.text().trim().to_string())
        .filter(|r| !r.is_empty() && r.len() <= 256 && !r.chars().any(char::is_control));
    let resource = {
        let mut map = line.resources.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(principal.address.to_string()).or_default();
        let resource = match wanted {
            Some(r) if !list.contains(&r) => r,
            Some(r) => format!("{r}.{}", short_random()),
            None => format!("switchboard.{}", short_random()),
        };
        list.push(resource.clone());
        resource
    };
    let stream = match line
        .hub
        .open_session_with(principal, Presence::offline())
        .await
    {
        Ok(stream) => stream,
        Err(e) => {
            release_resource(line, &principal.address, &resource);
            let condition = match e {
                HubError::RateLimited(_) => Condition::ResourceConstraint,
                _ => Condition::InternalServerError,
            };
            return Err(error_reply(iq, condition, Some(&e.to_string())));
        }
    };
    let roster = match line.hub.contacts(principal).await {
        Ok(list) => list
            .into_iter()
            .map(|c| {
                (
                    c.contact.peer,
                    Directions {
                        to: c.contact.to,
                        from: c.contact.from,
                    },
                )
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read a roster at bind");
            HashMap::new()
        }
    };
    let full_jid = format!("{}/{}", principal.address, resource);
    let mut state = Box::new(State {
        principal: principal.clone(),
        slot: stream.session().clone(),
        resource,
        full_jid: full_jid.clone(),
        available: false,
        held: HashMap::new(),
        interested: false,
        roster,
        carbons: false,
        peers: HashMap::new(),
        rooms: HashMap::new(),
        sm: None,
        awaiting: VecDeque::new(),
        seen: HashMap::new(),
        seen_order: VecDeque::new(),
        sent_ids: HashSet::new(),
        pushes: 0,
        written: None,
        out: Vec::new(),
        inactive: false,
        directed: HashSet::new(),
    });
    let reply = iq_result(iq).with_child(
        Element::new("bind", NS_BIND).with_child(Element::new("jid", NS_BIND).with_text(full_jid)),
    );
    state.out.push(reply.to_xml_in(NS_CLIENT));
    Ok((state, stream))
}

fn short_random() -> String {
    let bytes = switchboard_core::credentials::random_bytes::<6>();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type Step = Result<(), (&'static str, String)>;

fn policy(text: impl Into<String>) -> (&'static str, String) {
    ("policy-violation", text.into())
}

/// A hub refusal as a stanza error. Refusals that could tell who exists or who blocks read
/// like an unknown user (DECISIONS: strangers).
fn hub_condition(e: &HubError) -> (Condition, Option<String>) {
    match e {
        HubError::RecipientUnavailable | HubError::NotFound(_) | HubError::Forbidden(_) => {
            (Condition::ServiceUnavailable, None)
        }
        HubError::TooLarge(t) => (Condition::PolicyViolation, Some(t.clone())),
        HubError::RateLimited(t) => (Condition::ResourceConstraint, Some(t.clone())),
        HubError::InvalidInput(t) => (Condition::BadRequest, Some(t.clone())),
        HubError::BadAddress(t) => (Condition::BadRequest, Some(t.to_string())),
        other => (Condition::InternalServerError, Some(other.to_string())),
    }
}

impl State {
    fn bare(&self) -> &Address {
        &self.principal.address
    }

    /// Queues a stanza for the client; with stream management it is counted and kept until
    /// acknowledged.
    fn send(&mut self, mut el: Element, pos: Option<Pos>) {
        if el.attr("to").is_none() {
            el.set_attr("to", self.full_jid.as_str());
        }
        self.push_counted(el.to_xml_in(NS_CLIENT), pos);
    }

    fn push_counted(&mut self, xml: String, pos: Option<Pos>) {
        match &mut self.sm {
            Some(sm) => {
                sm.outbound = sm.outbound.wrapping_add(1);
                self.out.push(xml.clone());
                sm.unacked.push_back((sm.outbound, pos, xml));
            }
            None => {
                self.out.push(xml);
                if let Some(pos) = pos {
                    self.written = Some(self.written.map_or(pos, |w| w.max(pos)));
                }
            }
        }
    }

    /// Non-stanza output (stream management elements): not counted.
    fn send_raw(&mut self, el: Element) {
        self.out.push(el.to_xml());
    }

    /// Asks the client for an acknowledgement when stanzas wait for one and no request is
    /// outstanding.
    ///
    /// Messages are asked for at once (their delivery state waits on it); other stanzas in
    /// batches of `ack_request_every`, so presence traffic does not double the stanza count.
    fn request_ack(&mut self, line: &Line) {
        if let Some(sm) = &mut self.sm
            && !sm.requested
            && (sm.unacked.len() >= line.config.ack_request_every
                || sm.unacked.iter().any(|(_, pos, _)| pos.is_some()))
        {
            sm.requested = true;
            self.out.push(Element::new("r", NS_SM).to_xml());
        }
    }

    /// Whether the client let more stanzas go unacknowledged than are kept for resending.
    fn too_far_behind(&self, line: &Line) -> bool {
        self.sm
            .as_ref()
            .is_some_and(|sm| sm.unacked.len() > line.config.max_unacked)
    }

    fn on_ack(&mut self, line: &Line, h: u32) {
        let Some(sm) = &mut self.sm else { return };
        let mut acked: Option<Pos> = None;
        while let Some(&(n, pos, _)) = sm.unacked.front() {
            // Serial number arithmetic: counters wrap at 2^32.
            if (h.wrapping_sub(n) as i32) < 0 {
                break;
            }
            sm.unacked.pop_front();
            if let Some(pos) = pos {
                acked = Some(acked.map_or(pos, |a| a.max(pos)));
            }
        }
        sm.requested = false;
        if let Some(pos) = acked {
            line.hub.ack(&self.slot, pos);
        }
    }

    /// One top-level element from the client.
    async fn handle(&mut self, line: &Line, el: Element) -> Step {
        if el.ns() == NS_SM {
            return self.handle_sm(line, &el);
        }
        if el.ns() == NS_CSI {
            // XEP-0352: while the client says it is inactive (a phone in a pocket), presence
            // is held (the newest per person) and typing notifications are dropped; messages
            // still go at once. Becoming active flushes what was held.
            self.inactive = el.name() == "inactive";
            if !self.inactive && self.available {
                self.flush_held();
            }
            return Ok(());
        }
        if el.ns() != NS_CLIENT {
            return Err((
                "unsupported-stanza-type",
                format!("<{}/> in {} is not a stanza", el.name(), el.ns()),
            ));
        }
        if let Some(sm) = &mut self.sm {
            sm.inbound = sm.inbound.wrapping_add(1);
        }
        line.hub.touch(&self.slot);
        match el.name() {
            "message" => self.on_message(line, el).await,
            "presence" => self.on_presence(line, el).await,
            "iq" => self.on_iq(line, el).await,
            other => Err((
                "unsupported-stanza-type",
                format!("<{other}/> is not a stanza"),
            )),
        }
    }

    fn handle_sm(&mut self, line: &Line, el: &Element) -> Step {
        match el.name() {
            "enable" => {
                if self.sm.is_some() {
                    self.send_raw(sm_failed("unexpected-request", None));
                    return Ok(());
                }
                let resume = matches!(el.attr("resume"), Some("true" | "1"));
                let resume_id = resume.then(switchboard_core::credentials::new_token);
                let mut enabled = Element::new("enabled", NS_SM);
                if let Some(id) = &resume_id {
                    enabled.set_attr("id", id.as_str());
                    enabled.set_attr("resume", "true");
                    enabled.set_attr("max", line.config.resume_timeout.as_secs().to_string());
                }
                self.sm = Some(Sm {
                    resume_id,
                    inbound: 0,
                    outbound: 0,
                    unacked: VecDeque::new(),
                    requested: false,
                });
                self.send_raw(enabled);
                Ok(())
            }
            "r" => {
                let h = self.sm.as_ref().map(|sm| sm.inbound);
                match h {
                    Some(h) => {
                        self.send_raw(Element::new("a", NS_SM).with_attr("h", h.to_string()))
                    }
                    None => self.send_raw(sm_failed("unexpected-request", None)),
                }
                Ok(())
            }
            "a" => {
                let h = el
                    .attr("h")
                    .and_then(|h| h.parse::<u32>().ok())
                    .ok_or_else(|| {
                        (
                            "undefined-condition",
                            "<a/> needs a numeric 'h'".to_string(),
                        )
                    })?;
                if let Some(sm) = &self.sm {
                    let highest = sm.outbound;
                    if (highest.wrapping_sub(h) as i32) < 0 {
                        return Err((
                            "undefined-condition",
                            format!("you acknowledged {h} stanzas but only {highest} were sent"),
                        ));
                    }
                }
                self.on_ack(line, h);
                Ok(())
            }
            "resume" => {
                self.send_raw(sm_failed("unexpected-request", None));
                Ok(())
            }
            other => Err(policy(format!(
                "<{other}/> is not a stream management element"
            ))),
        }
    }

    // ---- messages ----

    async fn on_message(&mut self, line: &Line, el: Element) -> Step {
        let kind = el.attr("type").unwrap_or("normal");
        if kind == "error" {
            return Ok(());
        }
        let target = jid::parse_target(&line.hub, el.attr("to"));
        match target {
            Target::Bare(ref peer) if peer != self.bare() => {
                let peer = peer.clone();
                self.message_to_person(line, &el, &peer, None).await;
                Ok(())
            }
            Target::Full(ref peer, ref resource) if peer != self.bare() => {
                let (peer, resource) = (peer.clone(), resource.clone());
                self.message_to_person(line, &el, &peer, Some(&resource))
                    .await;
                Ok(())
            }
            Target::Room(id, None) if kind == "groupchat" => {
                self.message_to_room(line, &el, id).await;
                Ok(())
            }
            Target::Room(..) => {
                self.send(
                    error_reply(
                        &el,
                        Condition::NotAcceptable,
                        Some("private messages in rooms are not supported"),
                    ),
                    None,
                );
                Ok(())
            }
            // To another of this person's own resources: relayed live, like an IQ.
            Target::Full(ref me, ref resource) if resource != &self.resource => {
                let (me, resource) = (me.clone(), resource.clone());
                self.route_to_resource(line, el, &me, &resource);
                Ok(())
            }
            // To oneself (no conversation with oneself exists) or to the server: said so,
            // rather than dropped without a word.
            Target::Bare(_) | Target::Full(..) | Target::Server => {
                if el.get_child("body", NS_CLIENT).is_some() {
                    self.send(
                        error_reply(
                            &el,
                            Condition::ServiceUnavailable,
                            Some("messages to yourself or to the server are not kept"),
                        ),
                        None,
                    );
                }
                Ok(())
            }
            Target::Rooms | Target::Elsewhere(_) => {
                self.send(error_reply(&el, Condition::ServiceUnavailable, None), None);
                Ok(())
            }
        }
    }

    fn client_id(el: &Element) -> String {
        el.get_child("origin-id", NS_SID)
            .and_then(|o| o.attr("id"))
            .or_else(|| el.attr("id"))
            .filter(|id| !id.is_empty() && id.len() <= 128)
            .map(str::to_string)
            .unwrap_or_else(|| format!("xmpp-{}", switchboard_core::credentials::new_public_id()))
    }

    async fn open_direct(
        &mut self,
        line: &Line,
        peer: &Address,
    ) -> Result<ConversationId, HubError> {
        let id = ConversationId::direct(self.bare(), peer);
        if !self.peers.contains_key(&id) {
            line.hub.open_direct(&self.principal, peer).await?;
            self.peers.insert(id, peer.clone());
        }
        Ok(id)
    }

    async fn message_to_person(
        &mut self,
        line: &Line,
        el: &Element,
        peer: &Address,
        resource: Option<&str>,
    ) {
        let body = el.get_child("body", NS_CLIENT).map(|b| b.text());
        if let Some(marker) = el
            .get_child("displayed", NS_MARKERS)
            .and_then(|m| m.attr("id"))
            && let Some(&(conversation, seq)) = self.seen.get(marker)
        {
            let _ = line.hub.mark_read(&self.principal, conversation, seq).await;
        }
        let Some(body) = body.filter(|b| !b.is_empty()) else {
            // Only chat states and markers; no stored message.
            if let Some(state) = chat_state(el) {
                let id = ConversationId::direct(self.bare(), peer);
                let _ = line.hub.typing(&self.principal, id, state).await;
            }
            return;
        };
        let client_id = Self::client_id(el);
        let result = match self.open_direct(line, peer).await {
            Ok(id) => {
                line.hub
                    .send_addressed(
                        &self.principal,
                        Some(&self.slot),
                        id,
                        &client_id,
                        &body,
                        switchboard_core::hub::Endpoints {
                            from: Some(&self.resource),
                            to: resource,
                            private: el.get_child("private", NS_CARBONS).is_some(),
                        },
                    )
                    .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(ack) => {
                self.remember_sent(&client_id);
                let receipt = el.get_child("request", NS_RECEIPTS).is_some();
                let markable = el.get_child("markable", NS_MARKERS).is_some();
                if let (Some(seq), true) = (ack.seq, receipt || markable) {
                    if self.awaiting.len() >= MAX_AWAITING {
                        self.awaiting.pop_front();
                    }
                    self.awaiting.push_back(AwaitingReceipt {
                        conversation: ack.conversation,
                        seq,
                        id: el.attr("id").unwrap_or(&client_id).to_string(),
                        peer: peer.clone(),
                        markable,
                        receipt,
                    });
                }
            }
            Err(e) => {
                let (condition, text) = hub_condition(&e);
                self.send(error_reply(el, condition, text.as_deref()), None);
            }
        }
    }

    fn remember_sent(&mut self, client_id: &str) {
        if self.sent_ids.len() >= MAX_SEEN {
            self.sent_ids.clear();
        }
        self.sent_ids.insert(client_id.to_string());
    }

    async fn message_to_room(&mut self, line: &Line, el: &Element, id: ConversationId) {
        let Some(nick) = self.rooms.get(&id).cloned() else {
            self.send(
                error_reply(
                    el,
                    Condition::NotAcceptable,
                    Some("join the room before writing to it"),
                ),
                None,
            );
            return;
        };
        let Some(body) = el
            .get_child("body", NS_CLIENT)
            .map(|b| b.text())
            .filter(|b| !b.is_empty())
        else {
            return;
        };
        let client_id = Self::client_id(el);
        match line
            .hub
            .send_from(&self.principal, Some(&self.slot), id, &client_id, &body)
            .await
        {
            Ok(ack) => {
                self.remember_sent(&client_id);
                // A room reflects a message to its sender (XEP-0045 §7.4).
                let room = jid::room_jid(&line.hub, id);
                let mut reflection = Element::new("message", NS_CLIENT)
                    .with_attr("type", "groupchat")
                    .with_attr("from", format!("{room}/{nick}"))
                    .with_attr("id", el.attr("id").unwrap_or(&client_id))
                    .with_child(Element::new("body", NS_CLIENT).with_text(body));
                if let (Some(pos), Some(seq)) = (ack.pos, ack.seq) {
                    reflection.append_child(
                        Element::new("stanza-id", NS_SID)
                            .with_attr("id", format!("{}-{}", pos.0, seq.0))
                            .with_attr("by", room),
                    );
                }
                self.send(reflection, ack.pos);
            }
            Err(e) => {
                let (condition, text) = hub_condition(&e);
                self.send(error_reply(el, condition, text.as_deref()), None);
            }
        }
    }

    // ---- presence ----

    async fn on_presence(&mut self, line: &Line, el: Element) -> Step {
        let kind = el.attr("type");
        let target = jid::parse_target(&line.hub, el.attr("to"));
        match (kind, &target) {
            (None | Some("unavailable"), Target::Server) => {
                self.broadcast_presence(line, &el, kind.is_none());
                Ok(())
            }
            (None, Target::Room(id, Some(nick))) => {
                self.join_room(line, &el, *id, nick).await;
                Ok(())
            }
            (Some("unavailable"), Target::Room(id, _)) => {
                self.leave_room(line, *id);
                Ok(())
            }
            (
                Some(kind @ ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")),
                Target::Bare(peer) | Target::Full(peer, _),
            ) => {
                let peer = peer.clone();
                let result = match kind {
                    "subscribe" => line.hub.request_contact(&self.principal, &peer).await,
                    "subscribed" => line.hub.grant_presence(&self.principal, &peer).await,
                    "unsubscribe" => line.hub.stop_watching(&self.principal, &peer).await,
                    _ => line.hub.revoke_presence(&self.principal, &peer).await,
                };
                if let Err(e) = result {
                    // RFC 6121: subscription requests to nowhere are silently dropped.
                    tracing::debug!(error = %e, kind, "subscription presence not applied");
                }
                Ok(())
            }
            // Directed presence (RFC 6121 §4.6) to a contact or one of the person's own
            // resources: relayed as it is; they get unavailable when this session ends.
            (None | Some("unavailable"), Target::Bare(peer) | Target::Full(peer, _)) => {
                let resource = match &target {
                    Target::Full(_, r) => Some(r.as_str()),
                    _ => None,
                };
                let mut stanza = el.clone();
                stanza.set_attr("from", self.full_jid.as_str());
                let relayed = line
                    .hub
                    .relay_to_endpoint(
                        &self.principal,
                        &self.resource,
                        peer,
                        resource,
                        stanza.to_xml(),
                    )
                    .is_ok();
                let key = (peer.clone(), resource.map(str::to_string));
                if relayed && kind.is_none() {
                    self.directed.insert(key);
                } else {
                    self.directed.remove(&key);
                }
                Ok(())
            }
            // Probes are answered by the hub's presence snapshot.
            _ => Ok(()),
        }
    }

    /// Those who got directed presence get unavailable (RFC 6121 §4.6.3).
    fn undirect(&mut self, line: &Line) {
        for (peer, resource) in std::mem::take(&mut self.directed) {
            let unavailable = Element::new("presence", NS_CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", self.full_jid.as_str())
                .with_attr(
                    "to",
                    match &resource {
                        Some(r) => format!("{peer}/{r}"),
                        None => peer.to_string(),
                    },
                );
            let _ = line.hub.relay_to_endpoint(
                &self.principal,
                &self.resource,
                &peer,
                resource.as_deref(),
                unavailable.to_xml(),
            );
        }
    }

    fn broadcast_presence(&mut self, line: &Line, el: &Element, available: bool) {
        if !available {
            self.undirect(line);
        }
        let presence = if available {
            let show = el
                .get_child("show", NS_CLIENT)
                .map(|s| s.text())
                .and_then(|s| match s.trim() {
                    "away" => Some(Availability::Away),
                    "dnd" => Some(Availability::Dnd),
                    "xa" => Some(Availability::Xa),
                    "chat" | "" => Some(Availability::Available),
                    _ => None,
                })
                .unwrap_or(Availability::Available);
            let status = el
                .get_child("status", NS_CLIENT)
                .map(|s| s.text())
                .filter(|s| !s.is_empty());
            Presence { show, status }
        } else {
            Presence::offline()
        };
        if let Err(e) = line.hub.set_presence(&self.slot, presence) {
            let (condition, text) = hub_condition(&e);
            self.send(error_reply(el, condition, text.as_deref()), None);
            return;
        }
        // RFC 6121 §4.2.2: the sender gets its own presence back.
        let mut own = Element::new("presence", NS_CLIENT).with_attr("from", self.full_jid.as_str());
        if !available {
            own.set_attr("type", "unavailable");
        }
        for child in el.children() {
            if matches!(child.name(), "show" | "status" | "priority") {
                own.append_child(child.clone());
            }
        }
        self.send(own, None);
        let first = available && !self.available;
        self.available = available;
        if first {
            if !self.inactive {
                self.flush_held();
            }
            // Requests that came while the person was away (RFC 6121 §3.1.3).
            let asking: Vec<Address> = self
                .roster
                .iter()
                .filter(|(_, d)| d.from == SubState::Pending)
                .map(|(a, _)| a.clone())
                .collect();
            for peer in asking {
                self.send(
                    Element::new("presence", NS_CLIENT)
                        .with_attr("from", peer.as_str())
                        .with_attr("type", "subscribe"),
                    None,
                );
            }
        }
    }

    /// Sends the presence held while the client was not yet available or inactive.
    fn flush_held(&mut self) {
        let held: Vec<_> = self.held.drain().map(|(_, p)| p).collect();
        for update in held {
            self.presence_stanza(&update);
        }
    }

    fn presence_stanza(&mut self, update: &PresenceUpdate) {
        let mut el = Element::new("presence", NS_CLIENT).with_attr("from", update.from.as_str());
        match update.presence.show {
            Availability::Offline => el.set_attr("type", "unavailable"),
            Availability::Available => {}
            show => el.append_child(Element::new("show", NS_CLIENT).with_text(show.as_str())),
        }
        if let Some(status) = &update.presence.status {
            el.append_child(Element::new("status", NS_CLIENT).with_text(status.as_str()));
        }
        self.send(el, None);
    }

    // ---- rooms (XEP-0045 basics) ----

    async fn join_room(&mut self, line: &Line, el: &Element, id: ConversationId, wanted: &str) {
        let room = jid::room_jid(&line.hub, id);
        let view = match line.hub.conversation(&self.principal, id).await {
            Ok(v) if v.conversation.kind == ConversationKind::Group => v,
            _ => {
                let mut error = error_reply(el, Condition::ItemNotFound, None);
                error.set_attr("from", format!("{room}/{wanted}"));
                self.send(error, None);
                return;
            }
        };
        // Nicks are the members' user names, so that every occupant is unambiguous.
        let nick = self.bare().local().to_string();
        let others: Vec<Address> = view
            .members
            .iter()
            .map(|m| m.address.clone())
            .filter(|a| a != self.bare())
            .collect();
        for member in others {
            let occupant = Element::new("presence", NS_CLIENT)
                .with_attr("from", format!("{room}/{}", member.local()))
                .with_child(
                    Element::new("x", NS_MUC_USER).with_child(
                        Element::new("item", NS_MUC_USER)
                            .with_attr("affiliation", "member")
                            .with_attr("role", "participant")
                            .with_attr("jid", member.as_str()),
                    ),
                );
            self.send(occupant, None);
        }
        let mut x = Element::new("x", NS_MUC_USER).with_child(
            Element::new("item", NS_MUC_USER)
                .with_attr("affiliation", "member")
                .with_attr("role", "participant")
                .with_attr("jid", self.full_jid.as_str()),
        );
        for code in ["100", "110"] {
            x.append_child(Element::new("status", NS_MUC_USER).with_attr("code", code));
        }
        if nick != wanted {
            x.append_child(Element::new("status", NS_MUC_USER).with_attr("code", "210"));
        }
        self.send(
            Element::new("presence", NS_CLIENT)
                .with_attr("from", format!("{room}/{nick}"))
                .with_child(x),
            None,
        );
        let wants_history = el
            .get_child("x", NS_MUC)
            .and_then(|x| x.get_child("history", NS_MUC))
            .and_then(|h| h.attr("maxstanzas"))
            .and_then(|m| m.parse::<usize>().ok())
            .unwrap_or(HISTORY_ON_JOIN)
            .min(HISTORY_ON_JOIN);
        if wants_history > 0
            && let Ok(history) = line
                .hub
                .history(&self.principal, id, None, wants_history)
                .await
        {
            for m in history {
                let mut msg = self.room_message(&room, &m);
                msg.append_child(
                    Element::new("delay", NS_DELAY)
                        .with_attr("stamp", timestamp(m.sent_at))
                        .with_attr("from", room.as_str()),
                );
                self.send(msg, None);
            }
        }
        let subject = view.conversation.title.clone().unwrap_or_default();
        self.send(
            Element::new("message", NS_CLIENT)
                .with_attr("type", "groupchat")
                .with_attr("from", room.as_str())
                .with_attr("id", short_random())
                .with_child(Element::new("subject", NS_CLIENT).with_text(subject)),
            None,
        );
        self.rooms.insert(id, nick);
    }

    fn leave_room(&mut self, line: &Line, id: ConversationId) {
        if let Some(nick) = self.rooms.remove(&id) {
            let room = jid::room_jid(&line.hub, id);
            self.send(
                Element::new("presence", NS_CLIENT)
                    .with_attr("type", "unavailable")
                    .with_attr("from", format!("{room}/{nick}"))
                    .with_child(
                        Element::new("x", NS_MUC_USER)
                            .with_child(
                                Element::new("item", NS_MUC_USER)
                                    .with_attr("affiliation", "member")
                                    .with_attr("role", "none"),
                            )
                            .with_child(
                                Element::new("status", NS_MUC_USER).with_attr("code", "110"),
                            ),
                    ),
                None,
            );
        }
    }

    fn room_message(&self, room: &str, m: &StoredMessage) -> Element {
        Element::new("message", NS_CLIENT)
            .with_attr("type", "groupchat")
            .with_attr("from", format!("{room}/{}", m.sender.local()))
            .with_attr("id", m.client_id.as_str())
            .with_child(Element::new("body", NS_CLIENT).with_text(m.body.as_str()))
            .with_child(
                Element::new("stanza-id", NS_SID)
                    .with_attr("id", mam::archive_id(m))
                    .with_attr("by", room),
            )
    }

    // ---- IQs ----

    async fn on_iq(&mut self, line: &Line, el: Element) -> Step {
        let kind = el.attr("type").unwrap_or_default();
        // Addressed to one resource (another client's, or another of this person's): routed
        // there as it is (RFC 6120 §10.5.4), answers included.
        if let Target::Full(to, resource) = jid::parse_target(&line.hub, el.attr("to"))
            && !(&to == self.bare() && resource == self.resource)
        {
            self.route_to_resource(line, el, &to, &resource);
            return Ok(());
        }
        if kind == "result" || kind == "error" {
            // Answers to roster pushes and pings: nothing to do.
            return Ok(());
        }
        if kind != "get" && kind != "set" {
            self.send(
                error_reply(
                    &el,
                    Condition::BadRequest,
                    Some("an IQ must be of type get or set"),
                ),
                None,
            );
            return Ok(());
        }
        let Some(payload) = el.children().next().cloned() else {
            self.send(
                error_reply(&el, Condition::BadRequest, Some("an IQ needs one child")),
                None,
            );
            return Ok(());
        };
        let target = jid::parse_target(&line.hub, el.attr("to"));
        let own = match &target {
            Target::Server => true,
            Target::Bare(a) => a == self.bare(),
            _ => false,
        };
        let reply = match (kind, payload.name(), payload.ns()) {
            (_, "query", NS_ROSTER) if own => self.roster_iq(line, &el, &payload, kind).await,
            ("get", "ping", NS_PING) if matches!(target, Target::Server | Target::Rooms) || own => {
                Some(iq_result(&el))
            }
            (_, "pubsub", crate::pep::NS_PUBSUB | crate::pep::NS_PUBSUB_OWNER)
                if matches!(target, Target::Server | Target::Bare(_)) =>
            {
                Some(crate::pep::iq(&line.hub, &self.principal, &el, &payload, &target).await)
            }
            ("get", "query", NS_DISCO_INFO) => self.disco_info(line, &el, &payload, &target).await,
            ("get", "query", NS_DISCO_ITEMS) => self.disco_items(line, &el, &target).await,
            ("set", "enable" | "disable", NS_CARBONS) if own => {
                self.carbons = payload.name() == "enable";
                Some(iq_result(&el))
            }
            ("get", "query", NS_MAM) => Some(iq_result(&el).with_child(mam::form())),
            ("set", "query", NS_MAM) => {
                match mam::query(
                    &line.hub,
                    &self.principal,
                    &self.full_jid,
                    &el,
                    &payload,
                    &target,
                )
                .await
                {
                    Ok(stanzas) => {
                        for s in stanzas {
                            self.send(s, None);
                        }
                        None
                    }
                    Err((condition, text)) => Some(error_reply(&el, condition, Some(&text))),
                }
            }
            (_, "blocklist" | "block" | "unblock", NS_BLOCKING) if own => {
                Some(self.blocking_iq(line, &el, &payload).await)
            }
            ("get", "query", NS_VERSION) if matches!(target, Target::Server) => Some(
                iq_result(&el).with_child(
                    Element::new("query", NS_VERSION)
                        .with_child(Element::new("name", NS_VERSION).with_text("Switchboard"))
                        .with_child(
                            Element::new("version", NS_VERSION)
                                .with_text(env!("CARGO_PKG_VERSION")),
                        ),
                ),
            ),
            ("set", "session", NS_SESSION) => Some(iq_result(&el)),
            ("get", "vCard", "vcard-temp") => Some(self.vcard_get(line, &el, &target).await),
            ("set", "vCard", "vcard-temp") if own => {
                Some(self.vcard_set(line, &el, &payload).await)
            }
            _ => Some(error_reply(&el, Condition::ServiceUnavailable, None)),
        };
        if let Some(reply) = reply {
            self.send(reply, None);
        }
        Ok(())
    }

    /// Routes a stanza addressed to one resource (an IQ, or a message to one's own other
    /// resource) through the hub; an unreachable one is answered with an error.
    fn route_to_resource(&mut self, line: &Line, mut el: Element, to: &Address, resource: &str) {
        let answer = matches!(el.attr("type"), Some("result" | "error"));
        el.set_attr("from", self.full_jid.as_str());
        let routed = line.is_bound(to, resource)
            && line
                .hub
                .relay_to_endpoint(
                    &self.principal,
                    &self.resource,
                    to,
                    Some(resource),
                    el.to_xml(),
                )
                .is_ok();
        if !routed && !answer {
            let mut error = error_reply(&el, Condition::ServiceUnavailable, None);
            error.set_attr("from", format!("{to}/{resource}"));
            self.send(error, None);
        }
    }

    async fn roster_iq(
        &mut self,
        line: &Line,
        iq: &Element,
        query: &Element,
        kind: &str,
    ) -> Option<Element> {
        if kind == "get" {
            self.interested = true;
            let contacts = match line.hub.contacts(&self.principal).await {
                Ok(c) => c,
                Err(e) => {
                    let (condition, text) = hub_condition(&e);
                    return Some(error_reply(iq, condition, text.as_deref()));
                }
            };
            let mut result = Element::new("query", NS_ROSTER);
            self.roster.clear();
            for c in contacts {
                let d = Directions {
                    to: c.contact.to,
                    from: c.contact.from,
                };
                result.append_child(roster::item(
                    &c.contact.peer,
                    c.contact.name.as_deref(),
                    Some(d),
                ));
                self.roster.insert(c.contact.peer, d);
            }
            return Some(iq_result(iq).with_child(result));
        }
        let items: Vec<&Element> = query.children().filter(|c| c.name() == "item").collect();
        let [item] = items.as_slice() else {
            return Some(error_reply(
                iq,
                Condition::BadRequest,
                Some("a roster set has exactly one item"),
            ));
        };
        let peer = match jid::parse_target(&line.hub, item.attr("jid")) {
            Target::Bare(a) if &a != self.bare() => a,
            _ => {
                return Some(error_reply(
                    iq,
                    Condition::ItemNotFound,
                    Some("only people on this server can be in a roster"),
                ));
            }
        };
        let result = if item.attr("subscription") == Some("remove") {
            line.hub.remove_contact(&self.principal, &peer).await
        } else {
            let name = item
                .attr("name")
                .filter(|n| !n.is_empty())
                .map(str::to_string);
            line.hub.save_contact(&self.principal, &peer, name).await
        };
        Some(match result {
            Ok(()) => iq_result(iq),
            Err(e) => {
                let (condition, text) = hub_condition(&e);
                error_reply(iq, condition, text.as_deref())
            }
        })
    }

    async fn blocking_iq(&mut self, line: &Line, iq: &Element, payload: &Element) -> Element {
        let hub = &line.hub;
        if payload.name() == "blocklist" {
            return match hub.blocked(&self.principal).await {
                Ok(list) => {
                    let mut el = Element::new("blocklist", NS_BLOCKING);
                    for a in list {
                        el.append_child(
                            Element::new("item", NS_BLOCKING).with_attr("jid", a.as_str()),
                        );
                    }
                    iq_result(iq).with_child(el)
                }
                Err(e) => error_reply(iq, hub_condition(&e).0, None),
            };
        }
        let mut addresses = Vec::new();
        for item in payload.children().filter(|c| c.name() == "item") {
            match item.attr("jid").map(|j| {
                hub.parse_address(jid::split(j).1).and_then(|_| {
                    let (local, domain, _) = jid::split(j);
                    Address::parse_full(&format!("{}@{domain}", local.unwrap_or_default()))
                })
            }) {
                Some(Ok(a)) => addresses.push(a),
                _ => {
                    return error_reply(
                        iq,
                        Condition::BadRequest,
                        Some("each item needs a valid 'jid'"),
                    );
                }
            }
        }
        let block = payload.name() == "block";
        if block && addresses.is_empty() {
            return error_reply(
                iq,
                Condition::BadRequest,
                Some("name at least one address to block"),
            );
        }
        if !block && addresses.is_empty() {
            addresses = hub.blocked(&self.principal).await.unwrap_or_default();
        }
        for a in addresses {
            let result = if block {
                hub.block(&self.principal, &a).await
            } else {
                hub.unblock(&self.principal, &a).await
            };
            if let Err(e) = result {
                return error_reply(iq, hub_condition(&e).0, None);
            }
        }
        iq_result(iq)
    }

    async fn vcard_get(&mut self, line: &Line, iq: &Element, target: &Target) -> Element {
        let whom = match target {
            Target::Server => Some(self.bare().clone()),
            Target::Bare(a) if a == self.bare() || self.roster.contains_key(a) => Some(a.clone()),
            _ => None,
        };
        let Some(whom) = whom else {
            return error_reply(iq, Condition::ServiceUnavailable, None);
        };
        let name = line
            .hub
            .account(&whom)
            .await
            .ok()
            .flatten()
            .and_then(|a| a.settings.display_name);
        let mut vcard = Element::new("vCard", "vcard-temp");
        if let Some(name) = name {
            vcard.append_child(Element::new("FN", "vcard-temp").with_text(name));
        }
        iq_result(iq).with_child(vcard)
    }

    async fn vcard_set(&mut self, line: &Line, iq: &Element, vcard: &Element) -> Element {
        let name = vcard
            .get_child("FN", "vcard-temp")
            .map(|f| f.text().trim().to_string())
            .filter(|n| !n.is_empty());
        let hub = &line.hub;
        let result = match hub.settings(&self.principal).await {
            Ok(mut settings) => {
                settings.display_name = name;
                hub.update_settings(&self.principal, settings)
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => iq_result(iq),
            Err(e) => {
                let (condition, text) = hub_condition(&e);
                error_reply(iq, condition, text.as_deref())
            }
        }
    }

    async fn disco_info(
        &mut self,
        line: &Line,
        iq: &Element,
        q: &Element,
        target: &Target,
    ) -> Option<Element> {
        let node = q.attr("node");
        let info = match target {
            Target::Server => disco::info(disco::SERVER_IDENTITY, disco::SERVER_FEATURES, node),
            Target::Bare(a) if a == self.bare() || self.roster.contains_key(a) => {
                let mut info = disco::info(disco::ACCOUNT_IDENTITY, disco::ACCOUNT_FEATURES, node);
                info.append_child(
                    Element::new("identity", NS_DISCO_INFO)
                        .with_attr("category", "pubsub")
                        .with_attr("type", "pep"),
                );
                for feature in crate::pep::FEATURES {
                    info.append_child(
                        Element::new("feature", NS_DISCO_INFO).with_attr("var", *feature),
                    );
                }
                info
            }
            Target::Rooms => disco::info(disco::ROOMS_IDENTITY, disco::ROOMS_FEATURES, node),
            Target::Room(id, None) => match line.hub.conversation(&self.principal, *id).await {
                Ok(v) if v.conversation.kind == ConversationKind::Group => {
                    let title = v.conversation.title.unwrap_or_default();
                    disco::info(("conference", "text", &title), disco::ROOM_FEATURES, node)
                }
                _ => return Some(error_reply(iq, Condition::ItemNotFound, None)),
            },
            _ => return Some(error_reply(iq, Condition::ServiceUnavailable, None)),
        };
        Some(iq_result(iq).with_child(info))
    }

    async fn disco_items(&mut self, line: &Line, iq: &Element, target: &Target) -> Option<Element> {
        let mut query = Element::new("query", NS_DISCO_ITEMS);
        match target {
            Target::Server => {
                query.append_child(
                    Element::new("item", NS_DISCO_ITEMS)
                        .with_attr("jid", format!("{}{}", jid::ROOMS_PREFIX, line.domain()))
                        .with_attr("name", "Group conversations"),
                );
            }
            Target::Rooms => {
                if let Ok(list) = line.hub.conversations(&self.principal).await {
                    for entry in list
                        .into_iter()
                        .filter(|e| e.conversation.kind == ConversationKind::Group)
                    {
                        let mut item = Element::new("item", NS_DISCO_ITEMS)
                            .with_attr("jid", jid::room_jid(&line.hub, entry.conversation.id));
                        if let Some(title) = entry.conversation.title {
                            item.set_attr("name", title);
                        }
                        query.append_child(item);
                    }
                }
            }
            Target::Bare(a) if a == self.bare() => {}
            Target::Room(_, None) => {}
            _ => return Some(error_reply(iq, Condition::ServiceUnavailable, None)),
        }
        Some(iq_result(iq).with_child(query))
    }

    // ---- hub events ----

    async fn on_event(&mut self, line: &Line, event: Event) {
        match event {
            Event::Message(m) => self.on_stored_message(line, &m).await,
            Event::Presence(update) => {
                if self.available && !self.inactive {
                    self.presence_stanza(&update);
                } else {
                    self.held.insert(update.from.clone(), update);
                }
            }
            Event::Account(e) => self.on_account_event(&e),
            Event::Receipt(r) => self.on_receipt(&r),
            Event::Typing(t) => {
                let direct = ConversationId::direct(self.bare(), &t.from);
                if t.conversation == direct && !self.inactive {
                    let state = match t.state {
                        Typing::Composing => "composing",
                        Typing::Paused => "paused",
                        Typing::Active => "active",
                    };
                    self.send(
                        Element::new("message", NS_CLIENT)
                            .with_attr("type", "chat")
                            .with_attr("from", t.from.as_str())
                            .with_child(Element::new(state, NS_CHATSTATES))
                            .with_child(Element::new("no-store", NS_HINTS)),
                        None,
                    );
                }
            }
            // Confidential conversations are groups the web line shows; XMPP clients do not
            // join them yet.
            Event::Relayed(_) | Event::Confidential(_) => {}
            Event::Endpoint(stanza) => {
                if stanza
                    .to_endpoint
                    .as_ref()
                    .is_none_or(|r| r == &self.resource)
                    && let Ok(el) = switchboard_xmpp_proto::parse_element(
                        stanza.payload.as_bytes(),
                        switchboard_xmpp_proto::Limits::default(),
                    )
                {
                    self.send(el, None);
                }
            }
            Event::Item(update) => {
                let notification = crate::pep::notification(&update);
                self.send(notification, None);
            }
        }
    }

    async fn on_stored_message(&mut self, line: &Line, m: &StoredMessage) {
        let me = self.bare().clone();
        let direct_peer = if m.sender != me {
            (ConversationId::direct(&me, &m.sender) == m.conversation).then(|| m.sender.clone())
        } else {
            self.peer_of(line, m.conversation).await
        };
        let stanza_id = mam::archive_id(m);
        match direct_peer {
            Some(peer) if m.sender != me => {
                self.peers.insert(m.conversation, peer.clone());
                if let Some(resource) = &m.to_endpoint
                    && resource != &self.resource
                    && line.is_bound(&me, resource)
                {
                    // Meant for another of this person's resources (XEP-0280 §6): a
                    // carbon copy if this client asked for them and the sender did not mark
                    // the message private.
                    if !self.carbons || m.private {
                        self.push_position(m.pos);
                        return;
                    }
                    let original = self
                        .chat_message(line, &peer, m)
                        .with_attr("to", format!("{me}/{resource}"));
                    let carbon = Element::new("message", NS_CLIENT)
                        .with_attr("type", "chat")
                        .with_attr("from", me.as_str())
                        .with_child(Element::new("received", NS_CARBONS).with_child(
                            Element::new("forwarded", NS_FORWARD).with_child(original),
                        ));
                    self.send(carbon, Some(m.pos));
                    return;
                }
                self.note_seen(m);
                let msg = self.chat_message(line, &peer, m);
                self.send(msg, Some(m.pos));
            }
            Some(peer) => {
                // Sent by this person from another session: a carbon (XEP-0280), unless
                // this very session sent it (a replay after resumption).
                if self.sent_ids.contains(&m.client_id) || !self.carbons || m.private {
                    // Still counts as handed out, so the position moves on.
                    self.push_position(m.pos);
                    return;
                }
                let from = match &m.from_endpoint {
                    Some(resource) => format!("{me}/{resource}"),
                    None => me.to_string(),
                };
                let original = Element::new("message", NS_CLIENT)
                    .with_attr("type", "chat")
                    .with_attr("from", from)
                    .with_attr("to", peer.as_str())
                    .with_attr("id", m.client_id.as_str())
                    .with_child(Element::new("body", NS_CLIENT).with_text(m.body.as_str()))
                    .with_child(
                        Element::new("stanza-id", NS_SID)
                            .with_attr("id", stanza_id)
                            .with_attr("by", me.as_str()),
                    );
                let carbon = Element::new("message", NS_CLIENT)
                    .with_attr("type", "chat")
                    .with_attr("from", me.as_str())
                    .with_child(
                        Element::new("sent", NS_CARBONS)
                            .with_child(Element::new("forwarded", NS_FORWARD).with_child(original)),
                    );
                self.send(carbon, Some(m.pos));
            }
            None => {
                // A group conversation: only to sessions in the room.
                let Some(_) = self.rooms.get(&m.conversation) else {
                    self.push_position(m.pos);
                    return;
                };
                if m.sender == me && self.sent_ids.contains(&m.client_id) {
                    self.push_position(m.pos);
                    return;
                }
                let room = jid::room_jid(&line.hub, m.conversation);
                let msg = self.room_message(&room, m);
                self.send(msg, Some(m.pos));
            }
        }
    }

    /// A direct message from `peer` as this client receives it.
    fn chat_message(&self, line: &Line, peer: &Address, m: &StoredMessage) -> Element {
        let mut msg = Element::new("message", NS_CLIENT)
            .with_attr("type", "chat")
            .with_attr("from", peer.as_str())
            .with_attr("id", m.client_id.as_str())
            .with_child(Element::new("body", NS_CLIENT).with_text(m.body.as_str()))
            .with_child(Element::new("markable", NS_MARKERS))
            .with_child(
                Element::new("stanza-id", NS_SID)
                    .with_attr("id", mam::archive_id(m))
                    .with_attr("by", self.bare().as_str()),
            );
        if now_millis() - m.sent_at > 2000 {
            msg.append_child(
                Element::new("delay", NS_DELAY)
                    .with_attr("stamp", timestamp(m.sent_at))
                    .with_attr("from", line.domain()),
            );
        }
        msg
    }

    /// A durable event handed out that becomes no stanza: with stream management it cannot
    /// be acknowledged on its own, so it rides on the next acknowledged stanza; without, it
    /// is "written" now.
    fn push_position(&mut self, pos: Pos) {
        if self.sm.is_none() {
            self.written = Some(self.written.map_or(pos, |w| w.max(pos)));
        }
    }

    /// The other person of a direct conversation (`None` for a group).
    async fn peer_of(&mut self, line: &Line, id: ConversationId) -> Option<Address> {
        if let Some(peer) = self.peers.get(&id) {
            return Some(peer.clone());
        }
        let view = line.hub.conversation(&self.principal, id).await.ok()?;
        if view.conversation.kind != ConversationKind::Direct {
            return None;
        }
        let peer = view
            .members
            .into_iter()
            .map(|m| m.address)
            .find(|a| a != self.bare())?;
        self.peers.insert(id, peer.clone());
        Some(peer)
    }

    fn note_seen(&mut self, m: &StoredMessage) {
        if self.seen_order.len() >= MAX_SEEN
            && let Some(old) = self.seen_order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen
            .insert(m.client_id.clone(), (m.conversation, m.seq));
        self.seen_order.push_back(m.client_id.clone());
    }

    fn on_receipt(&mut self, r: &ReceiptUpdate) {
        if &r.member == self.bare() {
            return;
        }
        let mut out = Vec::new();
        self.awaiting.retain_mut(|a| {
            if a.conversation != r.conversation || a.seq > r.upto || a.peer != r.member {
                return true;
            }
            match r.kind {
                ReceiptKind::Delivered if a.receipt => {
                    out.push(Element::new("received", NS_RECEIPTS).with_attr("id", a.id.as_str()));
                    a.receipt = false;
                    a.markable
                }
                ReceiptKind::Read if a.markable => {
                    out.push(Element::new("displayed", NS_MARKERS).with_attr("id", a.id.as_str()));
                    false
                }
                _ => true,
            }
        });
        for child in out {
            self.send(
                Element::new("message", NS_CLIENT)
                    .with_attr("from", r.member.as_str())
                    .with_child(child),
                None,
            );
        }
    }

    fn on_account_event(&mut self, e: &StoredAccountEvent) {
        let AccountEvent::Contact {
            peer,
            to,
            from,
            name,
            removed,
            ..
        } = &e.event
        else {
            return;
        };
        let before = self.roster.get(peer).copied().unwrap_or_default();
        let after = if *removed {
            Directions::default()
        } else {
            Directions {
                to: *to,
                from: *from,
            }
        };
        if *removed {
            self.roster.remove(peer);
        } else {
            self.roster.insert(peer.clone(), after);
        }
        if self.interested {
            self.pushes += 1;
            let id = format!("push{}", self.pushes);
            let item = roster::item(peer, name.as_deref(), (!*removed).then_some(after));
            let push = roster::push(&self.full_jid, &id, item);
            self.send(push, Some(e.pos));
        } else {
            self.push_position(e.pos);
        }
        for kind in roster::presences_for_change(before, after) {
            if kind == "subscribe" && !self.available {
                // Delivered with the initial presence instead.
                continue;
            }
            self.send(
                Element::new("presence", NS_CLIENT)
                    .with_attr("from", peer.as_str())
                    .with_attr("type", kind),
                None,
            );
        }
    }
}

fn chat_state(el: &Element) -> Option<Typing> {
    el.children()
        .filter(|c| c.ns() == NS_CHATSTATES)
        .find_map(|c| match c.name() {
            "composing" => Some(Typing::Composing),
            "paused" => Some(Typing::Paused),
            "active" => Some(Typing::Active),
            _ => None,
        })
}
