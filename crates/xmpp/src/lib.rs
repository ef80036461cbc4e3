//! The XMPP line: makes any standard XMPP app a terminal of Switchboard.
//!
//! Like every line it only translates: XMPP stanzas become hub calls, hub events become
//! stanzas. Accounts, contacts, presence, conversations and history are the hub's, shared
//! with the web line.
//!
//! - [`c2s`]: the TCP listeners (STARTTLS on 5222, direct TLS on 5223), stream negotiation
//!   up to an authenticated stream;
//! - [`auth`]: SASL over the hub's stored SCRAM verifiers;
//! - [`session`]: a bound XMPP session: stanzas in, hub events out, stream management;
//! - [`roster`], [`mam`], [`disco`]: what those protocols map onto in the hub;
//! - [`sasl`], [`tls`]: the pure SCRAM server and the TLS identity.

pub mod auth;
pub mod bosh;
pub mod c2s;
pub mod disco;
pub mod jid;
pub mod mam;
pub mod pep;
pub mod roster;
pub mod sasl;
pub mod session;
pub mod stanza;
pub mod tls;
pub mod websocket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_core::Hub;
use switchboard_core::model::UserId;
use switchboard_xmpp_proto::Limits;

pub use c2s::serve;

/// The XMPP line's routes on the HTTP port: `/xmpp-websocket` (RFC 7395) and `/http-bind`
/// (BOSH, XEP-0124/0206). The web line
/// serves them next to its own and puts each connection's client address in the request
/// extensions as a `SocketAddr`.
pub fn http_routes(line: Arc<Line>) -> axum::Router {
    axum::Router::new()
        .route("/xmpp-websocket", axum::routing::get(websocket::upgrade))
        .route(
            "/http-bind",
            axum::routing::post(bosh::request).options(bosh::preflight),
        )
        .with_state(line)
}

/// What the XMPP line can be configured with.
#[derive(Debug, Clone)]
pub struct XmppConfig {
    /// Largest stanza accepted, in bytes.
    pub max_stanza_bytes: usize,
    /// Deepest element nesting accepted in a stanza.
    pub max_depth: usize,
    /// How long a stream-management session waits to be resumed after its connection drops.
    pub resume_timeout: Duration,
    /// How long a connection may take to authenticate.
    pub negotiation_timeout: Duration,
    /// Most simultaneous connections from one client address (0 = unlimited).
    pub connections_per_ip: usize,
    /// Unacknowledged stanzas after which the server asks the client for an acknowledgement.
    pub ack_request_every: usize,
    /// Most unacknowledged stanzas kept for resending; a client that lets more pile up is
    /// disconnected (what it missed stays in the store for its next session).
    pub max_unacked: usize,
    /// Stanzas per second one connection may send (0 = unlimited), with bursts of
    /// `stanza_burst`. Past it the connection is read more slowly, never cut.
    pub stanzas_per_second: f64,
    pub stanza_burst: f64,
    /// Whether the HTTP port is reached over TLS (a TLS proxy in front): then PLAIN is also
    /// offered over WebSocket and BOSH.
    pub http_secure: bool,
}

impl Default for XmppConfig {
    fn default() -> Self {
        XmppConfig {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            resume_timeout: Duration::from_secs(300),
            negotiation_timeout: Duration::from_secs(30),
            connections_per_ip: 256,
            ack_request_every: 5,
            max_unacked: 2048,
            stanzas_per_second: 50.0,
            // A reconnecting app sends a burst (roster, disco, carbons, archive, PEP).
            stanza_burst: 500.0,
            http_secure: false,
        }
    }
}

impl XmppConfig {
    pub fn limits(&self) -> Limits {
        Limits {
            max_stanza_bytes: self.max_stanza_bytes,
            max_depth: self.max_depth,
            // The lexer reserves this much per connection up front; 4 KiB still takes any
            // attribute a client sends (longer text is split, not refused).
            max_token_bytes: 4 * 1024,
            ..Limits::default()
        }
    }
}

/// What every connection of the line shares.
pub struct Line {
    pub hub: Hub,
    pub config: XmppConfig,
    pub tls: Arc<tokio_rustls::rustls::ServerConfig>,
    /// Sessions whose connection dropped and that wait to be resumed (XEP-0198), by
    /// resumption id.
    pub(crate) detached: Mutex<HashMap<String, session::Detached>>,
    /// Bound resources per person on this node, so that a second connection asking for a
    /// resource already in use gets a fresh one.
    pub(crate) resources: Mutex<HashMap<String, Vec<String>>>,
    /// BOSH sessions by sid.
    pub(crate) bosh: bosh::Sessions,
    /// Connections with resumable sessions, by resumption id: a resumption that arrives
    /// before the old connection noticed it is dead takes the session over through this.
    pub(crate) takeovers: Mutex<HashMap<String, (UserId, Arc<tokio::sync::Notify>)>>,
    /// Woken whenever a session is detached.
    pub(crate) parked: tokio::sync::Notify,
    /// Set when the server stops: every stream is closed with `system-shutdown`.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    /// Open client connections, so a stop can wait for them to close.
    open: tokio::sync::watch::Sender<usize>,
}

/// Counts one open client connection while it lives.
pub struct ConnectionGuard(Arc<Line>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n -= 1);
    }
}

impl Line {
    pub fn new(
        hub: Hub,
        config: XmppConfig,
        tls: Arc<tokio_rustls::rustls::ServerConfig>,
    ) -> Arc<Line> {
        Arc::new(Line {
            hub,
            config,
            tls,
            detached: Mutex::new(HashMap::new()),
            resources: Mutex::new(HashMap::new()),
            bosh: bosh::Sessions::default(),
            takeovers: Mutex::new(HashMap::new()),
            parked: tokio::sync::Notify::new(),
            stopping: tokio::sync::watch::channel(false).0,
            open: tokio::sync::watch::channel(0).0,
        })
    }

    /// Counts a client connection until the guard is dropped.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.open.send_modify(|n| *n += 1);
        ConnectionGuard(self.clone())
    }

    /// Stops the line: every stream is closed with `system-shutdown` (what was not
    /// acknowledged stays in the message cache), waiting up to `grace` for them to go, and
    /// sessions waiting to be resumed end.
    pub async fn stop(&self, grace: Duration) {
        self.stopping.send_replace(true);
        let mut open = self.open.subscribe();
        if tokio::time::timeout(grace, open.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!("XMPP connections still open after the grace period");
        }
        let detached: Vec<session::Detached> = self
            .detached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, d)| d)
            .collect();
        for d in detached {
            session::end_detached(self, d).await;
        }
    }

    /// Whether one of the person's resources is bound on this node.
    pub(crate) fn is_bound(&self, person: &switchboard_core::Address, resource: &str) -> bool {
        self.resources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(person.as_str())
            .is_some_and(|list| list.iter().any(|r| r == resource))
    }

    /// The domain of the server itself (the default realm).
    pub fn domain(&self) -> &str {
        self.hub.config().default_realm().as_str()
    }
}
