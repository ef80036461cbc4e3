//! BOSH (XEP-0124, XEP-0206) at `/http-bind` on the HTTP port: an XMPP stream carried by
//! HTTP requests, for clients that cannot keep a socket or a WebSocket open.
//!
//! Each BOSH session runs an ordinary XMPP session task whose [`Transport`] is a pair of
//! queues: requests put the stanzas they carry into the inbox; what the session writes waits
//! in the outbox for the next request to take it. A request that finds nothing waits up to
//! `wait` seconds (it is "held"); a newer request releases an older held one, so the client
//! always has a request the server can answer with.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use switchboard_xmpp_proto::{Element, NS_STREAMS, escape, parse_element};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::Line;
use crate::auth;
use crate::session::{self, Incoming, Transport};
use crate::stanza::{NS_CLIENT, StreamPrefix, features_xml, stream_error_xml};
use switchboard_core::model::Pos;

pub const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
pub const NS_XBOSH: &str = "urn:xmpp:xbosh";

/// Longest a request is held, whatever the client asks for.
const MAX_WAIT: u64 = 60;
/// A session without any request for this long is ended.
const INACTIVITY: Duration = Duration::from_secs(60);
/// Requests a client may have open at once (`hold` + 1).
const REQUESTS: u64 = 2;

/// The sessions of the BOSH endpoint, by sid.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Arc<BoshSession>>>);

pub struct BoshSession {
    sid: String,
    wait: Duration,
    inbox: mpsc::Sender<Incoming>,
    state: Mutex<BoshState>,
    output: Notify,
}

#[derive(Default)]
struct BoshState {
    /// The next request id expected.
    next_rid: u64,
    outbox: Vec<String>,
    /// Set once the stream ended: what the last response says.
    terminated: Option<String>,
    /// Counts requests, so a held request knows a newer one arrived.
    newest: u64,
    /// Recent responses by request id, for retransmissions.
    answered: VecDeque<(u64, String)>,
    last_request: Option<Instant>,
    in_flight: usize,
    /// The highest journal position among what the session has written.
    written: Option<Pos>,
    /// Per answered request: the highest position it (or an earlier answer) carried.
    carried: VecDeque<(u64, Option<Pos>)>,
    /// Confirmed by the client's later requests, not yet taken by the session.
    confirmed: Option<Pos>,
}

impl BoshSession {
    fn lock(&self) -> std::sync::MutexGuard<'_, BoshState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the XMPP session task reads and writes.
pub struct BoshTransport {
    inbox: mpsc::Receiver<Incoming>,
    shared: Arc<BoshSession>,
    secure: bool,
}

impl Transport for BoshTransport {
    async fn read(&mut self) -> Incoming {
        self.inbox.recv().await.unwrap_or(Incoming::Gone)
    }

    async fn write(&mut self, items: &[String]) -> io::Result<()> {
        let mut st = self.shared.lock();
        if st.terminated.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the BOSH session ended",
            ));
        }
        st.outbox.extend(items.iter().cloned());
        drop(st);
        self.shared.output.notify_waiters();
        Ok(())
    }

    async fn open(&mut self, features: Option<Element>) -> io::Result<()> {
        // The session creation response (or the restart response) carries the features.
        let Some(features) = features else {
            return Ok(());
        };
        self.write(&[features_xml(&features, StreamPrefix::Standalone)])
            .await
    }

    fn restart(&mut self) {}

    fn secure(&self) -> bool {
        self.secure
    }

    /// A BOSH response may never reach the client (the request's connection can fail); the
    /// client's later requests say which responses it has.
    fn confirms_on_write(&self) -> bool {
        false
    }

    fn written_upto(&mut self, pos: Pos) {
        let mut st = self.shared.lock();
        st.written = Some(st.written.map_or(pos, |w| w.max(pos)));
    }

    fn take_confirmed(&mut self) -> Option<Pos> {
        self.shared.lock().confirmed.take()
    }

    async fn close(&mut self, error: Option<(&str, Option<&str>)>) {
        let mut st = self.shared.lock();
        if let Some((condition, text)) = error {
            st.outbox
                .push(stream_error_xml(StreamPrefix::Standalone, condition, text));
            st.terminated = Some("remote-stream-error".into());
        } else {
            st.terminated.get_or_insert_with(String::new);
        }
        drop(st);
        self.shared.output.notify_waiters();
    }
}

fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
}

fn xml_response(body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    cors(headers);
    response
}

/// A terminating body with a condition (XEP-0124 §17).
fn terminate(condition: &str) -> Response {
    xml_response(format!(
        "<body xmlns='{NS_HTTPBIND}' type='terminate' condition='{}'/>",
        escape(condition, true)
    ))
}

/// CORS preflight: browsers ask before posting XML from another origin.
pub async fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    cors(response.headers_mut());
    response
}

/// Parses a request body into the `<body/>` element.
fn parse_body(line: &Line, bytes: &[u8]) -> Option<Element> {
    match parse_element(bytes, line.config.limits()) {
        Ok(mut body) if body.is("body", NS_HTTPBIND) => {
            // Stanzas without their own namespace declaration inherited the wrapper's.
            for child in body_children_mut(&mut body) {
                child.rename_ns(NS_HTTPBIND, NS_CLIENT);
            }
            Some(body)
        }
        _ => None,
    }
}

fn body_children_mut(body: &mut Element) -> Vec<&mut Element> {
    let mut out = Vec::new();
    for node in body.nodes_mut() {
        if let switchboard_xmpp_proto::Node::Element(el) = node {
            out.push(el);
        }
    }
    out
}

pub async fn request(
    State(line): State<Arc<Line>>,
    Extension(peer): Extension<SocketAddr>,
    bytes: axum::body::Bytes,
) -> Response {
    let Some(body) = parse_body(&line, &bytes) else {
        return terminate("bad-request");
    };
    let Some(rid) = body.attr("rid").and_then(|r| r.trim().parse::<u64>().ok()) else {
        return terminate("bad-request");
    };
    match body.attr("sid") {
        None => create(&line, peer, &body, rid).await,
        Some(sid) => {
            let session = line
                .bosh
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(sid)
                .cloned();
            match session {
                Some(session) => continue_session(&line, session, body, rid).await,
                None => terminate("item-not-found"),
            }
        }
    }
}

async fn create(line: &Arc<Line>, peer: SocketAddr, body: &Element, rid: u64) -> Response {
    let to = body.attr("to").map(str::to_string);
    let wait = body
        .attr("wait")
        .and_then(|w| w.parse::<u64>().ok())
        .unwrap_or(MAX_WAIT)
        .clamp(1, MAX_WAIT);
    let (tx, rx) = mpsc::channel(64);
    let sid = switchboard_core::credentials::new_token();
    let shared = Arc::new(BoshSession {
        sid: sid.clone(),
        wait: Duration::from_secs(wait),
        inbox: tx,
        state: Mutex::new(BoshState {
            next_rid: rid + 1,
            last_request: Some(Instant::now()),
            ..BoshState::default()
        }),
        output: Notify::new(),
    });
    line.bosh
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(sid.clone(), shared.clone());
    let mut t = BoshTransport {
        inbox: rx,
        shared: shared.clone(),
        secure: line.config.http_secure,
    };
    let task_line = line.clone();
    let client = peer.ip().to_string();
    let open = line.connection();
    tokio::spawn(async move {
        let _open = open;
        if let Some(principal) = auth::negotiate(&task_line, &mut t, &client).await {
            session::run(task_line.clone(), &mut t, principal).await;
        }
        end(&task_line, &t.shared);
    });
    tokio::spawn(reap(line.clone(), shared.clone()));
    // The creation request opens the stream.
    let _ = shared.inbox.send(Incoming::Open { to }).await;
    let attrs = format!(
        "xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' xmlns:stream='{NS_STREAMS}' sid='{sid}' \
         authid='{}' wait='{wait}' hold='1' requests='{REQUESTS}' inactivity='{}' polling='2' ver='1.11' \
         from='{}' xmpp:version='1.0' xmpp:restartlogic='true' maxpause='60'",
        switchboard_core::credentials::new_public_id(),
        INACTIVITY.as_secs(),
        escape(line.domain(), true)
    );
    respond(&shared, rid, attrs).await
}

/// The stream ended (or the session task finished): the session is forgotten and any held
/// request is answered.
fn end(line: &Line, shared: &Arc<BoshSession>) {
    shared.lock().terminated.get_or_insert_with(String::new);
    shared.output.notify_waiters();
    line.bosh
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&shared.sid);
}

/// Ends sessions whose client stopped making requests.
async fn reap(line: Arc<Line>, shared: Arc<BoshSession>) {
    loop {
        let deadline = {
            let st = shared.lock();
            if st.terminated.is_some() {
                return;
            }
            match (st.in_flight, st.last_request) {
                (0, Some(last)) => last + INACTIVITY,
                _ => Instant::now() + INACTIVITY,
            }
        };
        tokio::time::sleep_until(deadline).await;
        let idle = {
            let st = shared.lock();
            st.in_flight == 0 && st.last_request.is_some_and(|l| l.elapsed() >= INACTIVITY)
        };
        if idle {
            tracing::debug!("BOSH session inactive; ended");
            // Dropping the session's inbox sender ends its reads: the XMPP session treats
            // it as a dropped connection (and waits to be resumed if it can be).
            end(&line, &shared);
            let _ = shared.inbox.send(Incoming::Gone).await;
            return;
        }
    }
}

async fn continue_session(
    line: &Line,
    shared: Arc<BoshSession>,
    body: Element,
    rid: u64,
) -> Response {
    {
        let st = shared.lock();
        if rid < st.next_rid {
            // A retransmission: the same answer again, if it is still known.
            return match st.answered.iter().find(|(r, _)| *r == rid) {
                Some((_, answer)) => xml_response(answer.clone()),
                None => terminate("item-not-found"),
            };
        }
        if rid >= st.next_rid + REQUESTS {
            drop(st);
            end(line, &shared);
            let _ = shared.inbox.try_send(Incoming::Gone);
            return terminate("item-not-found");
        }
    }
    // Requests are processed in rid order; a request that overtook its predecessor waits
    // for it (briefly) rather than reordering the stream.
    let deadline = Instant::now() + shared.wait;
    loop {
        let notified = shared.output.notified();
        if shared.lock().next_rid == rid {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return terminate("item-not-found");
        }
    }
    let confirmed = {
        let mut st = shared.lock();
        st.next_rid = rid + 1;
        st.newest += 1;
        // XEP-0124 §9: the client has every response up to its `ack`, or, without one, the
        // responses to all requests but those it may still have open.
        let upto = body
            .attr("ack")
            .and_then(|a| a.parse::<u64>().ok())
            .unwrap_or(rid.saturating_sub(REQUESTS));
        let mut confirmed = None;
        while let Some(&(answered, pos)) = st.carried.front() {
            if answered > upto {
                break;
            }
            st.carried.pop_front();
            confirmed = confirmed.max(pos);
        }
        if confirmed.is_some() {
            st.confirmed = st.confirmed.max(confirmed);
        }
        confirmed.is_some()
    };
    shared.output.notify_waiters();
    if confirmed {
        let _ = shared.inbox.try_send(Incoming::Tick);
    }
    let mut incoming: Vec<Incoming> = body.children().cloned().map(Incoming::Stanza).collect();
    if body.attr_ns(NS_XBOSH, "restart") == Some("true") {
        incoming.push(Incoming::Open {
            to: body.attr("to").map(str::to_string),
        });
    }
    let terminating = body.attr("type") == Some("terminate");
    if terminating {
        incoming.push(Incoming::Close);
    }
    for item in incoming {
        if shared.inbox.send(item).await.is_err() {
            break;
        }
    }
    respond(
        &shared,
        rid,
        format!("xmlns='{NS_HTTPBIND}' xmlns:stream='{NS_STREAMS}'"),
    )
    .await
}

/// Waits for output (up to `wait`, or until a newer request arrives) and answers with it.
async fn respond(shared: &Arc<BoshSession>, rid: u64, attrs: String) -> Response {
    let me = {
        let mut st = shared.lock();
        st.in_flight += 1;
        st.last_request = Some(Instant::now());
        st.newest
    };
    let deadline = Instant::now() + shared.wait;
    // What is taken, with the highest position written so far, under one lock: everything
    // at or below that position is in this answer or an earlier one.
    let take = |st: &mut BoshState| {
        (
            std::mem::take(&mut st.outbox),
            st.terminated.clone(),
            st.written,
        )
    };
    let (items, ended, written) = loop {
        let notified = shared.output.notified();
        {
            let mut st = shared.lock();
            if !st.outbox.is_empty() || st.terminated.is_some() || st.newest != me {
                break take(&mut st);
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            break take(&mut shared.lock());
        }
    };
    let mut open = format!("<body {attrs}");
    if let Some(condition) = &ended {
        open.push_str(" type='terminate'");
        if !condition.is_empty() {
            open.push_str(&format!(" condition='{}'", escape(condition, true)));
        }
    }
    let answer = if items.is_empty() {
        format!("{open}/>")
    } else {
        format!("{open}>{}</body>", items.concat())
    };
    let mut st = shared.lock();
    st.in_flight -= 1;
    st.last_request = Some(Instant::now());
    st.carried.push_back((rid, written));
    while st.carried.len() > 64 {
        // A client that never confirms: forget the oldest, which only delays delivery
        // state, never marks anything delivered early.
        st.carried.pop_front();
    }
    st.answered.push_back((rid, answer.clone()));
    while st.answered.len() > REQUESTS as usize {
        st.answered.pop_front();
    }
    drop(st);
    xml_response(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminate_bodies_name_their_condition() {
        let response = terminate("item-not-found");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            HeaderValue::from_static("*")
        );
    }
}
