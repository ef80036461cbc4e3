//! The SQLite backend, the default: one file, no server to run.
//!
//! Writes go to one dedicated thread that owns the only write connection and commits whatever
//! is waiting in one transaction (see [`writer`]). Reads go to a small pool of connections used
//! inside `spawn_blocking`. WAL mode lets the readers run while the writer commits, and no
//! async method ever blocks a tokio worker thread.

mod ops;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, TransactionBehavior};
use switchboard_core::address::{Address, Realm};
use switchboard_core::model::*;
use switchboard_core::store::{Store, StoreError, StoreResult};
use tokio::sync::{Semaphore, oneshot};

use crate::common::{merge_cursor_updates, unavailable};
use writer::{Job, Request, WriterState};

/// How the SQLite store is opened.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// `synchronous=FULL` instead of `NORMAL`. In WAL mode NORMAL already survives the
    /// process being killed; FULL also survives the machine losing power, at the price of a
    /// sync per commit.
    pub synchronous_full: bool,
    /// How many read connections to keep (at least one).
    pub readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous_full: false,
            readers: 4,
        }
    }
}

/// Versioned migrations, applied in order at open. Each runs in the same transaction as the
/// record of it, so a crash never leaves a half-applied version behind.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "personal items",
        include_str!("../../migrations/sqlite/0002_personal_items.sql"),
    ),
];

/// Statements the connections keep prepared. Every query text in [`ops`] is cached, and there
/// are a few dozen of them.
const STATEMENT_CACHE: usize = 96;

/// See `configure_writer`.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 50_000;

/// How often the background checkpointer copies the write-ahead log into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The internal error of this backend: SQL errors and store errors travel through the same
/// `?` and become a [`StoreError`] at the edge.
#[derive(Debug)]
pub(crate) enum Fail {
    Sql(rusqlite::Error),
    Store(StoreError),
    /// SQLite rolled the transaction back by itself (or a request that manages its own
    /// savepoints failed as a whole): nothing of the batch may be reported as committed.
    Aborted,
}

pub(crate) type R<T> = Result<T, Fail>;

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl Fail {
    fn extended_code(e: &rusqlite::Error) -> Option<i32> {
        match e {
            rusqlite::Error::SqliteFailure(err, _)
                if err.code == ErrorCode::ConstraintViolation =>
            {
                Some(err.extended_code)
            }
            _ => None,
        }
    }

    pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
        matches!(
            Self::extended_code(e),
            Some(
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            )
        )
    }

    pub(crate) fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
        Self::extended_code(e) == Some(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
    }

    /// A row that refers to something missing (an account) names what is missing.
    pub(crate) fn or_not_found(e: rusqlite::Error, what: impl FnOnce() -> String) -> Fail {
        if Self::is_foreign_key_violation(&e) {
            Fail::Store(StoreError::NotFound(what()))
        } else {
            Fail::Sql(e)
        }
    }

    pub(crate) fn into_store(self) -> StoreError {
        match self {
            Fail::Store(e) => e,
            Fail::Aborted => unavailable("SQLite rolled the transaction back"),
            Fail::Sql(e) => {
                if Self::is_unique_violation(&e) {
                    return StoreError::AlreadyExists(e.to_string());
                }
                if Self::is_foreign_key_violation(&e) {
                    return StoreError::NotFound(format!("a row this refers to ({e})"));
                }
                match e {
                    rusqlite::Error::FromSqlConversionFailure(..)
                    | rusqlite::Error::IntegralValueOutOfRange(..)
                    | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(e.to_string()),
                    other => unavailable(format!("SQLite: {other}")),
                }
            }
        }
    }
}

/// The pool of read connections. The semaphore counts idle connections, so a reader waits
/// asynchronously (never on a tokio worker) until one is free.
struct ReadPool {
    idle: Mutex<Vec<Connection>>,
    available: Semaphore,
}

/// Puts a borrowed read connection back even when the read panics.
struct Borrowed<'a> {
    pool: &'a ReadPool,
    conn: Option<Connection>,
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(conn);
            self.pool.available.add_permits(1);
        }
    }
}

/// The SQLite store. Cheap to share behind an `Arc`; dropping it stops the writer thread once
/// the writes already sent are committed.
pub struct SqliteStore {
    writer: mpsc::Sender<Job>,
    /// Dropping it stops the checkpointer thread.
    _checkpointer: mpsc::Sender<()>,
    readers: Arc<ReadPool>,
    /// The highest committed position, published by the writer after each commit.
    committed_pos: Arc<AtomicI64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("committed_pos", &self.committed_pos.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

fn open_connection(path: &Path) -> R<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_millis(5000))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

fn configure_writer(conn: &Connection, options: &SqliteOptions) -> R<()> {
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(unavailable(format!(
            "SQLite would not switch to WAL mode (it reports {mode:?}); the store needs a file on a local disk"
        ))
        .into());
    }
    let synchronous = if options.synchronous_full {
        "FULL"
    } else {
        "NORMAL"
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // The writer touches the same index pages over and over; a larger page cache keeps them
    // in memory (negative means KiB).
    conn.pragma_update(None, "cache_size", -32_000)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoints copy the log back into the database file and sync it; done by the writer
    // they would stall every commit behind them for tens of milliseconds. A background thread
    // does them instead (see `checkpointer`); the writer only checkpoints itself when the log
    // has grown very large (about 200 MB), as a safety net if the background thread falls
    // behind.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    // After a burst the log may have grown far beyond that; it is cut back once checkpointed.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    Ok(())
}

fn configure_reader(conn: &Connection) -> R<()> {
    conn.pragma_update(None, "query_only", true)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> R<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version INTEGER PRIMARY KEY NOT NULL,
             name TEXT NOT NULL,
             applied_at INTEGER NOT NULL
         )",
    )?;
    let current: i64 = tx.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_version",
        [],
        |row| row.get(0),
    )?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {current}, newer than this program knows ({latest}); \
             run a newer Switchboard"
        ))
        .into());
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tracing::info!(version, name, "applying a SQLite migration");
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![version, name, now_millis()],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Starts the thread that checkpoints the write-ahead log in the background, off the writer's
/// path. A PASSIVE checkpoint never blocks the writer or the readers; it copies what it can.
fn checkpointer(path: &Path) -> R<mpsc::Sender<()>> {
    let conn = open_connection(path)?;
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "background checkpoint failed");
                }
            }
        })
        .map_err(|e| unavailable(format!("cannot start the SQLite checkpoint thread: {e}")))?;
    Ok(stop)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies pending migrations and starts
    /// the writer thread. Blocking: call it at startup or inside `spawn_blocking`.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        Self::open_inner(path, options).map_err(Fail::into_store)
    }

    fn open_inner(path: &Path, options: SqliteOptions) -> R<SqliteStore> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                unavailable(format!(
                    "cannot create the directory {}: {e}",
                    parent.display()
                ))
            })?;
        }
        let mut conn = open_connection(path)?;
        configure_writer(&conn, &options)?;
        migrate(&mut conn)?;
        let state = WriterState::load(&conn)?;
        let committed_pos = Arc::new(AtomicI64::new(state.last_assigned()));

        let count = options.readers.max(1);
        let mut idle = Vec::with_capacity(count);
        for _ in 0..count {
            let reader = open_connection(path)?;
            configure_reader(&reader)?;
            idle.push(reader);
        }
        let readers = Arc::new(ReadPool {
            idle: Mutex::new(idle),
            available: Semaphore::new(count),
        });

        let writer = writer::spawn(conn, state, committed_pos.clone())
            .map_err(|e| unavailable(format!("cannot start the SQLite writer thread: {e}")))?;
        let checkpointer = checkpointer(path)?;
        tracing::info!(path = %path.display(), readers = count, "SQLite store open");
        Ok(SqliteStore {
            writer,
            _checkpointer: checkpointer,
            readers,
            committed_pos,
        })
    }

    /// Sends work to the writer thread and waits (asynchronously) for its commit.
    async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection, &mut WriterState) -> R<T> + Send + 'static,
    {
        self.submit(work, true).await
    }

    async fn submit<T, F>(&self, work: F, savepoint: bool) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection, &mut WriterState) -> R<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Box::new(Request::new(work, savepoint, reply)))
            .map_err(|_| unavailable("the SQLite writer has stopped"))?;
        answer
            .await
            .map_err(|_| unavailable("the SQLite writer stopped before answering"))?
    }

    /// Runs a read on a pooled connection on the blocking thread pool.
    async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> R<T> + Send + 'static,
    {
        let permit = self
            .readers
            .available
            .acquire()
            .await
            .map_err(|_| unavailable("the SQLite read pool is closed"))?;
        // The permit now stands for the connection taken below; the guard gives both back.
        permit.forget();
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .pop();
            // Dropping the guard at the end of this closure gives the connection back.
            let borrowed = Borrowed { pool: &pool, conn };
            match borrowed.conn.as_ref() {
                Some(conn) => work(conn).map_err(Fail::into_store),
                None => Err(unavailable("the SQLite read pool lost a connection")),
            }
        })
        .await
        .map_err(|e| unavailable(format!("a SQLite read failed: {e}")))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn create_account(&self, account: NewAccount) -> StoreResult<Account> {
        self.write(move |conn, _| ops::create_account(conn, &account))
            .await
    }

    async fn account(&self, id: UserId) -> StoreResult<Option<Account>> {
        self.read(move |conn| ops::account_by_id(conn, id)).await
    }

    async fn account_by_address(&self, address: &Address) -> StoreResult<Option<Account>> {
        let address = address.clone();
        self.read(move |conn| ops::account_by_address(conn, &address))
            .await
    }

    async fn list_accounts(&self, realm: Option<&Realm>) -> StoreResult<Vec<Account>> {
        let realm = realm.map(|r| r.as_str().to_owned());
        self.read(move |conn| ops::list_accounts(conn, realm.as_deref()))
            .await
    }

    async fn set_credentials(&self, user: UserId, credentials: Credentials) -> StoreResult<()> {
        self.write(move |conn, _| ops::set_credentials(conn, user, &credentials))
            .await
    }

    async fn delete_account(&self, user: UserId) -> StoreResult<bool> {
        self.write(move |conn, state| ops::delete_account(conn, state, user))
            .await
    }

    async fn create_login(&self, login: LoginRecord) -> StoreResult<()> {
        self.write(move |conn, _| ops::create_login(conn, &login))
            .await
    }

    async fn login_by_token_hash(&self, token_hash: &[u8]) -> StoreResult<Option<LoginRecord>> {
        let hash = token_hash.to_vec();
        self.read(move |conn| ops::login_by_token_hash(conn, &hash))
            .await
    }

    async fn logins_of(&self, user: UserId) -> StoreResult<Vec<LoginRecord>> {
        self.read(move |conn| ops::logins_of(conn, user)).await
    }

    async fn touch_login(&self, id: &str, at: Millis) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(move |conn, _| ops::touch_login(conn, &id, at))
            .await
    }

    async fn delete_login(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(move |conn, _| ops::delete_login(conn, &id))
            .await
    }

    async fn delete_logins_of(&self, user: UserId) -> StoreResult<()> {
        self.write(move |conn, _| ops::delete_logins_of(conn, user))
            .await
    }

    async fn append(
        &self,
        batch: Vec<JournalEntry>,
    ) -> StoreResult<Vec<StoreResult<JournalOutcome>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // The append keeps one savepoint per entry itself, so it needs none of its own.
        self.submit(move |conn, state| ops::append(conn, state, &batch), false)
            .await
    }

    async fn last_pos(&self) -> StoreResult<Pos> {
        Ok(Pos(self.committed_pos.load(Ordering::Acquire)))
    }

    async fn replay(&self, user: UserId, after: Pos, limit: usize) -> StoreResult<Vec<Replayed>> {
        self.read(move |conn| ops::replay(conn, user, after, limit))
            .await
    }

    async fn undelivered(&self, user: UserId, limit: usize) -> StoreResult<Vec<StoredMessage>> {
        self.read(move |conn| ops::undelivered(conn, user, limit))
            .await
    }

    async fn history(
        &self,
        conversation: ConversationId,
        before: Option<Seq>,
        limit: usize,
    ) -> StoreResult<Vec<StoredMessage>> {
        self.read(move |conn| ops::history(conn, conversation, before, limit))
            .await
    }

    async fn advance_cursors(&self, updates: Vec<CursorUpdate>) -> StoreResult<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let updates = merge_cursor_updates(updates);
        self.write(move |conn, state| ops::advance_cursors(conn, state, &updates))
            .await
    }

    async fn contacts_of(&self, user: UserId) -> StoreResult<Vec<Contact>> {
        self.read(move |conn| ops::contacts_of(conn, user)).await
    }

    async fn contact(&self, owner: UserId, peer: &Address) -> StoreResult<Option<Contact>> {
        let peer = peer.clone();
        self.read(move |conn| ops::contact_of(conn, owner, &peer))
            .await
    }

    async fn is_blocked(&self, owner: UserId, peer: &Address) -> StoreResult<bool> {
        let peer = peer.clone();
        self.read(move |conn| ops::is_blocked(conn, owner, &peer))
            .await
    }

    async fn blocks_of(&self, owner: UserId) -> StoreResult<Vec<Address>> {
        self.read(move |conn| ops::blocks_of(conn, owner)).await
    }

    async fn put_personal_item(
        &self,
        owner: UserId,
        item: PersonalItem,
        keep: usize,
    ) -> StoreResult<()> {
        self.write(move |conn, _| ops::put_personal_item(conn, owner, &item, keep))
            .await
    }

    async fn personal_items(
        &self,
        owner: UserId,
        node: &str,
        limit: usize,
    ) -> StoreResult<Vec<PersonalItem>> {
        let node = node.to_owned();
        self.read(move |conn| ops::personal_items(conn, owner, &node, limit))
            .await
    }

    async fn delete_personal_item(
        &self,
        owner: UserId,
        node: &str,
        item: Option<&str>,
    ) -> StoreResult<bool> {
        let (node, item) = (node.to_owned(), item.map(str::to_owned));
        self.write(move |conn, _| ops::delete_personal_item(conn, owner, &node, item.as_deref()))
            .await
    }

    async fn conversation(&self, id: ConversationId) -> StoreResult<Option<Conversation>> {
        self.read(move |conn| ops::conversation_by_id(conn, id))
            .await
    }

    async fn members(&self, id: ConversationId) -> StoreResult<Vec<Member>> {
        self.read(move |conn| ops::members(conn, id)).await
    }

    async fn conversations_of(&self, user: UserId) -> StoreResult<Vec<ConversationEntry>> {
        self.read(move |conn| ops::conversations_of(conn, user))
            .await
    }

    async fn share_group(&self, a: UserId, b: UserId) -> StoreResult<bool> {
        self.read(move |conn| ops::share_group(conn, a, b)).await
    }

    async fn has_written(&self, author: UserId, conversation: ConversationId) -> StoreResult<bool> {
        self.read(move |conn| ops::has_written(conn, author, conversation))
            .await
    }

    async fn put_session(&self, session: SessionRecord) -> StoreResult<()> {
        self.write(move |conn, _| ops::put_session(conn, &session))
            .await
    }

    async fn session(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        let id = id.0.clone();
        self.read(move |conn| ops::session_by_id(conn, &id)).await
    }

    async fn sessions_of(&self, user: UserId) -> StoreResult<Vec<SessionRecord>> {
        self.read(move |conn| ops::sessions_of(conn, user)).await
    }

    async fn touch_session(
        &self,
        id: &SessionId,
        last_seen: Millis,
        acked: Pos,
    ) -> StoreResult<()> {
        let id = id.0.clone();
        self.write(move |conn, _| ops::touch_session(conn, &id, last_seen, acked))
            .await
    }

    async fn set_session_presence(&self, id: &SessionId, presence: &Presence) -> StoreResult<()> {
        let id = id.0.clone();
        let presence = presence.clone();
        self.write(move |conn, _| ops::set_session_presence(conn, &id, &presence))
            .await
    }

    async fn delete_session(&self, id: &SessionId) -> StoreResult<()> {
        let id = id.0.clone();
        self.write(move |conn, _| ops::delete_session(conn, &id))
            .await
    }

    async fn expire_sessions(&self, before: Millis) -> StoreResult<Vec<SessionRecord>> {
        self.write(move |conn, _| ops::expire_sessions(conn, before))
            .await
    }
}
