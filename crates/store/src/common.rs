//! Conversions and small algorithms both backends share, so that they cannot drift apart.

use std::collections::HashMap;
use std::fmt::Display;

use switchboard_core::address::Address;
use switchboard_core::credentials::{decode_verifier, encode_verifier};
use switchboard_core::model::{
    AccountEvent, ConversationId, CursorUpdate, Replayed, ScramVerifier, Seq, StoredAccountEvent,
    StoredMessage, UserId,
};
use switchboard_core::store::{StoreError, StoreResult};

/// Account settings, contact states and the like are stored as their text names; a name the
/// program does not know means the data was written by something else.
pub(crate) fn parse_name<T>(
    text: &str,
    parse: fn(&str) -> Option<T>,
    what: &str,
) -> StoreResult<T> {
    parse(text).ok_or_else(|| StoreError::Corrupt(format!("unknown {what} {text:?}")))
}

pub(crate) fn parse_address(text: &str) -> StoreResult<Address> {
    Address::parse_full(text)
        .map_err(|e| StoreError::Corrupt(format!("stored address {text:?} is not valid: {e}")))
}

pub(crate) fn encode_scram(v: &ScramVerifier) -> String {
    encode_verifier(v)
}

pub(crate) fn decode_scram(text: &str) -> StoreResult<ScramVerifier> {
    decode_verifier(text).ok_or_else(|| StoreError::Corrupt("a stored SCRAM verifier".into()))
}

pub(crate) fn uuid_from_bytes(bytes: &[u8]) -> StoreResult<uuid::Uuid> {
    uuid::Uuid::from_slice(bytes)
        .map_err(|_| StoreError::Corrupt(format!("a stored id has {} bytes, not 16", bytes.len())))
}

pub(crate) fn event_to_json(event: &AccountEvent) -> StoreResult<String> {
    // Serializing a plain enum of strings and numbers cannot fail; the error path exists only
    // because serde's signature has one.
    serde_json::to_string(event).map_err(|e| StoreError::Corrupt(format!("account event: {e}")))
}

pub(crate) fn event_from_json(text: &str) -> StoreResult<AccountEvent> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("stored account event is not valid: {e}")))
}

pub(crate) fn unavailable(what: impl Display) -> StoreError {
    StoreError::Unavailable(what.to_string())
}

/// Folds several moves of the same cursor into one (the furthest), so that a backend can apply
/// a batch with one statement per cursor and no statement sees the same row twice.
pub(crate) fn merge_cursor_updates(updates: Vec<CursorUpdate>) -> Vec<CursorUpdate> {
    fn furthest(a: Option<Seq>, b: Option<Seq>) -> Option<Seq> {
        match (a, b) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, None) => x,
            (None, y) => y,
        }
    }
    let mut order: Vec<(ConversationId, UserId)> = Vec::new();
    let mut merged: HashMap<(ConversationId, UserId), CursorUpdate> = HashMap::new();
    for u in updates {
        let key = (u.conversation, u.user);
        match merged.get_mut(&key) {
            Some(m) => {
                m.delivered = furthest(m.delivered, u.delivered);
                m.read = furthest(m.read, u.read);
            }
            None => {
                order.push(key);
                merged.insert(key, u);
            }
        }
    }
    order
        .into_iter()
        .filter_map(|k| merged.remove(&k))
        .collect()
}

/// Merges messages and account events (each already in position order or not) into one list in
/// position order, at most `limit` long.
pub(crate) fn merge_replay(
    messages: Vec<StoredMessage>,
    events: Vec<StoredAccountEvent>,
    limit: usize,
) -> Vec<Replayed> {
    let mut all: Vec<Replayed> = messages
        .into_iter()
        .map(Replayed::Message)
        .chain(events.into_iter().map(Replayed::Account))
        .collect();
    all.sort_by_key(Replayed::pos);
    all.truncate(limit);
    all
}

/// Limits arrive as `usize`; both engines take signed 64-bit limits.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn cursor_updates_for_the_same_member_fold_into_the_furthest() {
        let c = ConversationId(Uuid::from_u128(1));
        let u = |user, delivered: Option<i64>, read: Option<i64>| CursorUpdate {
            conversation: c,
            user: UserId(user),
            delivered: delivered.map(Seq),
            read: read.map(Seq),
        };
        let merged = merge_cursor_updates(vec![
            u(1, Some(5), None),
            u(2, Some(1), Some(1)),
            u(1, Some(3), Some(2)),
        ]);
        assert_eq!(merged, vec![u(1, Some(5), Some(2)), u(2, Some(1), Some(1))]);
    }
}
