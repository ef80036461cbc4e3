//! Server-held sessions (MISSION T3): a session outlives its connection, records when its
//! client was last seen, and replays from the store exactly what its client missed.
//!
//! The mechanism that makes resumption exact: when a client attaches, its live queue is
//! registered first, then the store's last committed position `upto` is read, then everything
//! the client has not seen up to `upto` is replayed from the store. Live durable events at or
//! below `upto` are skipped (the replay has them); those above it were committed after the
//! queue was registered, so they arrive live. Nothing is missed and nothing is doubled.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::address::Address;
use crate::bus::{Delivery, Recipients};
use crate::credentials;
use crate::error::{HubError, HubResult};
use crate::model::*;

use super::{Hub, HubInner, Person, Principal};

/// Most delivered-but-unacknowledged messages a session remembers for moving delivery
/// cursors. Past this the oldest are forgotten; they are then only redelivered to new
/// sessions, never lost.
const MAX_PENDING: usize = 4096;
/// Conversations larger than this get no live delivery receipts (they would cost a fan-out
/// per acknowledgement per member); their cursors are still stored.
const MAX_RECEIPT_AUDIENCE: usize = 64;
/// Durable events fetched from the store per replay page.
const REPLAY_PAGE: usize = 500;

/// One server-held session.
pub struct SessionSlot {
    pub id: SessionId,
    pub user: UserId,
    pub address: Address,
    /// The login this session was opened with; revoking it ends the session.
    pub login: String,
    pub(crate) state: Mutex<SlotState>,
}

pub(crate) struct SlotState {
    /// The live queue of the attached client, if any.
    sink: Option<mpsc::Sender<Event>>,
    /// Counts attachments, so that an old connection detaching cannot detach a newer one.
    generation: u64,
    pub presence: Presence,
    last_seen: Millis,
    persisted_seen: Millis,
    persisted_acked: Pos,
    acked: Pos,
    /// Messages from others handed to the client and not yet acknowledged.
    pending: VecDeque<(Pos, ConversationId, Seq)>,
    /// A long-poll client's stream, kept between its requests.
    parked: Option<EventStream>,
    ended: bool,
    created_at: Millis,
}

impl SessionSlot {
    fn new(record: &SessionRecord, address: Address) -> SessionSlot {
        SessionSlot {
            id: record.id.clone(),
            user: record.user,
            address,
            login: record.login.clone(),
            state: Mutex::new(SlotState {
                sink: None,
                generation: 0,
                presence: record.presence.clone(),
                last_seen: record.last_seen,
                persisted_seen: record.last_seen,
                persisted_acked: record.acked,
                acked: record.acked,
                pending: VecDeque::new(),
                parked: None,
                ended: false,
                created_at: record.created_at,
            }),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the session was ended (signed off, expired, its login revoked, its account
    /// removed).
    pub fn is_ended(&self) -> bool {
        self.lock().ended
    }

    /// When the client last made a request.
    pub fn last_seen(&self) -> Millis {
        self.lock().last_seen
    }

    pub fn presence(&self) -> Presence {
        self.lock().presence.clone()
    }

    fn record(&self, node: &str) -> SessionRecord {
        let st = self.lock();
        SessionRecord {
            id: self.id.clone(),
            user: self.user,
            login: self.login.clone(),
            node: node.to_string(),
            created_at: st.created_at,
            last_seen: st.last_seen,
            presence: st.presence.clone(),
            acked: st.acked,
        }
    }
}

/// What a client attached to a session reads: first the replay from the store, then live
/// events. Ends (`None`) when the session ends or the client fell too far behind.
pub struct EventStream {
    hub: Arc<HubInner>,
    slot: Arc<SessionSlot>,
    generation: u64,
    replay: VecDeque<Event>,
    /// Further replay pages to fetch: (after, upto).
    replay_from: Option<(Pos, Pos)>,
    live: mpsc::Receiver<Event>,
    skip_upto: Pos,
    handed_out: Pos,
    resumed: bool,
}

impl EventStream {
    pub fn session(&self) -> &Arc<SessionSlot> {
        &self.slot
    }

    /// Whether this attachment continued an earlier session (rather than opening a new one).
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// The position a client can resume after: everything of theirs up to it has been
    /// handed out. Before the replay is drained that is the last replayed position; after it,
    /// at least the store position the replay reached.
    pub fn position(&self) -> Pos {
        let replay_done =
            self.replay_from.is_none() && !self.replay.iter().any(|e| e.pos().is_some());
        if replay_done {
            self.handed_out.max(self.skip_upto)
        } else {
            self.handed_out
        }
    }

    /// The next event, waiting for one if needed.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.next_replayed().await {
                return Some(self.hand_out(event));
            }
            let event = self.live.recv().await?;
            if self.slot.is_ended() {
                return None;
            }
            if let Some(event) = self.filter(event) {
                return Some(self.hand_out(event));
            }
        }
    }

    /// The next event if one is ready now.
    pub async fn try_next(&mut self) -> Option<Event> {
        if let Some(event) = self.next_replayed().await {
            return Some(self.hand_out(event));
        }
        loop {
            let event = self.live.try_recv().ok()?;
            if self.slot.is_ended() {
                return None;
            }
            if let Some(event) = self.filter(event) {
                return Some(self.hand_out(event));
            }
        }
    }

    async fn next_replayed(&mut self) -> Option<Event> {
        // Cancel-safe: `replay_from` is only cleared once the page has arrived, so a caller
        // that drops this future mid-read (a `select!`) loses nothing.
        if self.replay.is_empty()
            && let Some((after, upto)) = self.replay_from
        {
            match self
                .hub
                .store
                .replay(self.slot.user, after, REPLAY_PAGE)
                .await
            {
                Ok(page) => {
                    self.replay_from = None;
                    let full = page.len() == REPLAY_PAGE;
                    let mut last = after;
                    for item in page {
                        last = item.pos();
                        if last > upto {
                            break;
                        }
                        self.replay.push_back(replayed_event(item));
                    }
                    if full && last < upto {
                        self.replay_from = Some((last, upto));
                    }
                }
                Err(e) => {
                    // The client gets no partial replay it could mistake for complete: the
                    // stream ends and the client resumes again from what it has.
                    self.replay_from = None;
                    tracing::warn!(error = %e, session = %self.slot.id, "replay failed");
                    self.live.close();
                    return None;
                }
            }
        }
        self.replay.pop_front()
    }

    fn filter(&self, event: Event) -> Option<Event> {
        match event.pos() {
            Some(pos) if pos <= self.skip_upto => None,
            _ => Some(event),
        }
    }

    fn hand_out(&mut self, event: Event) -> Event {
        if let Some(pos) = event.pos() {
            self.handed_out = self.handed_out.max(pos);
        }
        if let Event::Message(m) = &event
            && m.sender != self.slot.address
        {
            let mut st = self.slot.lock();
            if st.pending.len() >= MAX_PENDING {
                st.pending.pop_front();
            }
            st.pending.push_back((m.pos, m.conversation, m.seq));
        }
        event
    }
}

impl Drop for EventStream {
    /// A stream that goes away (its connection dropped) detaches its session, unless a newer
    /// attachment replaced it meanwhile.
    fn drop(&mut self) {
        let mut st = self.slot.lock();
        if st.generation == self.generation && !st.ended {
            st.sink = None;
            st.last_seen = now_millis();
        }
    }
}

fn replayed_event(item: Replayed) -> Event {
    match item {
        Replayed::Message(m) => Event::Message(Arc::new(m)),
        Replayed::Account(e) => Event::Account(Arc::new(e)),
    }
}

impl Hub {
    /// Opens a new session for a logged-in client. It starts with the messages waiting in the
    /// message cache (past the person's delivery cursors) and their contacts' presence.
    pub async fn open_session(&self, principal: &Principal) -> HubResult<EventStream> {
        self.open_session_with(principal, Presence::available())
            .await
    }

    /// Opens a new session with a given first presence: an XMPP client is offline until it
    /// sends its initial presence.
    pub async fn open_session_with(
        &self,
        principal: &Principal,
        presence: Presence,
    ) -> HubResult<EventStream> {
        let limit = self.inner.config.max_sessions_per_user;
        if let Some(person) = self.inner.person(principal.user)
            && person
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .sessions
                .len()
                >= limit
        {
            return Err(HubError::RateLimited(format!(
                "too many sessions are open for this account (the limit is {limit}); \
                 end some or resume one instead of opening another"
            )));
        }
        let now = now_millis();
        let record = SessionRecord {
            id: SessionId(credentials::new_token()),
            user: principal.user,
            login: principal.login.clone(),
            node: self.inner.bus.node().to_string(),
            created_at: now,
            last_seen: now,
            presence,
            acked: Pos(0),
        };
        self.inner.store.put_session(record.clone()).await?;
        let slot = Arc::new(SessionSlot::new(&record, principal.address.clone()));
        self.inner
            .sessions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slot.id.clone(), slot.clone());
        self.inner.metrics.sessions.inc();
        self.attach(slot, None).await
    }

    /// Resumes a session after a dropped connection: the client says which journal position
    /// it has seen last and gets exactly what came after, once.
    pub async fn resume_session(
        &self,
        principal: &Principal,
        id: &SessionId,
        after: Pos,
    ) -> HubResult<EventStream> {
        let slot = self.find_session(principal, id).await?;
        self.attach(slot, Some(after)).await
    }

    /// The stream of a long-poll client: the one kept from its previous request when the
    /// client has everything that was handed out, otherwise a fresh replay from `after`.
    pub async fn poll_session(
        &self,
        principal: &Principal,
        id: &SessionId,
        after: Pos,
    ) -> HubResult<EventStream> {
        let slot = self.find_session(principal, id).await?;
        let parked = {
            let mut st = slot.lock();
            st.last_seen = now_millis();
            st.parked.take()
        };
        self.ack(&slot, after);
        if let Some(stream) = parked
            && after >= stream.handed_out
            && !stream.live.is_closed()
        {
            return Ok(stream);
        }
        self.attach(slot, Some(after)).await
    }

    /// Keeps a long-poll client's stream until its next request. Events keep queueing for
    /// it (bounded); a client that does not come back within the session timeout is ended.
    pub fn park(&self, stream: EventStream) {
        let slot = stream.slot.clone();
        let mut st = slot.lock();
        if st.generation == stream.generation && !st.ended {
            st.last_seen = now_millis();
            let previous = st.parked.replace(stream);
            drop(st);
            // Dropped outside the lock: a stream's drop takes the same lock.
            drop(previous);
        } else {
            drop(st);
            drop(stream);
        }
    }

    /// Ends a session now (the client signs off).
    pub fn close_session(&self, slot: &Arc<SessionSlot>) {
        self.inner.end_session(slot);
    }

    /// Records a request from the client (seed 003: E8).
    pub fn touch(&self, slot: &SessionSlot) {
        slot.lock().last_seen = now_millis();
    }

    /// The client has everything up to `pos`. Moves the person's delivery cursors for the
    /// messages this session handed out and tells the senders.
    pub fn ack(&self, slot: &Arc<SessionSlot>, pos: Pos) {
        let mut delivered: HashMap<ConversationId, Seq> = HashMap::new();
        {
            let mut st = slot.lock();
            st.last_seen = now_millis();
            st.acked = st.acked.max(pos);
            while let Some(&(p, conversation, seq)) = st.pending.front() {
                if p > pos {
                    break;
                }
                st.pending.pop_front();
                let entry = delivered.entry(conversation).or_default();
                *entry = (*entry).max(seq);
            }
        }
        if delivered.is_empty() {
            return;
        }
        for (conversation, seq) in delivered {
            self.inner
                .delivered
                .delivered(conversation, slot.user, &slot.address, seq);
        }
    }

    /// Sessions of the principal's person held on this node.
    pub fn sessions_of(&self, principal: &Principal) -> Vec<Arc<SessionSlot>> {
        self.inner
            .person(principal.user)
            .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).sessions.clone())
            .unwrap_or_default()
    }

    async fn find_session(
        &self,
        principal: &Principal,
        id: &SessionId,
    ) -> HubResult<Arc<SessionSlot>> {
        let existing = self
            .inner
            .sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        if let Some(slot) = existing {
            if slot.user != principal.user || slot.is_ended() {
                return Err(HubError::SessionGone);
            }
            return Ok(slot);
        }
        // Not in memory: held by this node before a restart (or, in a cluster, by another
        // node that is gone). The stored record lets the client resume here.
        let record = self
            .inner
            .store
            .session(id)
            .await?
            .ok_or(HubError::SessionGone)?;
        if record.user != principal.user {
            return Err(HubError::SessionGone);
        }
        let timeout = self.inner.config.session_timeout.as_millis() as i64;
        if now_millis() - record.last_seen > timeout {
            self.inner.store.delete_session(id).await?;
            return Err(HubError::SessionGone);
        }
        let slot = Arc::new(SessionSlot::new(&record, principal.address.clone()));
        let slot = {
            let mut sessions = self
                .inner
                .sessions
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let slot = sessions.entry(id.clone()).or_insert(slot).clone();
            self.inner.metrics.sessions.set(sessions.len() as i64);
            slot
        };
        let mut record = slot.record(self.inner.bus.node());
        record.last_seen = now_millis();
        self.inner.store.put_session(record).await?;
        Ok(slot)
    }

    /// Connects a client to a session: registers its live queue, then prepares the replay.
    async fn attach(&self, slot: Arc<SessionSlot>, after: Option<Pos>) -> HubResult<EventStream> {
        // The person's last session may be ending at this very moment, which forgets the
        // person; joining a forgotten person would make this session unreachable, so check
        // and load them again in that case.
        let person = loop {
            let person = self.ensure_person(slot.user, &slot.address).await?;
            {
                let mut p = person.lock().unwrap_or_else(|e| e.into_inner());
                if !p.sessions.iter().any(|s| Arc::ptr_eq(s, &slot)) {
                    p.sessions.push(slot.clone());
                }
            }
            if self
                .inner
                .person(slot.user)
                .is_some_and(|p| Arc::ptr_eq(&p, &person))
            {
                break person;
            }
        };
        let (tx, live) = mpsc::channel(self.inner.config.session_queue.max(1));
        let (generation, previous) = {
            let mut st = slot.lock();
            if st.ended {
                return Err(HubError::SessionGone);
            }
            st.generation += 1;
            st.sink = Some(tx);
            st.last_seen = now_millis();
            (st.generation, st.parked.take())
        };
        // Dropped outside the lock: a stream's drop takes the same lock.
        drop(previous);
        let upto = self.inner.store.last_pos().await?;
        let mut replay = VecDeque::new();
        let replay_from = match after {
            Some(after) => Some((after, upto)),
            None => {
                let waiting = self
                    .inner
                    .store
                    .undelivered(slot.user, self.inner.config.max_replay)
                    .await?;
                replay.extend(
                    waiting
                        .into_iter()
                        .filter(|m| m.pos <= upto)
                        .map(|m| Event::Message(Arc::new(m))),
                );
                None
            }
        };
        let snapshot = self.inner.presence_snapshot(&person);
        let mut stream = EventStream {
            hub: self.inner.clone(),
            slot: slot.clone(),
            generation,
            replay,
            replay_from,
            live,
            skip_upto: upto,
            handed_out: after.unwrap_or(Pos(0)),
            resumed: after.is_some(),
        };
        // Durable events first, so that the client's position is right when live ones follow;
        // the presence snapshot after them.
        if stream.replay_from.is_some() {
            // Fetch the first page now so a store failure is an error of the attach.
            if let Some(first) = stream.next_replayed().await {
                stream.replay.push_front(first);
            }
        }
        stream.replay.extend(snapshot);
        self.inner.refresh_presence(&person);
        Ok(stream)
    }

    /// Loads a person's routing and presence state when their first session attaches.
    async fn ensure_person(
        &self,
        user: UserId,
        address: &Address,
    ) -> HubResult<Arc<std::sync::Mutex<Person>>> {
        if let Some(p) = self.inner.person(user) {
            return Ok(p);
        }
        let _guard = self.inner.person_lock.lock().await;
        if let Some(p) = self.inner.person(user) {
            return Ok(p);
        }
        let store = &self.inner.store;
        let account = store
            .account(user)
            .await?
            .ok_or_else(|| HubError::NotFound(format!("there is no user {address}")))?;
        let contacts = store.contacts_of(user).await?;
        let blocked = store.blocks_of(user).await?;
        let person = Person {
            user,
            address: address.clone(),
            settings: account.settings,
            audience: contacts
                .iter()
                .filter(|c| c.from == SubState::Accepted)
                .map(|c| (c.peer.clone(), c.chosen))
                .collect(),
            watching: contacts
                .iter()
                .filter(|c| c.to == SubState::Accepted)
                .map(|c| c.peer.clone())
                .collect(),
            blocked: blocked.into_iter().collect(),
            sessions: Vec::new(),
            presence: Presence::offline(),
        };
        let person = Arc::new(std::sync::Mutex::new(person));
        self.inner
            .people
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user, person.clone());
        self.inner
            .by_address
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(address.clone(), user);
        Ok(person)
    }
}

impl HubInner {
    /// Hands an event to the local sessions it is for. A session whose queue is full is cut
    /// off: it resumes later from the store rather than being buffered without limit.
    pub(crate) fn deliver_local(&self, to: &Recipients, event: &Event) {
        match to {
            Recipients::Users(users) => self.push_to_users(users, None, event),
            Recipients::UsersExcept(users, except) => {
                self.push_to_users(users, Some(except), event)
            }
            Recipients::Session(id) => {
                let slot = self
                    .sessions
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(id)
                    .cloned();
                if let Some(slot) = slot {
                    self.push(&slot, event);
                }
            }
        }
    }

    fn push_to_users(&self, users: &[UserId], except: Option<&SessionId>, event: &Event) {
        for user in users {
            if let Some(person) = self.person(*user) {
                let p = person.lock().unwrap_or_else(|e| e.into_inner());
                for slot in p.sessions.iter().filter(|s| Some(&s.id) != except) {
                    self.push(slot, event);
                }
            }
        }
    }

    fn push(&self, slot: &SessionSlot, event: &Event) {
        let mut st = slot.lock();
        let Some(sink) = &st.sink else { return };
        match sink.try_send(event.clone()) {
            Ok(()) => {
                self.metrics.events_out.inc();
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.slow_consumers.inc();
                tracing::info!(session = %slot.id, "session cut off: its client is too slow");
                st.sink = None;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => st.sink = None,
        }
    }

    pub(crate) fn end_local(&self, to: &Recipients, login: Option<&str>) {
        let slots: Vec<Arc<SessionSlot>> = match to {
            Recipients::Users(users) | Recipients::UsersExcept(users, _) => users
                .iter()
                .filter_map(|u| self.person(*u))
                .flat_map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).sessions.clone())
                .filter(|s| login.is_none_or(|l| s.login == l))
                .collect(),
            Recipients::Session(id) => self
                .sessions
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(id)
                .cloned()
                .into_iter()
                .collect(),
        };
        for slot in slots {
            self.end_session(&slot);
        }
    }

    pub(crate) fn end_session(&self, slot: &Arc<SessionSlot>) {
        let parked = {
            let mut st = slot.lock();
            if st.ended {
                return;
            }
            st.ended = true;
            st.sink = None;
            st.parked.take()
        };
        drop(parked);
        {
            let mut sessions = self.sessions.write().unwrap_or_else(|e| e.into_inner());
            sessions.remove(&slot.id);
            self.metrics.sessions.set(sessions.len() as i64);
        }
        if let Some(person) = self.person(slot.user) {
            person
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .sessions
                .retain(|s| !Arc::ptr_eq(s, slot));
            self.refresh_presence(&person);
        }
        let store = self.store.clone();
        let id = slot.id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.delete_session(&id).await {
                tracing::warn!(error = %e, "could not delete an ended session");
            }
        });
    }

    /// A snapshot of every session held on this node.
    pub(crate) fn all_sessions(&self) -> Vec<Arc<SessionSlot>> {
        self.sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn send_receipt(
        &self,
        conversation: ConversationId,
        member: &Address,
        kind: ReceiptKind,
        upto: Seq,
    ) {
        let users = self
            .conversations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&conversation)
            .filter(|c| c.members.len() <= MAX_RECEIPT_AUDIENCE)
            .map(|c| c.member_ids());
        if let Some(users) = users {
            self.bus.send(Delivery::Event {
                to: Recipients::Users(users),
                event: Event::Receipt(Arc::new(ReceiptUpdate {
                    conversation,
                    member: member.clone(),
                    kind,
                    upto,
                })),
            });
        }
    }
}

/// How often the reaper looks at sessions, for a given session timeout.
fn reap_interval(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// Ends sessions whose client has not come back within the session timeout, and keeps the
/// stored records of live sessions fresh so that they do not look expired.
pub(crate) async fn reap_expired(hub: Weak<HubInner>) {
    let Some(timeout) = hub.upgrade().map(|h| h.config.session_timeout) else {
        return;
    };
    let timeout_ms = timeout.as_millis() as i64;
    let mut ticker = tokio::time::interval(reap_interval(timeout));
    loop {
        ticker.tick().await;
        let Some(inner) = hub.upgrade() else { return };
        let now = now_millis();
        let slots = inner.all_sessions();
        let mut expired = Vec::new();
        let mut to_persist = Vec::new();
        for slot in slots {
            let mut st = slot.lock();
            let attached = st.sink.is_some() && st.parked.is_none();
            if attached {
                st.last_seen = now;
            } else if now - st.last_seen > timeout_ms {
                expired.push(slot.clone());
                continue;
            }
            if now - st.persisted_seen >= timeout_ms / 4 || st.acked != st.persisted_acked {
                st.persisted_seen = st.last_seen;
                st.persisted_acked = st.acked;
                to_persist.push((slot.id.clone(), st.last_seen, st.acked));
            }
        }
        for slot in expired {
            tracing::debug!(session = %slot.id, "session expired");
            inner.end_session(&slot);
        }
        // Submitted together, the store's writer commits them in one transaction instead of
        // one commit each (which would hold up message commits meanwhile).
        let touches: Vec<_> = to_persist
            .into_iter()
            .map(|(id, seen, acked)| {
                let store = inner.store.clone();
                tokio::spawn(async move { store.touch_session(&id, seen, acked).await })
            })
            .collect();
        for touch in touches {
            if let Ok(Err(e)) = touch.await {
                tracing::warn!(error = %e, "could not record a session's last request");
            }
        }
        if let Err(e) = inner.store.expire_sessions(now - timeout_ms).await {
            tracing::warn!(error = %e, "could not expire stored sessions");
        }
    }
}

/// Detaches every client at shutdown without ending its session: their streams end (a
/// WebSocket closes with "resume"), the stored session stays for a resume after the restart.
pub(crate) fn disconnect_all(inner: &Arc<HubInner>) {
    let slots = inner.all_sessions();
    let now = now_millis();
    for slot in slots {
        let parked = {
            let mut st = slot.lock();
            if st.sink.is_some() {
                st.last_seen = now;
            }
            st.sink = None;
            st.parked.take()
        };
        drop(parked);
    }
}

/// Writes every session's last request time and position, for a clean shutdown.
pub(crate) async fn persist_all(inner: &Arc<HubInner>) {
    let now = now_millis();
    let slots = inner.all_sessions();
    for slot in slots {
        let (seen, acked) = {
            let st = slot.lock();
            let attached = st.sink.is_some() && st.parked.is_none();
            (if attached { now } else { st.last_seen }, st.acked)
        };
        if let Err(e) = inner.store.touch_session(&slot.id, seen, acked).await {
            tracing::warn!(error = %e, "could not record a session at shutdown");
        }
    }
}
