//! The hub: one object per node that owns the meaning of everything. Lines call its methods
//! with typed commands and receive [`Event`]s through session event streams.

mod accounts;
mod contacts;
mod conversations;
mod cursors;
mod items;
mod journal;
pub mod metrics;
mod presence;
mod sessions;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::address::{Address, Realm};
use crate::bus::{Bus, Delivery, DeliverySink, Recipients};
use crate::credentials::HashCost;
use crate::limits::{Rate, RateLimiter};
use crate::model::*;
use crate::store::Store;

pub use accounts::{NewLogin, Principal, ScramLookup};
pub use contacts::ContactView;
pub use conversations::{ConversationView, Endpoints, SendAck};
pub use items::MAX_ITEMS_PER_NODE;
pub use metrics::HubMetrics;
pub use sessions::{EventStream, SessionSlot};

use journal::{Journal, Publisher};

/// Everything the hub can be configured with. Every limit can be raised for benchmarks.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// This node's name in a cluster.
    pub node: String,
    /// The realms this server serves; the first is the default for bare user names.
    pub realms: Vec<Realm>,
    /// How long a session waits for its client to come back after a dropped connection.
    pub session_timeout: Duration,
    /// Events queued for one attached session before it is cut off as too slow.
    pub session_queue: usize,
    /// Most sessions one person may hold open at once (on this node).
    pub max_sessions_per_user: usize,
    /// Largest message body, in bytes.
    pub max_message_bytes: usize,
    /// Messages per second per account (0 = unlimited), with bursts of `message_burst`.
    pub messages_per_second: f64,
    pub message_burst: f64,
    /// Login attempts per minute, per account and per client address.
    pub login_attempts_per_minute: u32,
    /// Contact requests per minute per account.
    pub contact_requests_per_minute: u32,
    /// The work factor of new password verifiers.
    pub hash_cost: HashCost,
    /// Who may start a conversation with a new account.
    pub default_message_policy: MessagePolicy,
    /// Most members a group conversation may have.
    pub max_group_members: usize,
    /// Most entries committed in one journal batch.
    pub journal_batch: usize,
    /// Most durable events replayed to a session when it attaches.
    pub max_replay: usize,
    /// Whether anyone may create an account for themselves (off by default: accounts are made
    /// by the CLI or by an administrator).
    pub open_registration: bool,
    /// Accounts allowed to use the administration API.
    pub admins: Vec<Address>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            node: "node1".into(),
            realms: vec![Realm::parse("localhost").expect("localhost is a valid realm")],
            session_timeout: Duration::from_secs(300),
            session_queue: 1024,
            max_sessions_per_user: 100,
            max_message_bytes: 64 * 1024,
            messages_per_second: 50.0,
            message_burst: 200.0,
            login_attempts_per_minute: 10,
            contact_requests_per_minute: 30,
            hash_cost: HashCost::default(),
            default_message_policy: MessagePolicy::Contacts,
            max_group_members: 1000,
            journal_batch: 512,
            max_replay: 10_000,
            open_registration: false,
            admins: Vec::new(),
        }
    }
}

impl HubConfig {
    pub fn default_realm(&self) -> &Realm {
        &self.realms[0]
    }

    pub fn serves(&self, realm: &str) -> bool {
        self.realms.iter().any(|r| r.as_str() == realm)
    }
}

/// A person with at least one session on this node: what presence and routing need in memory.
pub(crate) struct Person {
    pub user: UserId,
    pub address: Address,
    pub settings: AccountSettings,
    /// Contacts allowed to receive this person's presence (`from` accepted), with their
    /// "chosen" flag.
    pub audience: HashMap<Address, bool>,
    /// Contacts whose presence this person receives (`to` accepted).
    pub watching: HashSet<Address>,
    pub blocked: HashSet<Address>,
    pub sessions: Vec<Arc<SessionSlot>>,
    /// The combined presence of all sessions: the most available wins.
    pub presence: Presence,
}

/// A conversation with its audience, cached for the message path.
pub(crate) struct ConvInfo {
    pub conversation: Conversation,
    pub members: Vec<(UserId, Address)>,
}

impl ConvInfo {
    pub fn is_member(&self, user: UserId) -> bool {
        self.members.iter().any(|(u, _)| *u == user)
    }

    pub fn member_ids(&self) -> Vec<UserId> {
        self.members.iter().map(|(u, _)| *u).collect()
    }
}

pub(crate) struct HubInner {
    pub config: HubConfig,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub metrics: HubMetrics,
    pub sessions: RwLock<HashMap<SessionId, Arc<SessionSlot>>>,
    pub people: RwLock<HashMap<UserId, Arc<Mutex<Person>>>>,
    pub by_address: RwLock<HashMap<Address, UserId>>,
    pub conversations: RwLock<HashMap<ConversationId, Arc<ConvInfo>>>,
    /// Logins recently checked, by token hash, so that each request does not read the store.
    pub principals: RwLock<HashMap<Vec<u8>, Principal>>,
    pub message_limiter: RateLimiter<UserId>,
    /// A random key of this process, for values that must be stable but unpredictable.
    pub secret: [u8; 32],
    pub login_limiter_account: RateLimiter<String>,
    pub login_limiter_client: RateLimiter<String>,
    pub contact_limiter: RateLimiter<UserId>,
    /// Contact list changes touch two people's entries; one at a time keeps both consistent.
    pub contact_lock: tokio::sync::Mutex<()>,
    /// Serializes opening a person's in-memory state.
    pub person_lock: tokio::sync::Mutex<()>,
    journal: std::sync::OnceLock<Journal>,
    /// Delivery cursors waiting to be written together.
    pub(crate) delivered: Arc<cursors::DeliveredCursors>,
}

/// The hub. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

/// Background tasks of a running hub, to be awaited on shutdown.
pub struct HubTasks {
    journal: JoinHandle<()>,
    reaper: JoinHandle<()>,
    cursor_writer: JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Hub {
    /// Starts a hub on a store and a bus.
    pub fn start(config: HubConfig, store: Arc<dyn Store>, bus: Arc<dyn Bus>) -> (Hub, HubTasks) {
        assert!(!config.realms.is_empty(), "a hub needs at least one realm");
        let inner = Arc::new(HubInner {
            message_limiter: RateLimiter::new(Rate {
                per_second: config.messages_per_second,
                burst: config.message_burst.max(1.0),
            }),
            secret: crate::credentials::random_bytes::<32>(),
            login_limiter_account: RateLimiter::new(Rate::per_minute(
                config.login_attempts_per_minute,
            )),
            login_limiter_client: RateLimiter::new(Rate::per_minute(
                config.login_attempts_per_minute.saturating_mul(10),
            )),
            contact_limiter: RateLimiter::new(Rate::per_minute(config.contact_requests_per_minute)),
            config,
            store: store.clone(),
            bus: bus.clone(),
            metrics: HubMetrics::new(),
            sessions: RwLock::new(HashMap::new()),
            people: RwLock::new(HashMap::new()),
            by_address: RwLock::new(HashMap::new()),
            conversations: RwLock::new(HashMap::new()),
            principals: RwLock::new(HashMap::new()),
            contact_lock: tokio::sync::Mutex::new(()),
            person_lock: tokio::sync::Mutex::new(()),
            journal: std::sync::OnceLock::new(),
            delivered: Arc::default(),
        });
        let sink: Arc<dyn DeliverySink> = inner.clone();
        bus.connect(Arc::downgrade(&sink));
        let publisher: Arc<dyn Publisher> = inner.clone();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (journal, journal_task) = Journal::start(
            store,
            publisher,
            inner.config.journal_batch * 4,
            inner.config.journal_batch,
            stopped,
        );
        let _ = inner.journal.set(journal);
        let reaper = tokio::spawn(sessions::reap_expired(Arc::downgrade(&inner)));
        let cursor_writer = tokio::spawn(cursors::run(
            Arc::downgrade(&inner),
            inner.delivered.clone(),
            stop.subscribe(),
        ));
        (
            Hub { inner },
            HubTasks {
                journal: journal_task,
                reaper,
                cursor_writer,
                stop,
            },
        )
    }

    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &HubMetrics {
        &self.inner.metrics
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Parses a user-typed address against the default realm.
    pub fn parse_address(&self, text: &str) -> Result<Address, crate::AddressError> {
        Address::parse(text.trim(), self.inner.config.default_realm())
    }
}

impl HubInner {
    pub(crate) fn journal(&self) -> &Journal {
        self.journal.get().expect("the journal starts with the hub")
    }

    pub(crate) fn person(&self, user: UserId) -> Option<Arc<Mutex<Person>>> {
        self.people
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&user)
            .cloned()
    }

    pub(crate) fn online_user(&self, address: &Address) -> Option<UserId> {
        self.by_address
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(address)
            .copied()
    }
}

impl HubTasks {
    /// Stops the hub after the lines have stopped accepting: clients still attached are
    /// disconnected (their sessions stay stored, to be resumed after a restart), every
    /// submitted write is committed and acknowledged, and the sessions' last request times are
    /// recorded.
    pub async fn shutdown(self, hub: Hub) {
        self.reaper.abort();
        sessions::disconnect_all(&hub.inner);
        let _ = self.stop.send(true);
        let _ = self.journal.await;
        // What was acknowledged last is written too.
        let _ = self.cursor_writer.await;
        sessions::persist_all(&hub.inner).await;
    }
}

impl DeliverySink for HubInner {
    fn deliver(&self, delivery: Delivery) {
        match delivery {
            Delivery::Event { to, event } => self.deliver_local(&to, &event),
            Delivery::EndSessions { to, login } => self.end_local(&to, login.as_deref()),
        }
    }
}

impl Publisher for HubInner {
    fn publish(&self, outcome: &JournalOutcome, origin: Option<SessionId>) {
        match outcome {
            JournalOutcome::Message(appended) if !appended.duplicate => {
                let message = Arc::new(appended.message.clone());
                let members = self
                    .conversations
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&message.conversation)
                    .map(|c| c.member_ids());
                if let Some(users) = members {
                    let to = match origin {
                        Some(session) => Recipients::UsersExcept(users, session),
                        None => Recipients::Users(users),
                    };
                    self.bus.send(Delivery::Event {
                        to,
                        event: Event::Message(message),
                    });
                }
            }
            JournalOutcome::Message(_) => {}
            JournalOutcome::Changes(events) => {
                for event in events {
                    self.bus.send(Delivery::Event {
                        to: Recipients::Users(vec![event.user]),
                        event: Event::Account(Arc::new(event.clone())),
                    });
                }
            }
        }
    }

    fn committed(&self, entries: usize, seconds: f64) {
        self.metrics.store_commit_seconds.observe(seconds);
        self.metrics.journal_batch_size.observe(entries as f64);
    }
}
