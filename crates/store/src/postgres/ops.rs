//! The SQL of the PostgreSQL backend. Functions taking a `PgWriter` run on the journal
//! writer's client; the others on any pooled client, each as one statement (so each is atomic
//! without an explicit transaction and safe to abandon half-way).

use switchboard_core::address::{Address, Realm};
use switchboard_core::model::*;
use switchboard_core::store::{StoreError, StoreResult};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Fail, PgConn, PgWriter, R, col};
use crate::common::{
    decode_scram, encode_scram, event_from_json, event_to_json, merge_replay, parse_address,
    parse_name, sql_limit,
};

// --- row mappers ---

macro_rules! account_columns {
    () => {
        "id, address, scram_sha1, scram_sha256, visibility, message_policy, display_name, created_at"
    };
}

fn account(row: &Row) -> R<Account> {
    Ok(Account {
        id: UserId(col(row, 0)?),
        address: parse_address(col(row, 1)?)?,
        credentials: Credentials {
            scram_sha1: decode_scram(col(row, 2)?)?,
            scram_sha256: decode_scram(col(row, 3)?)?,
        },
        settings: AccountSettings {
            visibility: parse_name(col(row, 4)?, Visibility::parse, "visibility")?,
            message_policy: parse_name(col(row, 5)?, MessagePolicy::parse, "message policy")?,
            display_name: col(row, 6)?,
        },
        created_at: col(row, 7)?,
    })
}

macro_rules! login_columns {
    () => {
        "id, user_id, kind, token_hash, csrf_hash, created_at, last_used, user_agent"
    };
}

fn login(row: &Row) -> R<LoginRecord> {
    Ok(LoginRecord {
        id: col(row, 0)?,
        user: UserId(col(row, 1)?),
        kind: parse_name(col(row, 2)?, LoginKind::parse, "login kind")?,
        token_hash: col(row, 3)?,
        csrf_hash: col(row, 4)?,
        created_at: col(row, 5)?,
        last_used: col(row, 6)?,
        user_agent: col(row, 7)?,
    })
}

macro_rules! contact_columns {
    () => {
        "owner, peer, sub_to, sub_from, name, chosen"
    };
}

fn contact(row: &Row) -> R<Contact> {
    Ok(Contact {
        owner: UserId(col(row, 0)?),
        peer: parse_address(col(row, 1)?)?,
        to: parse_name(col(row, 2)?, SubState::parse, "subscription state")?,
        from: parse_name(col(row, 3)?, SubState::parse, "subscription state")?,
        name: col(row, 4)?,
        chosen: col(row, 5)?,
    })
}

macro_rules! conversation_columns {
    () => {
        "c.id, c.kind, c.title, c.confidential, c.created_by, c.created_at"
    };
}

fn conversation_at(row: &Row, at: usize) -> R<Conversation> {
    Ok(Conversation {
        id: ConversationId(col(row, at)?),
        kind: parse_name(
            col(row, at + 1)?,
            ConversationKind::parse,
            "conversation kind",
        )?,
        title: col(row, at + 2)?,
        confidential: col(row, at + 3)?,
        created_by: parse_address(col(row, at + 4)?)?,
        created_at: col(row, at + 5)?,
    })
}

macro_rules! member_columns {
    () => {
        "mb.user_id, mb.address, mb.delivered_seq, mb.read_seq"
    };
}

fn member_at(row: &Row, at: usize) -> R<Member> {
    Ok(Member {
        user: UserId(col(row, at)?),
        address: parse_address(col(row, at + 1)?)?,
        delivered: Seq(col(row, at + 2)?),
        read: Seq(col(row, at + 3)?),
    })
}

macro_rules! message_columns {
    () => {
        "m.pos, m.id, m.conversation, m.seq, m.sender_address, m.client_id, m.body, m.sent_at"
    };
}

fn message(row: &Row) -> R<StoredMessage> {
    Ok(StoredMessage {
        pos: Pos(col(row, 0)?),
        id: MessageId(col(row, 1)?),
        conversation: ConversationId(col(row, 2)?),
        seq: Seq(col(row, 3)?),
        sender: parse_address(col(row, 4)?)?,
        client_id: col(row, 5)?,
        body: col(row, 6)?,
        sent_at: col(row, 7)?,
        to_endpoint: None,
        from_endpoint: None,
        private: false,
    })
}

macro_rules! session_columns {
    () => {
        "id, user_id, login, node, created_at, last_seen, presence_show, presence_status, acked_pos"
    };
}

fn session(row: &Row) -> R<SessionRecord> {
    Ok(SessionRecord {
        id: SessionId(col(row, 0)?),
        user: UserId(col(row, 1)?),
        login: col(row, 2)?,
        node: col(row, 3)?,
        created_at: col(row, 4)?,
        last_seen: col(row, 5)?,
        presence: Presence {
            show: parse_name(col(row, 6)?, Availability::parse, "availability")?,
            status: col(row, 7)?,
        },
        acked: Pos(col(row, 8)?),
    })
}

fn all<T>(rows: Vec<Row>, map: fn(&Row) -> R<T>) -> R<Vec<T>> {
    rows.iter().map(map).collect()
}

// --- counters ---

pub(super) async fn load_last_pos(conn: &PgConn) -> R<i64> {
    let row = conn
        .query_one(
            "SELECT GREATEST(
                 COALESCE((SELECT MAX(pos) FROM messages), 0),
                 COALESCE((SELECT MAX(pos) FROM account_events), 0),
                 COALESCE((SELECT value FROM counters WHERE name = 'pos_floor'), 0))",
            &[],
        )
        .await?;
    col(&row, 0)
}

pub(super) async fn load_last_seq(conn: &PgConn, id: ConversationId) -> R<Option<i64>> {
    let row = conn
        .query_opt(
            "SELECT GREATEST(c.seq_floor, COALESCE(
                 (SELECT m.seq FROM messages m WHERE m.conversation = c.id
                  ORDER BY m.seq DESC LIMIT 1), 0))
             FROM conversations c WHERE c.id = $1",
            &[&id.0],
        )
        .await?;
    row.map(|r| col(&r, 0)).transpose()
}

// --- accounts ---

pub(super) async fn create_account(conn: &PgConn, new: &NewAccount) -> R<Account> {
    let created_at = now_millis();
    let row = conn
        .query_one(
            "INSERT INTO accounts (address, realm, scram_sha1, scram_sha256, visibility,
                                   message_policy, display_name, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[
                &new.address.as_str(),
                &new.address.realm_str(),
                &encode_scram(&new.credentials.scram_sha1),
                &encode_scram(&new.credentials.scram_sha256),
                &new.settings.visibility.as_str(),
                &new.settings.message_policy.as_str(),
                &new.settings.display_name,
                &created_at,
            ],
        )
        .await
        .map_err(|e| {
            if e.is_unique_violation() {
                Fail::Store(StoreError::AlreadyExists(format!(
                    "the account {}",
                    new.address
                )))
            } else {
                e
            }
        })?;
    Ok(Account {
        id: UserId(col(&row, 0)?),
        address: new.address.clone(),
        credentials: new.credentials.clone(),
        settings: new.settings.clone(),
        created_at,
    })
}

pub(super) async fn account_by_id(conn: &PgConn, id: UserId) -> R<Option<Account>> {
    conn.query_opt(
        concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts WHERE id = $1"
        ),
        &[&id.0],
    )
    .await?
    .as_ref()
    .map(account)
    .transpose()
}

pub(super) async fn account_by_address(conn: &PgConn, address: &Address) -> R<Option<Account>> {
    conn.query_opt(
        concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts WHERE address = $1"
        ),
        &[&address.as_str()],
    )
    .await?
    .as_ref()
    .map(account)
    .transpose()
}

pub(super) async fn list_accounts(conn: &PgConn, realm: Option<&Realm>) -> R<Vec<Account>> {
    let rows = match realm {
        Some(realm) => {
            conn.query(
                concat!(
                    "SELECT ",
                    account_columns!(),
                    " FROM accounts WHERE realm = $1 ORDER BY address"
                ),
                &[&realm.as_str()],
            )
            .await?
        }
        None => {
            conn.query(
                concat!(
                    "SELECT ",
                    account_columns!(),
                    " FROM accounts ORDER BY address"
                ),
                &[],
            )
            .await?
        }
    };
    all(rows, account)
}

pub(super) async fn set_credentials(
    conn: &PgConn,
    user: UserId,
    credentials: &Credentials,
) -> R<()> {
    let changed = conn
        .execute(
            "UPDATE accounts SET scram_sha1 = $2, scram_sha256 = $3 WHERE id = $1",
            &[
                &user.0,
                &encode_scram(&credentials.scram_sha1),
                &encode_scram(&credentials.scram_sha256),
            ],
        )
        .await?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("account {}", user.0)).into());
    }
    Ok(())
}

pub(super) async fn delete_account(w: &mut PgWriter, user: UserId) -> R<bool> {
    let before = w.last_assigned() + 1;
    w.conn().batch("BEGIN").await?;
    match delete_account_in_transaction(w, user).await {
        Ok(found) => {
            w.conn().batch("COMMIT").await?;
            w.forget_conversations();
            Ok(found)
        }
        Err(e) => {
            w.recover(before).await;
            Err(e)
        }
    }
}

async fn delete_account_in_transaction(w: &mut PgWriter, user: UserId) -> R<bool> {
    let conn = w.conn();
    let Some(row) = conn
        .query_opt(
            "SELECT address FROM accounts WHERE id = $1 FOR UPDATE",
            &[&user.0],
        )
        .await?
    else {
        return Ok(false);
    };
    let address: String = col(&row, 0)?;
    // Journal rows are about to disappear, possibly the newest ones: remember the highest
    // position handed out so that positions keep growing after a restart.
    conn.execute(
        "INSERT INTO counters (name, value) VALUES ('pos_floor', $1)
         ON CONFLICT (name) DO UPDATE SET value = GREATEST(counters.value, excluded.value)",
        &[&w.last_assigned()],
    )
    .await?;
    // Likewise for the groups they wrote in: their messages go, the numbers stay used.
    conn.execute(
        "UPDATE conversations c SET seq_floor = GREATEST(c.seq_floor, COALESCE(
             (SELECT m.seq FROM messages m WHERE m.conversation = c.id
              ORDER BY m.seq DESC LIMIT 1), 0))
         WHERE c.id IN (SELECT DISTINCT conversation FROM messages WHERE sender = $1)",
        &[&user.0],
    )
    .await?;
    // Their direct conversations go entirely, with both sides' messages.
    conn.execute(
        "DELETE FROM conversations WHERE kind = 'direct'
           AND id IN (SELECT conversation FROM members WHERE user_id = $1)",
        &[&user.0],
    )
    .await?;
    conn.execute("DELETE FROM messages WHERE sender = $1", &[&user.0])
        .await?;
    conn.execute("DELETE FROM members WHERE user_id = $1", &[&user.0])
        .await?;
    // Other people's contact entries for this address: the person is gone.
    conn.execute("DELETE FROM contacts WHERE peer = $1", &[&address])
        .await?;
    conn.execute("DELETE FROM contacts WHERE owner = $1", &[&user.0])
        .await?;
    conn.execute("DELETE FROM blocks WHERE owner = $1", &[&user.0])
        .await?;
    conn.execute("DELETE FROM logins WHERE user_id = $1", &[&user.0])
        .await?;
    conn.execute("DELETE FROM sessions WHERE user_id = $1", &[&user.0])
        .await?;
    conn.execute("DELETE FROM account_events WHERE user_id = $1", &[&user.0])
        .await?;
    conn.execute("DELETE FROM accounts WHERE id = $1", &[&user.0])
        .await?;
    Ok(true)
}

// --- logins ---

pub(super) async fn create_login(conn: &PgConn, login: &LoginRecord) -> R<()> {
    conn.execute(
        concat!(
            "INSERT INTO logins (",
            login_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ),
        &[
            &login.id,
            &login.user.0,
            &login.kind.as_str(),
            &login.token_hash,
            &login.csrf_hash,
            &login.created_at,
            &login.last_used,
            &login.user_agent,
        ],
    )
    .await
    .map_err(|e| {
        if e.is_unique_violation() {
            Fail::Store(StoreError::AlreadyExists(format!("the login {}", login.id)))
        } else {
            e.or_not_found(|| format!("account {}", login.user.0))
        }
    })?;
    Ok(())
}

pub(super) async fn login_by_token_hash(conn: &PgConn, hash: &[u8]) -> R<Option<LoginRecord>> {
    conn.query_opt(
        concat!(
            "SELECT ",
            login_columns!(),
            " FROM logins WHERE token_hash = $1"
        ),
        &[&hash],
    )
    .await?
    .as_ref()
    .map(login)
    .transpose()
}

pub(super) async fn logins_of(conn: &PgConn, user: UserId) -> R<Vec<LoginRecord>> {
    let rows = conn
        .query(
            concat!(
                "SELECT ",
                login_columns!(),
                " FROM logins WHERE user_id = $1 ORDER BY created_at, id"
            ),
            &[&user.0],
        )
        .await?;
    all(rows, login)
}

pub(super) async fn touch_login(conn: &PgConn, id: &str, at: Millis) -> R<()> {
    conn.execute(
        "UPDATE logins SET last_used = GREATEST(last_used, $2) WHERE id = $1",
        &[&id, &at],
    )
    .await?;
    Ok(())
}

pub(super) async fn delete_login(conn: &PgConn, id: &str) -> R<bool> {
    Ok(conn
        .execute("DELETE FROM logins WHERE id = $1", &[&id])
        .await?
        > 0)
}

pub(super) async fn delete_logins_of(conn: &PgConn, user: UserId) -> R<()> {
    conn.execute("DELETE FROM logins WHERE user_id = $1", &[&user.0])
        .await?;
    Ok(())
}

// --- the journal ---

/// What one entry did: committed work, a failure that wrote nothing (the batch goes on), or
/// a failure after writing (the transaction must be rolled back).
enum EntryError {
    Clean(StoreError),
    Dirty(Fail),
}

impl From<Fail> for EntryError {
    fn from(e: Fail) -> Self {
        EntryError::Dirty(e)
    }
}

/// Commits a batch in one transaction. Savepoints would cost PostgreSQL round trips on every
/// entry, so the common path has none: an entry that fails after writing rolls the whole
/// transaction back, and then every entry is retried alone in its own transaction, so the
/// failure stays with its entry.
pub(super) async fn append(
    w: &mut PgWriter,
    batch: &[JournalEntry],
) -> R<Vec<StoreResult<JournalOutcome>>> {
    let before = w.last_assigned() + 1;
    let first_failure = match append_in_transaction(w, batch).await {
        Ok(results) => return Ok(results),
        Err(e) => e,
    };
    w.recover(before).await;
    if w.is_closed() {
        return Err(first_failure);
    }
    if batch.len() == 1 {
        return Ok(vec![Err(first_failure.into_store())]);
    }
    tracing::warn!(
        error = %first_failure.into_store(),
        entries = batch.len(),
        "a journal batch failed; retrying each entry alone"
    );
    let mut results = Vec::with_capacity(batch.len());
    for entry in batch {
        let before = w.last_assigned() + 1;
        match append_in_transaction(w, std::slice::from_ref(entry)).await {
            Ok(mut one) => results.push(one.pop().unwrap_or_else(|| {
                Err(StoreError::Unavailable(
                    "an entry produced no result".into(),
                ))
            })),
            Err(e) => {
                w.recover(before).await;
                if w.is_closed() {
                    return Err(e);
                }
                results.push(Err(e.into_store()));
            }
        }
    }
    Ok(results)
}

async fn append_in_transaction(
    w: &mut PgWriter,
    batch: &[JournalEntry],
) -> R<Vec<StoreResult<JournalOutcome>>> {
    w.conn().batch("BEGIN").await?;
    let mut results = Vec::with_capacity(batch.len());
    for entry in batch {
        let outcome = match entry {
            JournalEntry::Message(message) => append_message(w, message)
                .await
                .map(JournalOutcome::Message),
            JournalEntry::Changes { changes, events } => apply_changes(w, changes, events)
                .await
                .map(JournalOutcome::Changes)
                .map_err(EntryError::Dirty),
        };
        match outcome {
            Ok(outcome) => results.push(Ok(outcome)),
            Err(EntryError::Clean(e)) => results.push(Err(e)),
            Err(EntryError::Dirty(e)) => return Err(e),
        }
    }
    w.conn().batch("COMMIT").await?;
    Ok(results)
}

async fn append_message(w: &mut PgWriter, new: &NewMessage) -> Result<Appended, EntryError> {
    // Nothing is written for a message to a conversation that does not exist, so it fails
    // alone without disturbing the transaction.
    let Some(last) = w.last_seq(new.conversation).await? else {
        return Err(EntryError::Clean(StoreError::NotFound(format!(
            "conversation {}",
            new.conversation
        ))));
    };
    let seq = last + 1;
    let pos = w.peek_pos();
    // A resend (same sender and client id) inserts nothing; the earlier message is returned.
    let inserted = w
        .conn()
        .query_opt(
            "INSERT INTO messages (pos, id, conversation, seq, sender, sender_address, client_id,
                                   body, sent_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (sender, client_id) DO NOTHING RETURNING pos",
            &[
                &pos.0,
                &new.id.0,
                &new.conversation.0,
                &seq,
                &new.sender.0,
                &new.sender_address.as_str(),
                &new.client_id,
                &new.body,
                &new.sent_at,
            ],
        )
        .await
        .map_err(|e| e.or_not_found(|| format!("account {}", new.sender.0)))?;
    if inserted.is_none() {
        let row = w
            .conn()
            .query_one(
                concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages m WHERE m.sender = $1 AND m.client_id = $2"
                ),
                &[&new.sender.0, &new.client_id],
            )
            .await?;
        return Ok(Appended {
            message: message(&row)?,
            duplicate: true,
        });
    }
    w.take_pos();
    w.set_last_seq(new.conversation, seq);
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

async fn apply_changes(
    w: &mut PgWriter,
    changes: &[Change],
    events: &[(UserId, AccountEvent)],
) -> R<Vec<StoredAccountEvent>> {
    for change in changes {
        apply_change(w, change).await?;
    }
    let at = now_millis();
    let mut stored = Vec::with_capacity(events.len());
    for (user, event) in events {
        let pos = w.take_pos();
        w.conn()
            .execute(
                "INSERT INTO account_events (pos, user_id, at, payload)
                 VALUES ($1, $2, $3, $4::text::jsonb)",
                &[&pos.0, &user.0, &at, &event_to_json(event)?],
            )
            .await
            .map_err(|e| e.or_not_found(|| format!("account {}", user.0)))?;
        stored.push(StoredAccountEvent {
            pos,
            user: *user,
            at,
            event: event.clone(),
        });
    }
    Ok(stored)
}

async fn apply_change(w: &mut PgWriter, change: &Change) -> R<()> {
    match change {
        Change::PutContact(c) => {
            w.conn()
                .execute(
                    concat!(
                        "INSERT INTO contacts (",
                        contact_columns!(),
                        ") VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (owner, peer) DO UPDATE SET
                           sub_to = excluded.sub_to, sub_from = excluded.sub_from,
                           name = excluded.name, chosen = excluded.chosen"
                    ),
                    &[
                        &c.owner.0,
                        &c.peer.as_str(),
                        &c.to.as_str(),
                        &c.from.as_str(),
                        &c.name,
                        &c.chosen,
                    ],
                )
                .await
                .map_err(|e| e.or_not_found(|| format!("account {}", c.owner.0)))?;
        }
        Change::DeleteContact { owner, peer } => {
            w.conn()
                .execute(
                    "DELETE FROM contacts WHERE owner = $1 AND peer = $2",
                    &[&owner.0, &peer.as_str()],
                )
                .await?;
        }
        Change::Block { owner, peer } => {
            w.conn()
                .execute(
                    "INSERT INTO blocks (owner, peer) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&owner.0, &peer.as_str()],
                )
                .await
                .map_err(|e| e.or_not_found(|| format!("account {}", owner.0)))?;
        }
        Change::Unblock { owner, peer } => {
            w.conn()
                .execute(
                    "DELETE FROM blocks WHERE owner = $1 AND peer = $2",
                    &[&owner.0, &peer.as_str()],
                )
                .await?;
        }
        Change::CreateConversation {
            conversation: c,
            members,
        } => {
            w.conn()
                .execute(
                    "INSERT INTO conversations (id, kind, title, confidential, created_by, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                    &[
                        &c.id.0,
                        &c.kind.as_str(),
                        &c.title,
                        &c.confidential,
                        &c.created_by.as_str(),
                        &c.created_at,
                    ],
                )
                .await?;
            let last = w.last_seq(c.id).await?.unwrap_or(0);
            for (user, address) in members {
                add_member(w.conn(), c.id, *user, address, last).await?;
            }
        }
        Change::AddMember {
            conversation,
            user,
            address,
        } => {
            let last = w
                .last_seq(*conversation)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("conversation {conversation}")))?;
            add_member(w.conn(), *conversation, *user, address, last).await?;
        }
        Change::RemoveMember { conversation, user } => {
            w.conn()
                .execute(
                    "DELETE FROM members WHERE conversation = $1 AND user_id = $2",
                    &[&conversation.0, &user.0],
                )
                .await?;
        }
        Change::PutSettings { user, settings } => {
            let changed = w
                .conn()
                .execute(
                    "UPDATE accounts SET visibility = $2, message_policy = $3, display_name = $4
                     WHERE id = $1",
                    &[
                        &user.0,
                        &settings.visibility.as_str(),
                        &settings.message_policy.as_str(),
                        &settings.display_name,
                    ],
                )
                .await?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("account {}", user.0)).into());
            }
        }
    }
    Ok(())
}

/// Adds a member whose cursors start at the conversation's current end (what was said before
/// they joined is neither undelivered nor unread for them). An existing member keeps theirs.
async fn add_member(
    conn: &PgConn,
    conversation: ConversationId,
    user: UserId,
    address: &Address,
    last_seq: i64,
) -> R<()> {
    conn.execute(
        "INSERT INTO members (conversation, user_id, address, delivered_seq, read_seq)
         VALUES ($1, $2, $3, $4, $4)
         ON CONFLICT (conversation, user_id) DO UPDATE SET address = excluded.address",
        &[&conversation.0, &user.0, &address.as_str(), &last_seq],
    )
    .await
    .map_err(|e| e.or_not_found(|| format!("account {}", user.0)))?;
    Ok(())
}

pub(super) async fn advance_cursors(conn: &PgConn, updates: &[CursorUpdate]) -> R<()> {
    let mut conversations: Vec<Uuid> = Vec::with_capacity(updates.len());
    let mut users: Vec<i64> = Vec::with_capacity(updates.len());
    let mut delivered: Vec<i64> = Vec::with_capacity(updates.len());
    let mut read: Vec<i64> = Vec::with_capacity(updates.len());
    for u in updates {
        let r = u.read.map_or(0, |s| s.0);
        conversations.push(u.conversation.0);
        users.push(u.user.0);
        // Reading a message implies it was delivered.
        delivered.push(u.delivered.map_or(0, |s| s.0).max(r));
        read.push(r);
    }
    // One statement for the whole batch. A cursor never passes the conversation's last
    // message: a client acknowledging a number that does not exist yet must not swallow the
    // messages that will get it.
    conn.execute(
        "UPDATE members AS mb
         SET delivered_seq = GREATEST(mb.delivered_seq, LEAST(u.dl, l.last_seq)),
             read_seq = GREATEST(mb.read_seq, LEAST(u.rd, l.last_seq))
         FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[])
                AS u(conversation, user_id, dl, rd)
         CROSS JOIN LATERAL (
             SELECT GREATEST(c.seq_floor, COALESCE(
                        (SELECT m.seq FROM messages m WHERE m.conversation = c.id
                         ORDER BY m.seq DESC LIMIT 1), 0)) AS last_seq
             FROM conversations c WHERE c.id = u.conversation
         ) AS l
         WHERE mb.conversation = u.conversation AND mb.user_id = u.user_id",
        &[&conversations, &users, &delivered, &read],
    )
    .await?;
    Ok(())
}

pub(super) async fn replay(
    conn: &PgConn,
    user: UserId,
    after: Pos,
    limit: usize,
) -> R<Vec<Replayed>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    // One statement, so that messages and account events come from one snapshot and no
    // position is skipped between them.
    let rows = conn
        .query(
            concat!(
                "SELECT * FROM (
                     SELECT ",
                message_columns!(),
                ", NULL::bigint AS at, NULL::text AS payload
                     FROM members mb CROSS JOIN LATERAL (
                         SELECT * FROM messages m
                         WHERE m.conversation = mb.conversation AND m.pos > $2
                         ORDER BY m.pos LIMIT $3) m
                     WHERE mb.user_id = $1
                     UNION ALL
                     SELECT e.pos, NULL, NULL, NULL, NULL, NULL, NULL, NULL, e.at, e.payload::text
                     FROM (SELECT * FROM account_events
                           WHERE user_id = $1 AND pos > $2 ORDER BY pos LIMIT $3) e
                 ) r ORDER BY pos LIMIT $3"
            ),
            &[&user.0, &after.0, &sql_limit(limit)],
        )
        .await?;
    let mut messages = Vec::new();
    let mut events = Vec::new();
    for row in &rows {
        let payload: Option<String> = col(row, 9)?;
        match payload {
            Some(payload) => events.push(StoredAccountEvent {
                pos: Pos(col(row, 0)?),
                user,
                at: col(row, 8)?,
                event: event_from_json(&payload)?,
            }),
            None => messages.push(message(row)?),
        }
    }
    Ok(merge_replay(messages, events, limit))
}

pub(super) async fn undelivered(
    conn: &PgConn,
    user: UserId,
    limit: usize,
) -> R<Vec<StoredMessage>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let rows = conn
        .query(
            concat!(
                "SELECT ",
                message_columns!(),
                " FROM members mb CROSS JOIN LATERAL (
                     SELECT * FROM messages m
                     WHERE m.conversation = mb.conversation AND m.seq > mb.delivered_seq
                       AND m.sender <> $1
                     ORDER BY m.seq LIMIT $2) m
                 WHERE mb.user_id = $1
                 ORDER BY m.pos LIMIT $2"
            ),
            &[&user.0, &sql_limit(limit)],
        )
        .await?;
    all(rows, message)
}

pub(super) async fn history(
    conn: &PgConn,
    conversation: ConversationId,
    before: Option<Seq>,
    limit: usize,
) -> R<Vec<StoredMessage>> {
    let rows = conn
        .query(
            concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages m WHERE m.conversation = $1 AND m.seq < $2
                  ORDER BY m.seq DESC LIMIT $3"
            ),
            &[
                &conversation.0,
                &before.map_or(i64::MAX, |s| s.0),
                &sql_limit(limit),
            ],
        )
        .await?;
    let mut messages = all(rows, message)?;
    messages.reverse();
    Ok(messages)
}

// --- contacts and blocks ---

pub(super) async fn contacts_of(conn: &PgConn, user: UserId) -> R<Vec<Contact>> {
    let rows = conn
        .query(
            concat!(
                "SELECT ",
                contact_columns!(),
                " FROM contacts WHERE owner = $1 ORDER BY peer"
            ),
            &[&user.0],
        )
        .await?;
    all(rows, contact)
}

pub(super) async fn contact_of(conn: &PgConn, owner: UserId, peer: &Address) -> R<Option<Contact>> {
    conn.query_opt(
        concat!(
            "SELECT ",
            contact_columns!(),
            " FROM contacts WHERE owner = $1 AND peer = $2"
        ),
        &[&owner.0, &peer.as_str()],
    )
    .await?
    .as_ref()
    .map(contact)
    .transpose()
}

pub(super) async fn is_blocked(conn: &PgConn, owner: UserId, peer: &Address) -> R<bool> {
    let row = conn
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM blocks WHERE owner = $1 AND peer = $2)",
            &[&owner.0, &peer.as_str()],
        )
        .await?;
    col(&row, 0)
}

pub(super) async fn put_personal_item(
    conn: &PgConn,
    owner: UserId,
    item: &PersonalItem,
    keep: usize,
) -> R<()> {
    conn.execute(
        "INSERT INTO personal_items (owner, node, item, payload, updated_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (owner, node, item) DO UPDATE
         SET payload = excluded.payload, updated_at = excluded.updated_at",
        &[
            &owner.0,
            &item.node,
            &item.id,
            &item.payload,
            &item.updated_at,
        ],
    )
    .await?;
    conn.execute(
        "DELETE FROM personal_items WHERE owner = $1 AND node = $2 AND item NOT IN
           (SELECT item FROM personal_items WHERE owner = $1 AND node = $2
            ORDER BY updated_at DESC, item DESC LIMIT $3)",
        &[&owner.0, &item.node, &(keep as i64)],
    )
    .await?;
    Ok(())
}

pub(super) async fn personal_items(
    conn: &PgConn,
    owner: UserId,
    node: &str,
    limit: usize,
) -> R<Vec<PersonalItem>> {
    let rows = conn
        .query(
            "SELECT node, item, payload, updated_at FROM personal_items
             WHERE owner = $1 AND node = $2 ORDER BY updated_at DESC, item DESC LIMIT $3",
            &[&owner.0, &node, &(limit as i64)],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(PersonalItem {
                node: col(row, 0)?,
                id: col(row, 1)?,
                payload: col(row, 2)?,
                updated_at: col(row, 3)?,
            })
        })
        .collect()
}

pub(super) async fn delete_personal_item(
    conn: &PgConn,
    owner: UserId,
    node: &str,
    item: Option<&str>,
) -> R<bool> {
    let deleted = match item {
        Some(item) => {
            conn.execute(
                "DELETE FROM personal_items WHERE owner = $1 AND node = $2 AND item = $3",
                &[&owner.0, &node, &item],
            )
            .await?
        }
        None => {
            conn.execute(
                "DELETE FROM personal_items WHERE owner = $1 AND node = $2",
                &[&owner.0, &node],
            )
            .await?
        }
    };
    Ok(deleted > 0)
}

pub(super) async fn blocks_of(conn: &PgConn, owner: UserId) -> R<Vec<Address>> {
    let rows = conn
        .query(
            "SELECT peer FROM blocks WHERE owner = $1 ORDER BY peer",
            &[&owner.0],
        )
        .await?;
    rows.iter()
        .map(|row| Ok(parse_address(col(row, 0)?)?))
        .collect()
}

// --- conversations ---

pub(super) async fn conversation_by_id(
    conn: &PgConn,
    id: ConversationId,
) -> R<Option<Conversation>> {
    conn.query_opt(
        concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM conversations c WHERE c.id = $1"
        ),
        &[&id.0],
    )
    .await?
    .as_ref()
    .map(|row| conversation_at(row, 0))
    .transpose()
}

pub(super) async fn members(conn: &PgConn, id: ConversationId) -> R<Vec<Member>> {
    let rows = conn
        .query(
            concat!(
                "SELECT ",
                member_columns!(),
                " FROM members mb WHERE mb.conversation = $1 ORDER BY mb.address"
            ),
            &[&id.0],
        )
        .await?;
    rows.iter().map(|row| member_at(row, 0)).collect()
}

pub(super) async fn conversations_of(conn: &PgConn, user: UserId) -> R<Vec<ConversationEntry>> {
    let rows = conn
        .query(
            concat!(
                "SELECT ",
                conversation_columns!(),
                ", ",
                member_columns!(),
                ", GREATEST(c.seq_floor, COALESCE((SELECT m.seq FROM messages m
                                                   WHERE m.conversation = c.id
                                                   ORDER BY m.seq DESC LIMIT 1), 0))
                 FROM members mb JOIN conversations c ON c.id = mb.conversation
                 WHERE mb.user_id = $1
                 ORDER BY c.created_at, c.id"
            ),
            &[&user.0],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(ConversationEntry {
                conversation: conversation_at(row, 0)?,
                me: member_at(row, 6)?,
                last_seq: Seq(col(row, 10)?),
            })
        })
        .collect()
}

pub(super) async fn share_group(conn: &PgConn, a: UserId, b: UserId) -> R<bool> {
    let row = conn
        .query_one(
            "SELECT EXISTS (
                 SELECT 1 FROM members x
                 JOIN members y ON y.conversation = x.conversation AND y.user_id = $2
                 JOIN conversations c ON c.id = x.conversation AND c.kind = 'group'
                 WHERE x.user_id = $1)",
            &[&a.0, &b.0],
        )
        .await?;
    col(&row, 0)
}

pub(super) async fn has_written(
    conn: &PgConn,
    author: UserId,
    conversation: ConversationId,
) -> R<bool> {
    let row = conn
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE sender = $1 AND conversation = $2)",
            &[&author.0, &conversation.0],
        )
        .await?;
    col(&row, 0)
}

// --- sessions ---

pub(super) async fn put_session(conn: &PgConn, s: &SessionRecord) -> R<()> {
    conn.execute(
        concat!(
            "INSERT INTO sessions (",
            session_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (id) DO UPDATE SET
               user_id = excluded.user_id, login = excluded.login, node = excluded.node,
               created_at = excluded.created_at, last_seen = excluded.last_seen,
               presence_show = excluded.presence_show,
               presence_status = excluded.presence_status, acked_pos = excluded.acked_pos"
        ),
        &[
            &s.id.0,
            &s.user.0,
            &s.login,
            &s.node,
            &s.created_at,
            &s.last_seen,
            &s.presence.show.as_str(),
            &s.presence.status,
            &s.acked.0,
        ],
    )
    .await
    .map_err(|e| e.or_not_found(|| format!("account {}", s.user.0)))?;
    Ok(())
}

pub(super) async fn session_by_id(conn: &PgConn, id: &str) -> R<Option<SessionRecord>> {
    conn.query_opt(
        concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE id = $1"
        ),
        &[&id],
    )
    .await?
    .as_ref()
    .map(session)
    .transpose()
}

pub(super) async fn sessions_of(conn: &PgConn, user: UserId) -> R<Vec<SessionRecord>> {
    let rows = conn
        .query(
            concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions WHERE user_id = $1 ORDER BY created_at, id"
            ),
            &[&user.0],
        )
        .await?;
    all(rows, session)
}

pub(super) async fn touch_session(conn: &PgConn, id: &str, last_seen: Millis, acked: Pos) -> R<()> {
    conn.execute(
        "UPDATE sessions SET last_seen = GREATEST(last_seen, $2),
                             acked_pos = GREATEST(acked_pos, $3)
         WHERE id = $1",
        &[&id, &last_seen, &acked.0],
    )
    .await?;
    Ok(())
}

pub(super) async fn set_session_presence(conn: &PgConn, id: &str, presence: &Presence) -> R<()> {
    conn.execute(
        "UPDATE sessions SET presence_show = $2, presence_status = $3 WHERE id = $1",
        &[&id, &presence.show.as_str(), &presence.status],
    )
    .await?;
    Ok(())
}

pub(super) async fn delete_session(conn: &PgConn, id: &str) -> R<()> {
    conn.execute("DELETE FROM sessions WHERE id = $1", &[&id])
        .await?;
    Ok(())
}

pub(super) async fn expire_sessions(conn: &PgConn, before: Millis) -> R<Vec<SessionRecord>> {
    let rows = conn
        .query(
            concat!(
                "DELETE FROM sessions WHERE last_seen < $1 RETURNING ",
                session_columns!()
            ),
            &[&before],
        )
        .await?;
    let mut expired = all(rows, session)?;
    expired.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(expired)
}
