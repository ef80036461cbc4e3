//! The PostgreSQL backend, for deployments that already run PostgreSQL or want the store on
//! another machine.
//!
//! A small pool of clients serves reads and single-statement writes, picked round-robin; one
//! more client, behind a mutex, is the journal writer, so that journal positions are assigned
//! and committed in one order. Positions follow the single-node scheme: the writer loads the
//! highest position at connect and counts up in memory. A cluster of several nodes writing to
//! one database needs a different scheme (a sequence read inside the transaction with a lock
//! that orders commits, or one writer node), because two writers counting in memory would hand
//! out the same positions.

mod ops;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use switchboard_core::address::{Address, Realm};
use switchboard_core::model::*;
use switchboard_core::store::{Store, StoreError, StoreResult};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};
use uuid::Uuid;

use crate::common::{merge_cursor_updates, unavailable};

/// Versioned migrations, applied in order at connect inside one transaction, under an advisory
/// lock so that several nodes starting at once do not race.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "personal items",
        include_str!("../../migrations/postgres/0002_personal_items.sql"),
    ),
];

/// The advisory lock key held while migrating ("switchbd" in ASCII).
const MIGRATION_LOCK: i64 = 0x7377_6974_6368_6264;

/// The internal error of this backend; it becomes a [`StoreError`] at the edge.
#[derive(Debug)]
pub(crate) enum Fail {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

pub(crate) type R<T> = Result<T, Fail>;

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl Fail {
    pub(crate) fn code(&self) -> Option<&SqlState> {
        match self {
            Fail::Pg(e) => e.code(),
            Fail::Store(_) => None,
        }
    }

    pub(crate) fn is_unique_violation(&self) -> bool {
        self.code() == Some(&SqlState::UNIQUE_VIOLATION)
    }

    pub(crate) fn is_foreign_key_violation(&self) -> bool {
        self.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION)
    }

    /// A row that refers to something missing (an account) names what is missing.
    pub(crate) fn or_not_found(self, what: impl FnOnce() -> String) -> Fail {
        if self.is_foreign_key_violation() {
            Fail::Store(StoreError::NotFound(what()))
        } else {
            self
        }
    }

    pub(crate) fn into_store(self) -> StoreError {
        if self.is_unique_violation() {
            return StoreError::AlreadyExists(self.describe());
        }
        if self.is_foreign_key_violation() {
            return StoreError::NotFound(format!("a row this refers to ({})", self.describe()));
        }
        match self {
            Fail::Store(e) => e,
            // Decoding errors mean the data is not what this program wrote.
            Fail::Pg(e) if e.to_string().starts_with("error deserializing") => {
                StoreError::Corrupt(describe_pg(&e))
            }
            Fail::Pg(e) => unavailable(format!("PostgreSQL: {}", describe_pg(&e))),
        }
    }

    fn describe(&self) -> String {
        match self {
            Fail::Pg(e) => describe_pg(e),
            Fail::Store(e) => e.to_string(),
        }
    }
}

/// The server's message for database errors; otherwise the error with its causes, which
/// tokio-postgres keeps out of its own text ("error connecting to server: connection
/// refused").
fn describe_pg(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return match db.detail() {
            Some(detail) => format!("{}: {detail}", db.message()),
            None => db.message().to_string(),
        };
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads one column, turning a type mismatch into [`StoreError::Corrupt`].
pub(crate) fn col<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> R<T> {
    row.try_get(idx)
        .map_err(|e| StoreError::Corrupt(format!("column {idx}: {e}")).into())
}

/// One client with the statements it has prepared. Preparing once per connection saves a
/// round trip on every later use of the same query.
pub(crate) struct PgConn {
    client: Client,
    statements: Mutex<HashMap<&'static str, Statement>>,
}

pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl PgConn {
    async fn statement(&self, sql: &'static str) -> R<Statement> {
        if let Some(s) = self
            .statements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql)
        {
            return Ok(s.clone());
        }
        let prepared = self.client.prepare(sql).await?;
        self.statements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sql, prepared.clone());
        Ok(prepared)
    }

    pub(crate) async fn query(&self, sql: &'static str, params: Params<'_>) -> R<Vec<Row>> {
        let statement = self.statement(sql).await?;
        Ok(self.client.query(&statement, params).await?)
    }

    pub(crate) async fn query_opt(&self, sql: &'static str, params: Params<'_>) -> R<Option<Row>> {
        let statement = self.statement(sql).await?;
        Ok(self.client.query_opt(&statement, params).await?)
    }

    pub(crate) async fn query_one(&self, sql: &'static str, params: Params<'_>) -> R<Row> {
        let statement = self.statement(sql).await?;
        Ok(self.client.query_one(&statement, params).await?)
    }

    pub(crate) async fn execute(&self, sql: &'static str, params: Params<'_>) -> R<u64> {
        let statement = self.statement(sql).await?;
        Ok(self.client.execute(&statement, params).await?)
    }

    /// Runs plain SQL (transaction control, migrations) with the simple protocol.
    pub(crate) async fn batch(&self, sql: &str) -> R<()> {
        Ok(self.client.batch_execute(sql).await?)
    }

    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// How to open a connection: the parsed URL and the schema to put first on the search path.
struct Connector {
    config: Config,
    schema: Option<String>,
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Connector {
    async fn connect(&self) -> R<PgConn> {
        let (client, connection) = self.config.connect(NoTls).await?;
        // The connection object performs the actual I/O; it runs until the client is dropped
        // or the server goes away.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "a PostgreSQL connection ended with an error");
            }
        });
        if let Some(schema) = &self.schema {
            client
                .batch_execute(&format!("SET search_path TO {}", quote_ident(schema)))
                .await?;
        }
        Ok(PgConn {
            client,
            statements: Mutex::new(HashMap::new()),
        })
    }
}

/// The journal writer: its client and the counters it assigns from.
pub(crate) struct PgWriter {
    conn: PgConn,
    next_pos: i64,
    /// The last sequence number of recently used conversations.
    last_seq: HashMap<Uuid, i64>,
}

/// Beyond this many cached conversation counters the cache starts over, to bound memory.
const MAX_CACHED_CONVERSATIONS: usize = 100_000;

impl PgWriter {
    pub(crate) fn conn(&self) -> &PgConn {
        &self.conn
    }

    pub(crate) fn take_pos(&mut self) -> Pos {
        let pos = self.next_pos;
        self.next_pos += 1;
        Pos(pos)
    }

    pub(crate) fn peek_pos(&self) -> Pos {
        Pos(self.next_pos)
    }

    pub(crate) fn last_assigned(&self) -> i64 {
        self.next_pos - 1
    }

    pub(crate) async fn last_seq(&mut self, id: ConversationId) -> R<Option<i64>> {
        if let Some(seq) = self.last_seq.get(&id.0) {
            return Ok(Some(*seq));
        }
        let loaded = ops::load_last_seq(&self.conn, id).await?;
        if let Some(seq) = loaded {
            if self.last_seq.len() >= MAX_CACHED_CONVERSATIONS {
                self.last_seq.clear();
            }
            self.last_seq.insert(id.0, seq);
        }
        Ok(loaded)
    }

    pub(crate) fn set_last_seq(&mut self, id: ConversationId, seq: i64) {
        self.last_seq.insert(id.0, seq);
    }

    pub(crate) fn forget_conversations(&mut self) {
        self.last_seq.clear();
    }

    /// After a failed transaction: roll back, forget the cached counters and reload the
    /// position from the database, never going below what was handed out before (a COMMIT
    /// that reported an error may still have reached the disk).
    pub(crate) async fn recover(&mut self, before: i64) {
        if let Err(e) = self.conn.batch("ROLLBACK").await {
            tracing::debug!(error = %e.into_store(), "rolling back a failed transaction failed");
        }
        self.last_seq.clear();
        match ops::load_last_pos(&self.conn).await {
            Ok(last) => self.next_pos = (last + 1).max(before),
            Err(e) => {
                // Without the database's word, fall back to where the transaction started:
                // publishing a position that was never committed would let a session skip
                // past messages that later receive it. Should the failed COMMIT have reached
                // the disk after all, reusing its positions fails on the primary key, and the
                // reconnect that follows reloads the truth.
                tracing::error!(error = %e.into_store(), "could not reload the journal position");
                self.next_pos = before;
            }
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }
}

struct Inner {
    connector: Connector,
    pool: Vec<Mutex<Arc<PgConn>>>,
    next: AtomicUsize,
    writer: tokio::sync::Mutex<PgWriter>,
    committed_pos: AtomicI64,
}

/// The PostgreSQL store.
pub struct PostgresStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.connector.schema)
            .field("pool", &self.inner.pool.len())
            .field(
                "committed_pos",
                &self.inner.committed_pos.load(Ordering::Acquire),
            )
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects `pool_size` clients for reads (at least one) plus the journal writer, and
    /// applies pending migrations. The URL is a libpq-style `postgres://` URL; TLS is not
    /// used (run PostgreSQL on the same host or a private network).
    pub async fn connect(url: &str, pool_size: usize) -> Result<PostgresStore, StoreError> {
        Self::open(url, None, pool_size)
            .await
            .map_err(Fail::into_store)
    }

    /// Like [`PostgresStore::connect`], with every table in `schema` (created if missing):
    /// lets several stores, for example tests, share one database without seeing each other.
    pub async fn connect_with_schema(
        url: &str,
        schema: &str,
        pool_size: usize,
    ) -> Result<PostgresStore, StoreError> {
        Self::open(url, Some(schema.to_owned()), pool_size)
            .await
            .map_err(Fail::into_store)
    }

    async fn open(url: &str, schema: Option<String>, pool_size: usize) -> R<PostgresStore> {
        let config = Config::from_str(url).map_err(|e| {
            StoreError::Unavailable(format!("the PostgreSQL URL is not valid: {e}"))
        })?;
        let connector = Connector { config, schema };
        if let Some(schema) = &connector.schema {
            let setup = Connector {
                config: connector.config.clone(),
                schema: None,
            }
            .connect()
            .await?;
            setup
                .batch(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {}",
                    quote_ident(schema)
                ))
                .await?;
        }
        let writer_conn = connector.connect().await?;
        migrate(&writer_conn).await?;
        let last = ops::load_last_pos(&writer_conn).await?;
        let mut pool = Vec::new();
        for _ in 0..pool_size.max(1) {
            pool.push(Mutex::new(Arc::new(connector.connect().await?)));
        }
        tracing::info!(schema = ?connector.schema, pool = pool.len(), "PostgreSQL store open");
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                connector,
                pool,
                next: AtomicUsize::new(0),
                writer: tokio::sync::Mutex::new(PgWriter {
                    conn: writer_conn,
                    next_pos: last + 1,
                    last_seq: HashMap::new(),
                }),
                committed_pos: AtomicI64::new(last),
            }),
        })
    }

    /// A pooled client, round-robin; a client whose connection died is replaced.
    async fn conn(&self) -> R<Arc<PgConn>> {
        let slot = &self.inner.pool
            [self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.pool.len()];
        let current = slot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if !current.is_closed() {
            return Ok(current);
        }
        tracing::warn!("a pooled PostgreSQL connection was closed; reconnecting");
        let fresh = Arc::new(self.inner.connector.connect().await?);
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    /// Runs one statement's worth of work (a read, or a write outside the journal) on a
    /// pooled client.
    async fn with_conn<T, F>(&self, work: F) -> StoreResult<T>
    where
        F: AsyncFnOnce(&PgConn) -> R<T>,
    {
        let conn = self.conn().await.map_err(Fail::into_store)?;
        work(&conn).await.map_err(Fail::into_store)
    }
}

/// Runs a journal write on its own task: if the caller stops waiting, the transaction still
/// finishes (or rolls back) as a whole instead of leaving the writer's client mid-transaction.
async fn on_writer<T, F>(inner: Arc<Inner>, work: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: for<'w> FnOnce(&'w mut PgWriter) -> WriterFuture<'w, T> + Send + 'static,
{
    let task = tokio::spawn(async move {
        let mut writer = inner.writer.lock().await;
        if writer.is_closed() {
            tracing::warn!("the PostgreSQL writer connection was closed; reconnecting");
            let conn = inner.connector.connect().await.map_err(Fail::into_store)?;
            let last = ops::load_last_pos(&conn).await.map_err(Fail::into_store)?;
            writer.conn = conn;
            writer.last_seq.clear();
            writer.next_pos = writer.next_pos.max(last + 1);
        }
        let result = work(&mut writer).await.map_err(Fail::into_store);
        inner
            .committed_pos
            .fetch_max(writer.last_assigned(), Ordering::AcqRel);
        result
    });
    task.await
        .map_err(|e| unavailable(format!("a PostgreSQL write failed: {e}")))?
}

pub(crate) type WriterFuture<'w, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = R<T>> + Send + 'w>>;

async fn migrate(conn: &PgConn) -> R<()> {
    conn.batch("BEGIN").await?;
    let result = async {
        conn.client
            .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        conn.batch(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 version BIGINT PRIMARY KEY,
                 name TEXT NOT NULL,
                 applied_at BIGINT NOT NULL
             )",
        )
        .await?;
        let current: i64 = conn
            .client
            .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
            .await?
            .try_get(0)?;
        let latest = MIGRATIONS.last().map_or(0, |m| m.0);
        if current > latest {
            return Err(Fail::Store(StoreError::Corrupt(format!(
                "the database has schema version {current}, newer than this program knows \
                 ({latest}); run a newer Switchboard"
            ))));
        }
        for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            tracing::info!(version, name, "applying a PostgreSQL migration");
            conn.batch(sql).await?;
            conn.client
                .execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                    &[version, name, &now_millis()],
                )
                .await?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => conn.batch("COMMIT").await,
        Err(e) => {
            let _ = conn.batch("ROLLBACK").await;
            Err(e)
        }
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn create_account(&self, account: NewAccount) -> StoreResult<Account> {
        self.with_conn(async |c| ops::create_account(c, &account).await)
            .await
    }

    async fn account(&self, id: UserId) -> StoreResult<Option<Account>> {
        self.with_conn(async |c| ops::account_by_id(c, id).await)
            .await
    }

    async fn account_by_address(&self, address: &Address) -> StoreResult<Option<Account>> {
        self.with_conn(async |c| ops::account_by_address(c, address).await)
            .await
    }

    async fn list_accounts(&self, realm: Option<&Realm>) -> StoreResult<Vec<Account>> {
        self.with_conn(async |c| ops::list_accounts(c, realm).await)
            .await
    }

    async fn set_credentials(&self, user: UserId, credentials: Credentials) -> StoreResult<()> {
        self.with_conn(async |c| ops::set_credentials(c, user, &credentials).await)
            .await
    }

    async fn delete_account(&self, user: UserId) -> StoreResult<bool> {
        on_writer(self.inner.clone(), move |w| {
            Box::pin(ops::delete_account(w, user))
        })
        .await
    }

    async fn create_login(&self, login: LoginRecord) -> StoreResult<()> {
        self.with_conn(async |c| ops::create_login(c, &login).await)
            .await
    }

    async fn login_by_token_hash(&self, token_hash: &[u8]) -> StoreResult<Option<LoginRecord>> {
        self.with_conn(async |c| ops::login_by_token_hash(c, token_hash).await)
            .await
    }

    async fn logins_of(&self, user: UserId) -> StoreResult<Vec<LoginRecord>> {
        self.with_conn(async |c| ops::logins_of(c, user).await)
            .await
    }

    async fn touch_login(&self, id: &str, at: Millis) -> StoreResult<()> {
        self.with_conn(async |c| ops::touch_login(c, id, at).await)
            .await
    }

    async fn delete_login(&self, id: &str) -> StoreResult<bool> {
        self.with_conn(async |c| ops::delete_login(c, id).await)
            .await
    }

    async fn delete_logins_of(&self, user: UserId) -> StoreResult<()> {
        self.with_conn(async |c| ops::delete_logins_of(c, user).await)
            .await
    }

    async fn append(
        &self,
        batch: Vec<JournalEntry>,
    ) -> StoreResult<Vec<StoreResult<JournalOutcome>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        on_writer(self.inner.clone(), move |w| {
            Box::pin(async move { ops::append(w, &batch).await })
        })
        .await
    }

    async fn last_pos(&self) -> StoreResult<Pos> {
        Ok(Pos(self.inner.committed_pos.load(Ordering::Acquire)))
    }

    async fn replay(&self, user: UserId, after: Pos, limit: usize) -> StoreResult<Vec<Replayed>> {
        self.with_conn(async |c| ops::replay(c, user, after, limit).await)
            .await
    }

    async fn undelivered(&self, user: UserId, limit: usize) -> StoreResult<Vec<StoredMessage>> {
        self.with_conn(async |c| ops::undelivered(c, user, limit).await)
            .await
    }

    async fn history(
        &self,
        conversation: ConversationId,
        before: Option<Seq>,
        limit: usize,
    ) -> StoreResult<Vec<StoredMessage>> {
        self.with_conn(async |c| ops::history(c, conversation, before, limit).await)
            .await
    }

    async fn advance_cursors(&self, updates: Vec<CursorUpdate>) -> StoreResult<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let updates = merge_cursor_updates(updates);
        self.with_conn(async |c| ops::advance_cursors(c, &updates).await)
            .await
    }

    async fn contacts_of(&self, user: UserId) -> StoreResult<Vec<Contact>> {
        self.with_conn(async |c| ops::contacts_of(c, user).await)
            .await
    }

    async fn contact(&self, owner: UserId, peer: &Address) -> StoreResult<Option<Contact>> {
        self.with_conn(async |c| ops::contact_of(c, owner, peer).await)
            .await
    }

    async fn is_blocked(&self, owner: UserId, peer: &Address) -> StoreResult<bool> {
        self.with_conn(async |c| ops::is_blocked(c, owner, peer).await)
            .await
    }

    async fn blocks_of(&self, owner: UserId) -> StoreResult<Vec<Address>> {
        self.with_conn(async |c| ops::blocks_of(c, owner).await)
            .await
    }

    async fn put_personal_item(
        &self,
        owner: UserId,
        item: PersonalItem,
        keep: usize,
    ) -> StoreResult<()> {
        self.with_conn(async |c| ops::put_personal_item(c, owner, &item, keep).await)
            .await
    }

    async fn personal_items(
        &self,
        owner: UserId,
        node: &str,
        limit: usize,
    ) -> StoreResult<Vec<PersonalItem>> {
        self.with_conn(async |c| ops::personal_items(c, owner, node, limit).await)
            .await
    }

    async fn delete_personal_item(
        &self,
        owner: UserId,
        node: &str,
        item: Option<&str>,
    ) -> StoreResult<bool> {
        self.with_conn(async |c| ops::delete_personal_item(c, owner, node, item).await)
            .await
    }

    async fn conversation(&self, id: ConversationId) -> StoreResult<Option<Conversation>> {
        self.with_conn(async |c| ops::conversation_by_id(c, id).await)
            .await
    }

    async fn members(&self, id: ConversationId) -> StoreResult<Vec<Member>> {
        self.with_conn(async |c| ops::members(c, id).await).await
    }

    async fn conversations_of(&self, user: UserId) -> StoreResult<Vec<ConversationEntry>> {
        self.with_conn(async |c| ops::conversations_of(c, user).await)
            .await
    }

    async fn share_group(&self, a: UserId, b: UserId) -> StoreResult<bool> {
        self.with_conn(async |c| ops::share_group(c, a, b).await)
            .await
    }

    async fn has_written(&self, author: UserId, conversation: ConversationId) -> StoreResult<bool> {
        self.with_conn(async |c| ops::has_written(c, author, conversation).await)
            .await
    }

    async fn put_session(&self, session: SessionRecord) -> StoreResult<()> {
        self.with_conn(async |c| ops::put_session(c, &session).await)
            .await
    }

    async fn session(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        self.with_conn(async |c| ops::session_by_id(c, &id.0).await)
            .await
    }

    async fn sessions_of(&self, user: UserId) -> StoreResult<Vec<SessionRecord>> {
        self.with_conn(async |c| ops::sessions_of(c, user).await)
            .await
    }

    async fn touch_session(
        &self,
        id: &SessionId,
        last_seen: Millis,
        acked: Pos,
    ) -> StoreResult<()> {
        self.with_conn(async |c| ops::touch_session(c, &id.0, last_seen, acked).await)
            .await
    }

    async fn set_session_presence(&self, id: &SessionId, presence: &Presence) -> StoreResult<()> {
        self.with_conn(async |c| ops::set_session_presence(c, &id.0, presence).await)
            .await
    }

    async fn delete_session(&self, id: &SessionId) -> StoreResult<()> {
        self.with_conn(async |c| ops::delete_session(c, &id.0).await)
            .await
    }

    async fn expire_sessions(&self, before: Millis) -> StoreResult<Vec<SessionRecord>> {
        self.with_conn(async |c| ops::expire_sessions(c, before).await)
            .await
    }
}
