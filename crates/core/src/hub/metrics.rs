//! Prometheus metrics of the hub: connections, sessions, messages in and out, store latency.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub struct HubMetrics {
    pub connections: Gauge,
    pub sessions: Gauge,
    pub messages_in: Counter,
    pub messages_duplicate: Counter,
    pub events_out: Counter,
    pub slow_consumers: Counter,
    pub logins_failed: Counter,
    /// Seconds one journal batch took to commit.
    pub store_commit_seconds: Histogram,
    /// Entries per committed journal batch.
    pub journal_batch_size: Histogram,
    registry: Registry,
}

impl HubMetrics {
    pub fn new() -> HubMetrics {
        let mut registry = Registry::with_prefix("switchboard");
        let connections = Gauge::default();
        let sessions = Gauge::default();
        let messages_in = Counter::default();
        let messages_duplicate = Counter::default();
        let events_out = Counter::default();
        let slow_consumers = Counter::default();
        let logins_failed = Counter::default();
        let store_commit_seconds = Histogram::new([
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
        ]);
        let journal_batch_size =
            Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]);
        registry.register(
            "connections",
            "Open client connections on all lines",
            connections.clone(),
        );
        registry.register(
            "sessions",
            "Server-held sessions in memory (attached or waiting for resumption)",
            sessions.clone(),
        );
        registry.register(
            "messages_in",
            "Messages accepted from senders",
            messages_in.clone(),
        );
        registry.register(
            "messages_duplicate",
            "Messages resent with a client id already stored (not stored again)",
            messages_duplicate.clone(),
        );
        registry.register(
            "events_out",
            "Events handed to sessions",
            events_out.clone(),
        );
        registry.register(
            "slow_consumers",
            "Sessions cut off because they could not keep up",
            slow_consumers.clone(),
        );
        registry.register(
            "logins_failed",
            "Failed login attempts",
            logins_failed.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Time to commit one journal batch",
            store_commit_seconds.clone(),
        );
        registry.register(
            "journal_batch_entries",
            "Entries per committed journal batch",
            journal_batch_size.clone(),
        );
        HubMetrics {
            connections,
            sessions,
            messages_in,
            messages_duplicate,
            events_out,
            slow_consumers,
            logins_failed,
            store_commit_seconds,
            journal_batch_size,
            registry,
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for HubMetrics {
    fn default() -> Self {
        Self::new()
    }
}
