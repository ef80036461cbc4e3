//! The SQL of the SQLite backend. Functions taking a `WriterState` run on the writer thread
//! inside its transaction; the others run on a reader connection.

use rusqlite::{Connection, OptionalExtension, Row, params};
use switchboard_core::address::Address;
use switchboard_core::model::*;
use switchboard_core::store::{StoreError, StoreResult};

use super::writer::{WriterState, exec};
use super::{Fail, R};
use crate::common::{
    decode_scram, encode_scram, event_from_json, event_to_json, merge_replay, parse_address,
    parse_name, sql_limit, uuid_from_bytes,
};

/// Runs a row mapper's conversion errors through the same `?` as SQL errors: mappers read the
/// raw columns (SQL errors) and then build the model type (store errors).
type Mapped<T> = rusqlite::Result<StoreResult<T>>;

fn collect<T>(rows: impl Iterator<Item = Mapped<T>>) -> R<Vec<T>> {
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}

fn one<T>(row: Option<StoreResult<T>>) -> R<Option<T>> {
    Ok(row.transpose()?)
}

fn blob(id: &uuid::Uuid) -> &[u8] {
    &id.as_bytes()[..]
}

// --- row mappers ---

macro_rules! account_columns {
    () => {
        "id, address, scram_sha1, scram_sha256, visibility, message_policy, display_name, created_at"
    };
}

fn account(row: &Row<'_>) -> Mapped<Account> {
    let id: i64 = row.get(0)?;
    let address: String = row.get(1)?;
    let sha1: String = row.get(2)?;
    let sha256: String = row.get(3)?;
    let visibility: String = row.get(4)?;
    let policy: String = row.get(5)?;
    let display_name: Option<String> = row.get(6)?;
    let created_at: i64 = row.get(7)?;
    Ok((|| {
        Ok(Account {
            id: UserId(id),
            address: parse_address(&address)?,
            credentials: Credentials {
                scram_sha1: decode_scram(&sha1)?,
                scram_sha256: decode_scram(&sha256)?,
            },
            settings: AccountSettings {
                visibility: parse_name(&visibility, Visibility::parse, "visibility")?,
                message_policy: parse_name(&policy, MessagePolicy::parse, "message policy")?,
                display_name,
            },
            created_at,
        })
    })())
}

macro_rules! login_columns {
    () => {
        "id, user_id, kind, token_hash, csrf_hash, created_at, last_used, user_agent"
    };
}

fn login(row: &Row<'_>) -> Mapped<LoginRecord> {
    let id: String = row.get(0)?;
    let user: i64 = row.get(1)?;
    let kind: String = row.get(2)?;
    let token_hash: Vec<u8> = row.get(3)?;
    let csrf_hash: Option<Vec<u8>> = row.get(4)?;
    let created_at: i64 = row.get(5)?;
    let last_used: i64 = row.get(6)?;
    let user_agent: Option<String> = row.get(7)?;
    Ok((|| {
        Ok(LoginRecord {
            id,
            user: UserId(user),
            kind: parse_name(&kind, LoginKind::parse, "login kind")?,
            token_hash,
            csrf_hash,
            created_at,
            last_used,
            user_agent,
        })
    })())
}

macro_rules! contact_columns {
    () => {
        "owner, peer, sub_to, sub_from, name, chosen"
    };
}

fn contact(row: &Row<'_>) -> Mapped<Contact> {
    let owner: i64 = row.get(0)?;
    let peer: String = row.get(1)?;
    let to: String = row.get(2)?;
    let from: String = row.get(3)?;
    let name: Option<String> = row.get(4)?;
    let chosen: bool = row.get(5)?;
    Ok((|| {
        Ok(Contact {
            owner: UserId(owner),
            peer: parse_address(&peer)?,
            to: parse_name(&to, SubState::parse, "subscription state")?,
            from: parse_name(&from, SubState::parse, "subscription state")?,
            name,
            chosen,
        })
    })())
}

macro_rules! conversation_columns {
    () => {
        "c.id, c.kind, c.title, c.confidential, c.created_by, c.created_at"
    };
}

/// Reads the six conversation columns starting at `at`.
fn conversation_at(row: &Row<'_>, at: usize) -> Mapped<Conversation> {
    let id: Vec<u8> = row.get(at)?;
    let kind: String = row.get(at + 1)?;
    let title: Option<String> = row.get(at + 2)?;
    let confidential: bool = row.get(at + 3)?;
    let created_by: String = row.get(at + 4)?;
    let created_at: i64 = row.get(at + 5)?;
    Ok((|| {
        Ok(Conversation {
            id: ConversationId(uuid_from_bytes(&id)?),
            kind: parse_name(&kind, ConversationKind::parse, "conversation kind")?,
            title,
            confidential,
            created_by: parse_address(&created_by)?,
            created_at,
        })
    })())
}

fn conversation(row: &Row<'_>) -> Mapped<Conversation> {
    conversation_at(row, 0)
}

macro_rules! member_columns {
    () => {
        "mb.user_id, mb.address, mb.delivered_seq, mb.read_seq"
    };
}

fn member_at(row: &Row<'_>, at: usize) -> Mapped<Member> {
    let user: i64 = row.get(at)?;
    let address: String = row.get(at + 1)?;
    let delivered: i64 = row.get(at + 2)?;
    let read: i64 = row.get(at + 3)?;
    Ok(parse_address(&address).map(|address| Member {
        user: UserId(user),
        address,
        delivered: Seq(delivered),
        read: Seq(read),
    }))
}

fn member(row: &Row<'_>) -> Mapped<Member> {
    member_at(row, 0)
}

macro_rules! message_columns {
    () => {
        "pos, id, conversation, seq, sender_address, client_id, body, sent_at"
    };
}

fn message(row: &Row<'_>) -> Mapped<StoredMessage> {
    let pos: i64 = row.get(0)?;
    let id: Vec<u8> = row.get(1)?;
    let conversation: Vec<u8> = row.get(2)?;
    let seq: i64 = row.get(3)?;
    let sender: String = row.get(4)?;
    let client_id: String = row.get(5)?;
    let body: String = row.get(6)?;
    let sent_at: i64 = row.get(7)?;
    Ok((|| {
        Ok(StoredMessage {
            id: MessageId(uuid_from_bytes(&id)?),
            conversation: ConversationId(uuid_from_bytes(&conversation)?),
            seq: Seq(seq),
            pos: Pos(pos),
            sender: parse_address(&sender)?,
            client_id,
            body,
            sent_at,
            to_endpoint: None,
            from_endpoint: None,
            private: false,
        })
    })())
}

fn account_event(row: &Row<'_>) -> Mapped<StoredAccountEvent> {
    let pos: i64 = row.get(0)?;
    let user: i64 = row.get(1)?;
    let at: i64 = row.get(2)?;
    let payload: String = row.get(3)?;
    Ok(event_from_json(&payload).map(|event| StoredAccountEvent {
        pos: Pos(pos),
        user: UserId(user),
        at,
        event,
    }))
}

macro_rules! session_columns {
    () => {
        "id, user_id, login, node, created_at, last_seen, presence_show, presence_status, acked_pos"
    };
}

fn session(row: &Row<'_>) -> Mapped<SessionRecord> {
    let id: String = row.get(0)?;
    let user: i64 = row.get(1)?;
    let login: String = row.get(2)?;
    let node: String = row.get(3)?;
    let created_at: i64 = row.get(4)?;
    let last_seen: i64 = row.get(5)?;
    let show: String = row.get(6)?;
    let status: Option<String> = row.get(7)?;
    let acked: i64 = row.get(8)?;
    Ok((|| {
        Ok(SessionRecord {
            id: SessionId(id),
            user: UserId(user),
            login,
            node,
            created_at,
            last_seen,
            presence: Presence {
                show: parse_name(&show, Availability::parse, "availability")?,
                status,
            },
            acked: Pos(acked),
        })
    })())
}

// --- accounts ---

pub(super) fn create_account(conn: &Connection, new: &NewAccount) -> R<Account> {
    let created_at = now_millis();
    let inserted = conn
        .prepare_cached(
            "INSERT INTO accounts (address, realm, scram_sha1, scram_sha256, visibility,
                                   message_policy, display_name, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            new.address.as_str(),
            new.address.realm_str(),
            encode_scram(&new.credentials.scram_sha1),
            encode_scram(&new.credentials.scram_sha256),
            new.settings.visibility.as_str(),
            new.settings.message_policy.as_str(),
            new.settings.display_name,
            created_at,
        ]);
    match inserted {
        Ok(_) => {}
        Err(e) if Fail::is_unique_violation(&e) => {
            return Err(StoreError::AlreadyExists(format!("the account {}", new.address)).into());
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Account {
        id: UserId(conn.last_insert_rowid()),
        address: new.address.clone(),
        credentials: new.credentials.clone(),
        settings: new.settings.clone(),
        created_at,
    })
}

pub(super) fn account_by_id(conn: &Connection, id: UserId) -> R<Option<Account>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        account_columns!(),
        " FROM accounts WHERE id = ?1"
    ))?;
    one(stmt.query_row([id.0], account).optional()?)
}

pub(super) fn account_by_address(conn: &Connection, address: &Address) -> R<Option<Account>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        account_columns!(),
        " FROM accounts WHERE address = ?1"
    ))?;
    one(stmt.query_row([address.as_str()], account).optional()?)
}

pub(super) fn list_accounts(conn: &Connection, realm: Option<&str>) -> R<Vec<Account>> {
    match realm {
        Some(realm) => {
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE realm = ?1 ORDER BY address"
            ))?;
            collect(stmt.query_map([realm], account)?)
        }
        None => {
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts ORDER BY address"
            ))?;
            collect(stmt.query_map([], account)?)
        }
    }
}

pub(super) fn set_credentials(conn: &Connection, user: UserId, credentials: &Credentials) -> R<()> {
    let changed = conn
        .prepare_cached("UPDATE accounts SET scram_sha1 = ?2, scram_sha256 = ?3 WHERE id = ?1")?
        .execute(params![
            user.0,
            encode_scram(&credentials.scram_sha1),
            encode_scram(&credentials.scram_sha256),
        ])?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("account {}", user.0)).into());
    }
    Ok(())
}

pub(super) fn delete_account(conn: &Connection, state: &mut WriterState, user: UserId) -> R<bool> {
    let address: Option<String> = conn
        .prepare_cached("SELECT address FROM accounts WHERE id = ?1")?
        .query_row([user.0], |row| row.get(0))
        .optional()?;
    let Some(address) = address else {
        return Ok(false);
    };
    // Journal rows are about to disappear, possibly the newest ones: remember the highest
    // position handed out so that positions keep growing after a restart.
    conn.prepare_cached(
        "INSERT INTO counters (name, value) VALUES ('pos_floor', ?1)
         ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
    )?
    .execute([state.last_assigned()])?;
    // Likewise for the groups they wrote in: their messages go, the numbers stay used, so
    // that the other members' cursors keep pointing at the same messages.
    conn.prepare_cached(
        "UPDATE conversations SET seq_floor = max(seq_floor, coalesce(
             (SELECT m.seq FROM messages m WHERE m.conversation = conversations.id
              ORDER BY m.seq DESC LIMIT 1), 0))
         WHERE id IN (SELECT DISTINCT conversation FROM messages WHERE sender = ?1)",
    )?
    .execute([user.0])?;
    // Their direct conversations go entirely, with both sides' messages (the foreign keys
    // cascade to members and messages).
    conn.prepare_cached(
        "DELETE FROM conversations WHERE kind = 'direct'
           AND id IN (SELECT conversation FROM members WHERE user_id = ?1)",
    )?
    .execute([user.0])?;
    conn.prepare_cached("DELETE FROM messages WHERE sender = ?1")?
        .execute([user.0])?;
    conn.prepare_cached("DELETE FROM members WHERE user_id = ?1")?
        .execute([user.0])?;
    // Other people's contact entries for this address: the person is gone.
    conn.prepare_cached("DELETE FROM contacts WHERE peer = ?1")?
        .execute([&address])?;
    for sql in [
        "DELETE FROM contacts WHERE owner = ?1",
        "DELETE FROM blocks WHERE owner = ?1",
        "DELETE FROM logins WHERE user_id = ?1",
        "DELETE FROM sessions WHERE user_id = ?1",
        "DELETE FROM account_events WHERE user_id = ?1",
        "DELETE FROM accounts WHERE id = ?1",
    ] {
        conn.prepare_cached(sql)?.execute([user.0])?;
    }
    state.forget_conversations();
    Ok(true)
}

// --- logins ---

pub(super) fn create_login(conn: &Connection, login: &LoginRecord) -> R<()> {
    let inserted = conn
        .prepare_cached(concat!(
            "INSERT INTO logins (",
            login_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ))?
        .execute(params![
            login.id,
            login.user.0,
            login.kind.as_str(),
            login.token_hash,
            login.csrf_hash,
            login.created_at,
            login.last_used,
            login.user_agent,
        ]);
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if Fail::is_unique_violation(&e) => {
            Err(StoreError::AlreadyExists(format!("the login {}", login.id)).into())
        }
        Err(e) if Fail::is_foreign_key_violation(&e) => {
            Err(StoreError::NotFound(format!("account {}", login.user.0)).into())
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) fn login_by_token_hash(conn: &Connection, hash: &[u8]) -> R<Option<LoginRecord>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        login_columns!(),
        " FROM logins WHERE token_hash = ?1"
    ))?;
    one(stmt.query_row([hash], login).optional()?)
}

pub(super) fn logins_of(conn: &Connection, user: UserId) -> R<Vec<LoginRecord>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        login_columns!(),
        " FROM logins WHERE user_id = ?1 ORDER BY created_at, id"
    ))?;
    collect(stmt.query_map([user.0], login)?)
}

pub(super) fn touch_login(conn: &Connection, id: &str, at: Millis) -> R<()> {
    conn.prepare_cached("UPDATE logins SET last_used = max(last_used, ?2) WHERE id = ?1")?
        .execute(params![id, at])?;
    Ok(())
}

pub(super) fn delete_login(conn: &Connection, id: &str) -> R<bool> {
    let deleted = conn
        .prepare_cached("DELETE FROM logins WHERE id = ?1")?
        .execute([id])?;
    Ok(deleted > 0)
}

pub(super) fn delete_logins_of(conn: &Connection, user: UserId) -> R<()> {
    conn.prepare_cached("DELETE FROM logins WHERE user_id = ?1")?
        .execute([user.0])?;
    Ok(())
}

// --- the journal ---

/// Applies a batch of journal entries so that one entry's failure leaves the others standing.
///
/// A change entry runs several statements and gets a savepoint to undo them together. A
/// message entry writes with a single INSERT, which SQLite undoes by itself when it fails, so
/// it goes without: a savepoint would copy every page the message touches into the statement
/// journal, a cost paid on each of thousands of messages per second.
pub(super) fn append(
    conn: &Connection,
    state: &mut WriterState,
    batch: &[JournalEntry],
) -> R<Vec<StoreResult<JournalOutcome>>> {
    let mut results = Vec::with_capacity(batch.len());
    for entry in batch {
        let mark = state.mark();
        let outcome = match entry {
            JournalEntry::Message(message) => {
                append_message(conn, state, message).map(JournalOutcome::Message)
            }
            JournalEntry::Changes { changes, events } => {
                exec(conn, "SAVEPOINT entry")?;
                let applied = apply_changes(conn, state, changes, events);
                if applied.is_ok() {
                    exec(conn, "RELEASE entry")?;
                } else if !conn.is_autocommit() {
                    exec(conn, "ROLLBACK TO entry")?;
                    exec(conn, "RELEASE entry")?;
                }
                applied.map(JournalOutcome::Changes)
            }
        };
        match outcome {
            Ok(outcome) => results.push(Ok(outcome)),
            Err(fail) => {
                // SQLite rolled the whole transaction back by itself: the writer retries.
                if conn.is_autocommit() {
                    return Err(fail);
                }
                state.undo(mark);
                results.push(Err(fail.into_store()));
            }
        }
    }
    Ok(results)
}

fn message_by_client_id(
    conn: &Connection,
    sender: UserId,
    client_id: &str,
) -> R<Option<StoredMessage>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE sender = ?1 AND client_id = ?2"
    ))?;
    one(stmt
        .query_row(params![sender.0, client_id], message)
        .optional()?)
}

fn append_message(conn: &Connection, state: &mut WriterState, new: &NewMessage) -> R<Appended> {
    let last = state
        .last_seq(conn, new.conversation)?
        .ok_or_else(|| StoreError::NotFound(format!("conversation {}", new.conversation)))?;
    let seq = last + 1;
    let pos = state.peek_pos();
    // A resend (same sender and client id) inserts nothing. Letting the insert find it costs
    // nothing extra, where looking first would search the same index twice for every message.
    let inserted = conn
        .prepare_cached(
            "INSERT INTO messages (pos, id, conversation, seq, sender, sender_address, client_id,
                                   body, sent_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (sender, client_id) DO NOTHING",
        )?
        .execute(params![
            pos.0,
            blob(&new.id.0),
            blob(&new.conversation.0),
            seq,
            new.sender.0,
            new.sender_address.as_str(),
            new.client_id,
            new.body,
            new.sent_at,
        ])
        .map_err(|e| Fail::or_not_found(e, || format!("account {}", new.sender.0)))?;
    if inserted == 0 {
        let earlier = message_by_client_id(conn, new.sender, &new.client_id)?.ok_or_else(|| {
            StoreError::Corrupt("a message collided with one that cannot be read back".into())
        })?;
        return Ok(Appended {
            message: earlier,
            duplicate: true,
        });
    }
    state.take_pos();
    state.set_last_seq(new.conversation, seq);
    Ok(Appended {
        message: StoredMessage {
            id: new.id,
            conversation: new.conversation,
            seq: Seq(seq),
            pos,
            sender: new.sender_address.clone(),
            client_id: new.client_id.clone(),
            body: new.body.clone(),
            sent_at: new.sent_at,
            to_endpoint: new.to_endpoint.clone(),
            from_endpoint: new.from_endpoint.clone(),
            private: new.private,
        },
        duplicate: false,
    })
}

fn apply_changes(
    conn: &Connection,
    state: &mut WriterState,
    changes: &[Change],
    events: &[(UserId, AccountEvent)],
) -> R<Vec<StoredAccountEvent>> {
    for change in changes {
        apply_change(conn, state, change)?;
    }
    let at = now_millis();
    let mut stored = Vec::with_capacity(events.len());
    for (user, event) in events {
        let pos = state.take_pos();
        conn.prepare_cached(
            "INSERT INTO account_events (pos, user_id, at, payload) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![pos.0, user.0, at, event_to_json(event)?])
        .map_err(|e| Fail::or_not_found(e, || format!("account {}", user.0)))?;
        stored.push(StoredAccountEvent {
            pos,
            user: *user,
            at,
            event: event.clone(),
        });
    }
    Ok(stored)
}

fn apply_change(conn: &Connection, state: &mut WriterState, change: &Change) -> R<()> {
    match change {
        Change::PutContact(c) => {
            conn.prepare_cached(concat!(
                "INSERT INTO contacts (",
                contact_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (owner, peer) DO UPDATE SET
                   sub_to = excluded.sub_to, sub_from = excluded.sub_from,
                   name = excluded.name, chosen = excluded.chosen"
            ))?
            .execute(params![
                c.owner.0,
                c.peer.as_str(),
                c.to.as_str(),
                c.from.as_str(),
                c.name,
                c.chosen,
            ])
            .map_err(|e| Fail::or_not_found(e, || format!("account {}", c.owner.0)))?;
        }
        Change::DeleteContact { owner, peer } => {
            conn.prepare_cached("DELETE FROM contacts WHERE owner = ?1 AND peer = ?2")?
                .execute(params![owner.0, peer.as_str()])?;
        }
        Change::Block { owner, peer } => {
            conn.prepare_cached(
                "INSERT INTO blocks (owner, peer) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            )?
            .execute(params![owner.0, peer.as_str()])
            .map_err(|e| Fail::or_not_found(e, || format!("account {}", owner.0)))?;
        }
        Change::Unblock { owner, peer } => {
            conn.prepare_cached("DELETE FROM blocks WHERE owner = ?1 AND peer = ?2")?
                .execute(params![owner.0, peer.as_str()])?;
        }
        Change::CreateConversation {
            conversation: c,
            members,
        } => {
            conn.prepare_cached(
                "INSERT INTO conversations (id, kind, title, confidential, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![
                blob(&c.id.0),
                c.kind.as_str(),
                c.title,
                c.confidential,
                c.created_by.as_str(),
                c.created_at,
            ])?;
            let last = state.last_seq(conn, c.id)?.unwrap_or(0);
            for (user, address) in members {
                add_member(conn, c.id, *user, address, last)?;
            }
        }
        Change::AddMember {
            conversation,
            user,
            address,
        } => {
            let last = state
                .last_seq(conn, *conversation)?
                .ok_or_else(|| StoreError::NotFound(format!("conversation {conversation}")))?;
            add_member(conn, *conversation, *user, address, last)?;
        }
        Change::RemoveMember { conversation, user } => {
            conn.prepare_cached("DELETE FROM members WHERE conversation = ?1 AND user_id = ?2")?
                .execute(params![blob(&conversation.0), user.0])?;
        }
        Change::PutSettings { user, settings } => {
            let changed = conn
                .prepare_cached(
                    "UPDATE accounts SET visibility = ?2, message_policy = ?3, display_name = ?4
                     WHERE id = ?1",
                )?
                .execute(params![
                    user.0,
                    settings.visibility.as_str(),
                    settings.message_policy.as_str(),
                    settings.display_name,
                ])?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("account {}", user.0)).into());
            }
        }
    }
    Ok(())
}

/// Adds a member whose cursors start at the conversation's current end: someone who joins
/// has not "missed" what was said before, so it is neither undelivered nor unread for them.
/// An existing member keeps their cursors.
fn add_member(
    conn: &Connection,
    conversation: ConversationId,
    user: UserId,
    address: &Address,
    last_seq: i64,
) -> R<()> {
    conn.prepare_cached(
        "INSERT INTO members (conversation, user_id, address, delivered_seq, read_seq)
         VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (conversation, user_id) DO UPDATE SET address = excluded.address",
    )?
    .execute(params![
        blob(&conversation.0),
        user.0,
        address.as_str(),
        last_seq
    ])
    .map_err(|e| Fail::or_not_found(e, || format!("account {}", user.0)))?;
    Ok(())
}

pub(super) fn advance_cursors(
    conn: &Connection,
    state: &mut WriterState,
    updates: &[CursorUpdate],
) -> R<()> {
    for u in updates {
        // A cursor never passes the conversation's last message: a client acknowledging a
        // number that does not exist yet must not swallow the messages that will get it.
        let Some(last) = state.last_seq(conn, u.conversation)? else {
            continue;
        };
        let read = u.read.map_or(0, |s| s.0).min(last);
        // Reading a message implies it was delivered.
        let delivered = u.delivered.map_or(0, |s| s.0).max(read).min(last);
        conn.prepare_cached(
            "UPDATE members SET delivered_seq = max(delivered_seq, ?3), read_seq = max(read_seq, ?4)
             WHERE conversation = ?1 AND user_id = ?2",
        )?
        .execute(params![blob(&u.conversation.0), u.user.0, delivered, read])?;
    }
    Ok(())
}

pub(super) fn replay(
    conn: &Connection,
    user: UserId,
    after: Pos,
    limit: usize,
) -> R<Vec<Replayed>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    // One read transaction, so that messages and account events come from the same snapshot
    // and no position can be skipped between the two queries.
    let tx = conn.unchecked_transaction()?;
    let mut messages = Vec::new();
    for conversation in member_conversations(&tx, user)? {
        let Some(first) = first_seq_after(&tx, &conversation, after.0)? else {
            continue;
        };
        let mut stmt = tx.prepare_cached(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE conversation = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3"
        ))?;
        messages.extend(collect(
            stmt.query_map(params![conversation, first, sql_limit(limit)], message)?,
        )?);
    }
    let mut stmt = tx.prepare_cached(
        "SELECT pos, user_id, at, payload FROM account_events
         WHERE user_id = ?1 AND pos > ?2 ORDER BY pos LIMIT ?3",
    )?;
    let events =
        collect(stmt.query_map(params![user.0, after.0, sql_limit(limit)], account_event)?)?;
    drop(stmt);
    tx.finish()?;
    Ok(merge_replay(messages, events, limit))
}

fn member_conversations(conn: &Connection, user: UserId) -> R<Vec<Vec<u8>>> {
    let mut stmt = conn.prepare_cached("SELECT conversation FROM members WHERE user_id = ?1")?;
    let ids = stmt
        .query_map([user.0], |row| row.get::<_, Vec<u8>>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ids)
}

/// The first sequence number in a conversation whose message has a position above `after`.
///
/// Within a conversation positions grow with sequence numbers (the single writer assigns both
/// in the same order), so the messages past `after` are a tail of the (conversation, seq)
/// index. Its start is found by bisecting on sequence numbers, each probe one index seek;
/// this spares the hot insert path a separate (conversation, pos) index. Most conversations
/// have nothing new and cost a single probe.
pub(super) fn first_seq_after(
    conn: &Connection,
    conversation: &[u8],
    after: i64,
) -> R<Option<i64>> {
    let mut newest = conn.prepare_cached(
        "SELECT seq, pos FROM messages WHERE conversation = ?1 ORDER BY seq DESC LIMIT 1",
    )?;
    let Some((high_seq, high_pos)) = newest
        .query_row([conversation], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
        })
        .optional()?
    else {
        return Ok(None);
    };
    if high_pos <= after {
        return Ok(None);
    }
    // The first message at or after a sequence number (numbers may have gaps where messages
    // were deleted).
    let mut at_or_after = conn.prepare_cached(
        "SELECT seq, pos FROM messages WHERE conversation = ?1 AND seq >= ?2 ORDER BY seq LIMIT 1",
    )?;
    let mut probe = |seq: i64| -> R<(i64, i64)> {
        let found = at_or_after
            .query_row(params![conversation, seq], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        // The newest message exists and is at or after any number up to its own.
        found.ok_or_else(|| {
            StoreError::Corrupt("a conversation's messages changed during a read".into()).into()
        })
    };
    let (low_seq, low_pos) = probe(i64::MIN)?;
    if low_pos > after {
        return Ok(Some(low_seq));
    }
    // Invariant: the first message at or after `low` is at or before `after`, the first at or
    // after `high` is past it; `found` is the sequence number of the latter.
    let (mut low, mut high, mut found) = (low_seq, high_seq, high_seq);
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        let (seq, pos) = probe(mid)?;
        if pos > after {
            high = mid;
            found = seq;
        } else {
            low = mid;
        }
    }
    Ok(Some(found))
}

pub(super) fn undelivered(conn: &Connection, user: UserId, limit: usize) -> R<Vec<StoredMessage>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let tx = conn.unchecked_transaction()?;
    let cursors: Vec<(Vec<u8>, i64)> = tx
        .prepare_cached("SELECT conversation, delivered_seq FROM members WHERE user_id = ?1")?
        .query_map([user.0], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut messages = Vec::new();
    let mut stmt = tx.prepare_cached(concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE conversation = ?1 AND seq > ?2 AND sender <> ?3
          ORDER BY seq LIMIT ?4"
    ))?;
    for (conversation, delivered) in cursors {
        messages.extend(collect(stmt.query_map(
            params![conversation, delivered, user.0, sql_limit(limit)],
            message,
        )?)?);
    }
    drop(stmt);
    tx.finish()?;
    messages.sort_by_key(|m| m.pos);
    messages.truncate(limit);
    Ok(messages)
}

pub(super) fn history(
    conn: &Connection,
    conversation: ConversationId,
    before: Option<Seq>,
    limit: usize,
) -> R<Vec<StoredMessage>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE conversation = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
    ))?;
    let before = before.map_or(i64::MAX, |s| s.0);
    let mut messages = collect(stmt.query_map(
        params![blob(&conversation.0), before, sql_limit(limit)],
        message,
    )?)?;
    messages.reverse();
    Ok(messages)
}

// --- contacts and blocks ---

pub(super) fn contacts_of(conn: &Connection, user: UserId) -> R<Vec<Contact>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        contact_columns!(),
        " FROM contacts WHERE owner = ?1 ORDER BY peer"
    ))?;
    collect(stmt.query_map([user.0], contact)?)
}

pub(super) fn contact_of(conn: &Connection, owner: UserId, peer: &Address) -> R<Option<Contact>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        contact_columns!(),
        " FROM contacts WHERE owner = ?1 AND peer = ?2"
    ))?;
    one(stmt
        .query_row(params![owner.0, peer.as_str()], contact)
        .optional()?)
}

pub(super) fn is_blocked(conn: &Connection, owner: UserId, peer: &Address) -> R<bool> {
    let blocked = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM blocks WHERE owner = ?1 AND peer = ?2)")?
        .query_row(params![owner.0, peer.as_str()], |row| row.get(0))?;
    Ok(blocked)
}

pub(super) fn blocks_of(conn: &Connection, owner: UserId) -> R<Vec<Address>> {
    let mut stmt = conn.prepare_cached("SELECT peer FROM blocks WHERE owner = ?1 ORDER BY peer")?;
    collect(stmt.query_map([owner.0], |row| {
        Ok(crate::common::parse_address(&row.get::<_, String>(0)?))
    })?)
}

// --- personal items ---

pub(super) fn put_personal_item(
    conn: &Connection,
    owner: UserId,
    item: &PersonalItem,
    keep: usize,
) -> R<()> {
    conn.prepare_cached(
        "INSERT INTO personal_items (owner, node, item, payload, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (owner, node, item) DO UPDATE
         SET payload = excluded.payload, updated_at = excluded.updated_at",
    )?
    .execute(rusqlite::params![
        owner.0,
        item.node,
        item.id,
        item.payload,
        item.updated_at
    ])?;
    conn.prepare_cached(
        "DELETE FROM personal_items WHERE owner = ?1 AND node = ?2 AND item NOT IN
           (SELECT item FROM personal_items WHERE owner = ?1 AND node = ?2
            ORDER BY updated_at DESC, item DESC LIMIT ?3)",
    )?
    .execute(rusqlite::params![owner.0, item.node, keep as i64])?;
    Ok(())
}

pub(super) fn personal_items(
    conn: &Connection,
    owner: UserId,
    node: &str,
    limit: usize,
) -> R<Vec<PersonalItem>> {
    let mut stmt = conn.prepare_cached(
        "SELECT node, item, payload, updated_at FROM personal_items
         WHERE owner = ?1 AND node = ?2 ORDER BY updated_at DESC, item DESC LIMIT ?3",
    )?;
    collect(
        stmt.query_map(rusqlite::params![owner.0, node, limit as i64], |row| {
            Ok(Ok(PersonalItem {
                node: row.get(0)?,
                id: row.get(1)?,
                payload: row.get(2)?,
                updated_at: row.get(3)?,
            }))
        })?,
    )
}

pub(super) fn delete_personal_item(
    conn: &Connection,
    owner: UserId,
    node: &str,
    item: Option<&str>,
) -> R<bool> {
    let deleted = match item {
        Some(item) => conn
            .prepare_cached(
                "DELETE FROM personal_items WHERE owner = ?1 AND node = ?2 AND item = ?3",
            )?
            .execute(rusqlite::params![owner.0, node, item])?,
        None => conn
            .prepare_cached("DELETE FROM personal_items WHERE owner = ?1 AND node = ?2")?
            .execute(rusqlite::params![owner.0, node])?,
    };
    Ok(deleted > 0)
}

// --- conversations ---

pub(super) fn conversation_by_id(conn: &Connection, id: ConversationId) -> R<Option<Conversation>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        conversation_columns!(),
        " FROM conversations c WHERE c.id = ?1"
    ))?;
    one(stmt.query_row([blob(&id.0)], conversation).optional()?)
}

pub(super) fn members(conn: &Connection, id: ConversationId) -> R<Vec<Member>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        member_columns!(),
        " FROM members mb WHERE mb.conversation = ?1 ORDER BY mb.address"
    ))?;
    collect(stmt.query_map([blob(&id.0)], member)?)
}

pub(super) fn conversations_of(conn: &Connection, user: UserId) -> R<Vec<ConversationEntry>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        conversation_columns!(),
        ", ",
        member_columns!(),
        ", max(c.seq_floor, coalesce((SELECT m.seq FROM messages m WHERE m.conversation = c.id
                                      ORDER BY m.seq DESC LIMIT 1), 0))
         FROM members mb JOIN conversations c ON c.id = mb.conversation
         WHERE mb.user_id = ?1
         ORDER BY c.created_at, c.id"
    ))?;
    collect(stmt.query_map([user.0], |row| {
        let conversation = conversation_at(row, 0)?;
        let me = member_at(row, 6)?;
        let last: i64 = row.get(10)?;
        Ok((|| {
            Ok(ConversationEntry {
                conversation: conversation?,
                me: me?,
                last_seq: Seq(last),
            })
        })())
    })?)
}

pub(super) fn share_group(conn: &Connection, a: UserId, b: UserId) -> R<bool> {
    let shared = conn
        .prepare_cached(
            "SELECT EXISTS (
                 SELECT 1 FROM members x
                 JOIN members y ON y.conversation = x.conversation AND y.user_id = ?2
                 JOIN conversations c ON c.id = x.conversation AND c.kind = 'group'
                 WHERE x.user_id = ?1)",
        )?
        .query_row(params![a.0, b.0], |row| row.get(0))?;
    Ok(shared)
}

pub(super) fn has_written(
    conn: &Connection,
    author: UserId,
    conversation: ConversationId,
) -> R<bool> {
    // There is no (sender, conversation) index (see the schema): this walks the
    // conversation's messages until it finds one of the author's. The unary `+` keeps SQLite
    // from walking all of the author's messages instead, which are at least as many.
    let written = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE conversation = ?2 AND +sender = ?1)",
        )?
        .query_row(params![author.0, blob(&conversation.0)], |row| row.get(0))?;
    Ok(written)
}

// --- sessions ---

pub(super) fn put_session(conn: &Connection, s: &SessionRecord) -> R<()> {
    conn.prepare_cached(concat!(
        "INSERT INTO sessions (",
        session_columns!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (id) DO UPDATE SET
           user_id = excluded.user_id, login = excluded.login, node = excluded.node,
           created_at = excluded.created_at, last_seen = excluded.last_seen,
           presence_show = excluded.presence_show, presence_status = excluded.presence_status,
           acked_pos = excluded.acked_pos"
    ))?
    .execute(params![
        s.id.0,
        s.user.0,
        s.login,
        s.node,
        s.created_at,
        s.last_seen,
        s.presence.show.as_str(),
        s.presence.status,
        s.acked.0,
    ])
    .map_err(|e| Fail::or_not_found(e, || format!("account {}", s.user.0)))?;
    Ok(())
}

pub(super) fn session_by_id(conn: &Connection, id: &str) -> R<Option<SessionRecord>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE id = ?1"
    ))?;
    one(stmt.query_row([id], session).optional()?)
}

pub(super) fn sessions_of(conn: &Connection, user: UserId) -> R<Vec<SessionRecord>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE user_id = ?1 ORDER BY created_at, id"
    ))?;
    collect(stmt.query_map([user.0], session)?)
}

pub(super) fn touch_session(conn: &Connection, id: &str, last_seen: Millis, acked: Pos) -> R<()> {
    conn.prepare_cached(
        "UPDATE sessions SET last_seen = max(last_seen, ?2), acked_pos = max(acked_pos, ?3)
         WHERE id = ?1",
    )?
    .execute(params![id, last_seen, acked.0])?;
    Ok(())
}

pub(super) fn set_session_presence(conn: &Connection, id: &str, presence: &Presence) -> R<()> {
    conn.prepare_cached(
        "UPDATE sessions SET presence_show = ?2, presence_status = ?3 WHERE id = ?1",
    )?
    .execute(params![id, presence.show.as_str(), presence.status])?;
    Ok(())
}

pub(super) fn delete_session(conn: &Connection, id: &str) -> R<()> {
    conn.prepare_cached("DELETE FROM sessions WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

pub(super) fn expire_sessions(conn: &Connection, before: Millis) -> R<Vec<SessionRecord>> {
    let mut stmt = conn.prepare_cached(concat!(
        "DELETE FROM sessions WHERE last_seen < ?1 RETURNING ",
        session_columns!()
    ))?;
    let mut expired = collect(stmt.query_map([before], session)?)?;
    expired.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(expired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::{SqliteOptions, configure_writer, migrate, open_connection};

    #[test]
    fn the_first_message_past_a_position_is_found_despite_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(&dir.path().join("bisect.sqlite")).unwrap();
        configure_writer(&conn, &SqliteOptions::default()).unwrap();
        migrate(&mut conn).unwrap();
        let conversation = uuid::Uuid::from_u128(7);
        conn.execute_batch(
            "INSERT INTO accounts (id, address, realm, scram_sha1, scram_sha256, visibility,
                                   message_policy, created_at)
             VALUES (1, 'a@b.example', 'b.example', '', '', 'contacts', 'contacts', 0)",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO conversations (id, kind, confidential, created_by, created_at)
             VALUES (?1, 'group', 0, 'a@b.example', 0)",
            [blob(&conversation)],
        )
        .unwrap();
        // Sequence numbers with holes (deleted messages) and positions with holes (other
        // conversations' messages), growing together.
        let mut rows = Vec::new();
        let (mut seq, mut pos) = (0, 0);
        for i in 0..40i64 {
            seq += 1 + (i % 3) * (i % 2);
            pos += 1 + (i * 5) % 7;
            rows.push((seq, pos));
            conn.execute(
                "INSERT INTO messages (pos, id, conversation, seq, sender, sender_address,
                                       client_id, body, sent_at)
                 VALUES (?1, ?2, ?3, ?4, 1, 'a@b.example', ?5, '', 0)",
                params![
                    pos,
                    blob(&uuid::Uuid::from_u128(i as u128)),
                    blob(&conversation),
                    seq,
                    i.to_string()
                ],
            )
            .unwrap();
        }
        for after in -1..=pos + 1 {
            let expected = rows.iter().find(|(_, p)| *p > after).map(|(s, _)| *s);
            let found = first_seq_after(&conn, blob(&conversation), after).unwrap();
            assert_eq!(found, expected, "after position {after}");
        }
        let empty = uuid::Uuid::from_u128(8);
        assert_eq!(first_seq_after(&conn, blob(&empty), 0).ok().flatten(), None);
    }
}
