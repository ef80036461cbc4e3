//! The bus carries deliveries between hub instances. With one node it is in-process: a
//! delivery goes straight back to the local hub. A NATS bus (a later stage) will publish to the
//! node that holds each recipient's sessions, found through the session records' `node`.
//!
//! Every delivery the hub makes goes through the bus, so that adding nodes changes the bus and
//! nothing else.

use std::sync::{Arc, OnceLock, Weak};

use crate::model::{Event, SessionId, UserId};

/// Who a delivery is for.
#[derive(Debug, Clone)]
pub enum Recipients {
    /// Every session of these people, wherever they are.
    Users(Vec<UserId>),
    /// Every session of these people except one: the session a message came from already
    /// has it (its acknowledgement carries the message's number and position).
    UsersExcept(Vec<UserId>, SessionId),
    /// One session.
    Session(SessionId),
}

#[derive(Debug, Clone)]
pub enum Delivery {
    Event {
        to: Recipients,
        event: Event,
    },
    /// End these sessions at once (account removed, password changed, login revoked).
    EndSessions {
        to: Recipients,
        login: Option<String>,
    },
}

/// What receives deliveries on a node: the local hub.
pub trait DeliverySink: Send + Sync + 'static {
    fn deliver(&self, delivery: Delivery);
}

pub trait Bus: Send + Sync + 'static {
    /// This node's name, recorded with each session it holds.
    fn node(&self) -> &str;
    /// Sends a delivery. Never blocks; ordering between two sends from one task is kept.
    fn send(&self, delivery: Delivery);
    /// Connects the local hub that receives deliveries for this node.
    fn connect(&self, sink: Weak<dyn DeliverySink>);
}

/// The single-node bus: deliveries go straight to the local hub, synchronously, so their
/// order is the order they were sent in.
pub struct InProcessBus {
    node: String,
    sink: OnceLock<Weak<dyn DeliverySink>>,
}

impl InProcessBus {
    pub fn new(node: impl Into<String>) -> Arc<InProcessBus> {
        Arc::new(InProcessBus {
            node: node.into(),
            sink: OnceLock::new(),
        })
    }
}

impl Bus for InProcessBus {
    fn node(&self) -> &str {
        &self.node
    }

    fn send(&self, delivery: Delivery) {
        if let Some(sink) = self.sink.get().and_then(Weak::upgrade) {
            sink.deliver(delivery);
        }
    }

    fn connect(&self, sink: Weak<dyn DeliverySink>) {
        let _ = self.sink.set(sink);
    }
}
