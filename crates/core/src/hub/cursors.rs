//! Delivery cursors, written together. Every acknowledgement moves a cursor; written one by
//! one they would cost a store request and a task per acknowledgement. Instead they are
//! merged (per conversation and member, the highest wins) while the previous write is in
//! flight, and written in one request: group commit for cursors.
//!
//! After each write the writer rests a moment (`FLUSH_INTERVAL`), so that under load each
//! write carries several acknowledgements per member: a client that acknowledges every
//! message at 20 messages a second then costs one cursor update per interval, not 20. The
//! sender sees "delivered" that much later, which nobody notices.
//!
//! The map is bounded by the number of (conversation, member) pairs with acknowledgements
//! waiting, and a cursor that is never written (a crash in between) only means a message is
//! offered again, never that one is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

/// The least time between two cursor writes.
const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

use crate::address::Address;
use crate::model::*;

use super::HubInner;

#[derive(Default)]
pub(crate) struct DeliveredCursors {
    waiting: Mutex<HashMap<(ConversationId, UserId), (Address, Seq)>>,
    wake: Notify,
}

impl DeliveredCursors {
    /// Records that `user` has every message of `conversation` up to `seq`.
    pub(crate) fn delivered(
        &self,
        conversation: ConversationId,
        user: UserId,
        address: &Address,
        seq: Seq,
    ) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let entry = waiting
            .entry((conversation, user))
            .or_insert_with(|| (address.clone(), seq));
        entry.1 = entry.1.max(seq);
        drop(waiting);
        self.wake.notify_one();
    }

    fn take(&self) -> HashMap<(ConversationId, UserId), (Address, Seq)> {
        std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Writes what is waiting, then tells the conversations' members.
pub(crate) async fn flush(inner: &HubInner) {
    let waiting = inner.delivered.take();
    if waiting.is_empty() {
        return;
    }
    let updates = waiting
        .keys()
        .map(|&(conversation, user)| CursorUpdate {
            conversation,
            user,
            delivered: Some(waiting[&(conversation, user)].1),
            read: None,
        })
        .collect();
    if let Err(e) = inner.store.advance_cursors(updates).await {
        tracing::warn!(error = %e, "could not store delivery cursors");
        return;
    }
    for ((conversation, _), (address, seq)) in waiting {
        inner.send_receipt(conversation, &address, ReceiptKind::Delivered, seq);
    }
}

/// The writer task: one write at a time, each taking everything that came meanwhile, with a
/// rest after each. When the hub stops it writes what is left and ends.
pub(crate) async fn run(
    inner: Weak<HubInner>,
    cursors: Arc<DeliveredCursors>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let stopping = tokio::select! {
            () = cursors.wake.notified() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        // The rest, unless stopping: acknowledgements keep gathering meanwhile.
        let stopping = stopping
            || tokio::select! {
                () = tokio::time::sleep(FLUSH_INTERVAL) => false,
                _ = stop.wait_for(|s| *s) => true,
            };
        let Some(hub) = inner.upgrade() else { return };
        flush(&hub).await;
        if stopping {
            return;
        }
    }
}
