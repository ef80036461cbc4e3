//! The single writer: one thread owns the only write connection and commits whatever requests
//! are waiting in one transaction (group commit), so durability costs one commit per batch
//! rather than one per request.
//!
//! Every request runs inside its own savepoint, so a request that fails (a duplicate account, a
//! message to a conversation that does not exist) is rolled back alone while the rest of the
//! batch commits. When the transaction as a whole fails (the disk is full, COMMIT is refused),
//! it is rolled back and each request is retried alone in its own transaction, so that one
//! request's trouble costs only that request.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;

use rusqlite::{Connection, OptionalExtension};
use switchboard_core::model::{ConversationId, Pos};
use switchboard_core::store::{StoreError, StoreResult};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{Fail, R};

/// At most this many requests share one transaction. Large enough that a busy hub pays one
/// commit per several thousand messages, small enough that one batch cannot hold the write
/// lock (and the requests' callers) for long.
const MAX_BATCH: usize = 4096;

/// The writer forgets its per-conversation counters when it caches more than this many, so
/// that memory stays bounded on a server with millions of conversations; a forgotten counter
/// costs one index lookup to reload.
const MAX_CACHED_CONVERSATIONS: usize = 100_000;

/// What the writer keeps in memory between transactions: the next journal position and the
/// last sequence number of recently used conversations. Both are derived from the database and
/// reloaded from it whenever a transaction fails, because a failed transaction may have
/// consumed numbers that were never committed.
pub(crate) struct WriterState {
    next_pos: i64,
    last_seq: HashMap<Uuid, i64>,
    /// Conversations whose cached counter changed since the last commit, oldest first; a
    /// rolled-back savepoint forgets the ones it touched.
    touched: Vec<Uuid>,
}

/// Where a savepoint started, to put the in-memory counters back when it is rolled back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    next_pos: i64,
    touched: usize,
}

impl WriterState {
    pub(crate) fn load(conn: &Connection) -> R<WriterState> {
        Ok(WriterState {
            next_pos: load_last_pos(conn)? + 1,
            last_seq: HashMap::new(),
            touched: Vec::new(),
        })
    }

    /// Hands out the next journal position.
    pub(crate) fn take_pos(&mut self) -> Pos {
        let pos = self.next_pos;
        self.next_pos += 1;
        Pos(pos)
    }

    /// The position `take_pos` will hand out next.
    pub(crate) fn peek_pos(&self) -> Pos {
        Pos(self.next_pos)
    }

    /// The highest position handed out so far (committed or inside the open transaction).
    pub(crate) fn last_assigned(&self) -> i64 {
        self.next_pos - 1
    }

    /// The last sequence number of a conversation, or `None` when it does not exist.
    pub(crate) fn last_seq(&mut self, conn: &Connection, id: ConversationId) -> R<Option<i64>> {
        if let Some(seq) = self.last_seq.get(&id.0) {
            return Ok(Some(*seq));
        }
        let loaded = load_last_seq(conn, id)?;
        if let Some(seq) = loaded {
            // Loading inside a transaction may see a conversation created by this very
            // transaction, so the entry is recorded as touched and forgotten on rollback.
            self.last_seq.insert(id.0, seq);
            self.touched.push(id.0);
        }
        Ok(loaded)
    }

    pub(crate) fn set_last_seq(&mut self, id: ConversationId, seq: i64) {
        self.last_seq.insert(id.0, seq);
        self.touched.push(id.0);
    }

    /// Forgets every cached conversation counter (after deletions that may remove
    /// conversations).
    pub(crate) fn forget_conversations(&mut self) {
        self.last_seq.clear();
        self.touched.clear();
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark {
            next_pos: self.next_pos,
            touched: self.touched.len(),
        }
    }

    /// Puts the counters back to where they were at `mark`, after the database was rolled back
    /// to the matching savepoint.
    pub(crate) fn undo(&mut self, mark: Mark) {
        self.next_pos = mark.next_pos;
        if self.touched.len() > mark.touched {
            for id in self.touched.drain(mark.touched..) {
                self.last_seq.remove(&id);
            }
        }
    }

    fn committed(&mut self) {
        self.touched.clear();
    }

    /// After a failed transaction: the database is the truth again. Positions never go below
    /// what was handed out before the transaction started, so even a COMMIT that reported an
    /// error but reached the disk cannot make a position appear twice.
    fn reset(&mut self, conn: &Connection, before: Mark) {
        self.last_seq.clear();
        self.touched.clear();
        let reloaded = match load_last_pos(conn) {
            Ok(last) => last + 1,
            Err(e) => {
                tracing::error!(error = %e.into_store(), "could not reload the journal position");
                before.next_pos
            }
        };
        self.next_pos = reloaded.max(before.next_pos);
    }
}

/// The highest journal position ever assigned: the newest message or account event, or the
/// floor recorded when journal rows were deleted.
pub(crate) fn load_last_pos(conn: &Connection) -> R<i64> {
    let last = conn
        .prepare_cached(
            "SELECT max(
                coalesce((SELECT pos FROM messages ORDER BY pos DESC LIMIT 1), 0),
                coalesce((SELECT pos FROM account_events ORDER BY pos DESC LIMIT 1), 0),
                coalesce((SELECT value FROM counters WHERE name = 'pos_floor'), 0))",
        )?
        .query_row([], |row| row.get(0))?;
    Ok(last)
}

pub(crate) fn load_last_seq(conn: &Connection, id: ConversationId) -> R<Option<i64>> {
    let seq = conn
        .prepare_cached(
            "SELECT max(c.seq_floor, coalesce(
                (SELECT m.seq FROM messages m WHERE m.conversation = c.id ORDER BY m.seq DESC LIMIT 1),
                0))
             FROM conversations c WHERE c.id = ?1",
        )?
        .query_row([&id.0.as_bytes()[..]], |row| row.get(0))
        .optional()?;
    Ok(seq)
}

/// A request to the writer. `run` may be called more than once (again alone after a failed
/// batch), so it must not consume what it works on.
pub(crate) trait WriteJob: Send {
    /// Runs inside the open transaction; returns false when the job failed and its changes
    /// must be rolled back. The result is kept for `finish`.
    fn run(&mut self, conn: &Connection, state: &mut WriterState) -> bool;
    /// Whether the job needs its own savepoint. Jobs that manage savepoints for their parts
    /// (the journal append) say no; if such a job fails as a whole the batch is retried.
    fn needs_savepoint(&self) -> bool {
        true
    }
    /// Sends the result, once the transaction committed, or `failure` when it could not be.
    fn finish(self: Box<Self>, failure: Option<&str>);
}

pub(crate) struct Request<T, F> {
    work: F,
    savepoint: bool,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Request<T, F> {
    pub(crate) fn new(work: F, savepoint: bool, reply: oneshot::Sender<StoreResult<T>>) -> Self {
        Request {
            work,
            savepoint,
            result: None,
            reply,
        }
    }
}

impl<T, F> WriteJob for Request<T, F>
where
    T: Send,
    F: FnMut(&Connection, &mut WriterState) -> R<T> + Send,
{
    fn run(&mut self, conn: &Connection, state: &mut WriterState) -> bool {
        // A bug in one request must not take the writer thread (and every later write) down
        // with it: the panic becomes that request's error and its savepoint is rolled back.
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (self.work)(conn, state)));
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(fail)) => Err(fail.into_store()),
            Err(_) => Err(StoreError::Unavailable(
                "the store's writer failed on this request (a bug; see the log)".into(),
            )),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn needs_savepoint(&self) -> bool {
        self.savepoint
    }

    fn finish(self: Box<Self>, failure: Option<&str>) {
        let result = match (failure, self.result) {
            (Some(text), _) => Err(StoreError::Unavailable(text.to_string())),
            (None, Some(result)) => result,
            (None, None) => Err(StoreError::Unavailable(
                "the request was never run (a bug in the store's writer)".into(),
            )),
        };
        // The caller may have given up waiting; then nobody needs the answer.
        let _ = self.reply.send(result);
    }
}

pub(crate) type Job = Box<dyn WriteJob>;

/// Starts the writer thread. It ends when every sender is dropped (the store is dropped), after
/// finishing the requests already sent; nobody needs to join it, because every request that was
/// answered is committed by then.
pub(crate) fn spawn(
    conn: Connection,
    state: WriterState,
    committed_pos: Arc<AtomicI64>,
) -> std::io::Result<mpsc::Sender<Job>> {
    let (sender, receiver) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || writer_loop(conn, state, receiver, committed_pos))?;
    Ok(sender)
}

fn writer_loop(
    conn: Connection,
    mut state: WriterState,
    receiver: mpsc::Receiver<Job>,
    committed_pos: Arc<AtomicI64>,
) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if state.last_seq.len() > MAX_CACHED_CONVERSATIONS {
            state.forget_conversations();
        }
        run_batch(&conn, &mut state, batch, &committed_pos);
    }
    tracing::debug!("the SQLite writer stops: the store was dropped");
}

fn run_batch(
    conn: &Connection,
    state: &mut WriterState,
    mut batch: Vec<Job>,
    committed_pos: &AtomicI64,
) {
    let before = state.mark();
    let failure = match commit(conn, state, &mut batch) {
        Ok(()) => {
            committed_pos.store(state.last_assigned(), Ordering::Release);
            for job in batch {
                job.finish(None);
            }
            return;
        }
        Err(fail) => fail,
    };
    recover(conn, state, before);
    if batch.len() == 1
        && let Some(job) = batch.pop()
    {
        finish_failed(job, failure);
        return;
    }
    tracing::warn!(
        error = %failure.into_store(),
        requests = batch.len(),
        "a batched transaction failed; retrying each request alone"
    );
    for job in batch {
        let before = state.mark();
        let mut single = [job];
        let outcome = commit(conn, state, &mut single);
        let [job] = single;
        match outcome {
            Ok(()) => {
                committed_pos.store(state.last_assigned(), Ordering::Release);
                job.finish(None);
            }
            Err(failure) => {
                recover(conn, state, before);
                finish_failed(job, failure);
            }
        }
    }
}

/// Answers a request whose transaction failed. When the request itself failed in a way that
/// aborted the transaction, its own error says more than the abort does.
fn finish_failed(job: Job, failure: Fail) {
    match failure {
        Fail::Aborted => job.finish(None),
        other => job.finish(Some(&other.into_store().to_string())),
    }
}

fn recover(conn: &Connection, state: &mut WriterState, before: Mark) {
    if !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        tracing::error!(error = %e, "could not roll back a failed transaction");
    }
    state.reset(conn, before);
}

pub(crate) fn exec(conn: &Connection, sql: &str) -> R<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Runs the jobs in one transaction, each in its own savepoint, and commits. An error here
/// means the transaction as a whole failed and nothing of it may be reported as done.
fn commit(conn: &Connection, state: &mut WriterState, jobs: &mut [Job]) -> R<()> {
    exec(conn, "BEGIN IMMEDIATE")?;
    for job in jobs.iter_mut() {
        let savepoint = job.needs_savepoint();
        if savepoint {
            exec(conn, "SAVEPOINT job")?;
        }
        let mark = state.mark();
        if job.run(conn, state) {
            if savepoint {
                exec(conn, "RELEASE job")?;
            }
            continue;
        }
        // Some errors (an I/O error, running out of memory) make SQLite roll back the whole
        // transaction by itself; then nothing before this job survived either.
        if conn.is_autocommit() {
            return Err(Fail::Aborted);
        }
        if !savepoint {
            return Err(Fail::Aborted);
        }
        exec(conn, "ROLLBACK TO job")?;
        exec(conn, "RELEASE job")?;
        state.undo(mark);
    }
    exec(conn, "COMMIT")?;
    state.committed();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::{SqliteOptions, configure_writer, migrate, open_connection};
    use switchboard_core::model::UserId;

    fn database() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_connection(&dir.path().join("writer.sqlite")).unwrap();
        configure_writer(&conn, &SqliteOptions::default()).unwrap();
        migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO accounts (id, address, realm, scram_sha1, scram_sha256, visibility,
                                   message_policy, created_at)
             VALUES (1, 'a@b.example', 'b.example', '', '', 'contacts', 'contacts', 0)",
        )
        .unwrap();
        (dir, conn)
    }

    type Reply = oneshot::Receiver<StoreResult<i64>>;

    /// A job that writes one account event and answers with its position.
    fn event_job() -> (Job, Reply) {
        let (tx, rx) = oneshot::channel();
        let work = |conn: &Connection, state: &mut WriterState| -> R<i64> {
            let pos = state.take_pos();
            conn.execute(
                "INSERT INTO account_events (pos, user_id, at, payload) VALUES (?1, 1, 0, '{}')",
                [pos.0],
            )?;
            Ok(pos.0)
        };
        (Box::new(Request::new(work, true, tx)), rx)
    }

    fn events(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn
            .prepare("SELECT pos FROM account_events ORDER BY pos")
            .unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn a_batch_that_fails_as_a_whole_is_retried_request_by_request() {
        let (_dir, conn) = database();
        let mut state = WriterState::load(&conn).unwrap();
        let committed = AtomicI64::new(0);
        let (first, first_reply) = event_job();
        let (last, last_reply) = event_job();
        // This request takes a position and then ends the transaction under everyone's feet,
        // as SQLite does by itself on some I/O errors.
        let (tx, mut saboteur_reply) = oneshot::channel::<StoreResult<i64>>();
        let saboteur = |conn: &Connection, state: &mut WriterState| -> R<i64> {
            state.take_pos();
            conn.execute_batch("ROLLBACK")?;
            Err(StoreError::Unavailable("sabotage".into()).into())
        };
        let batch: Vec<Job> = vec![first, Box::new(Request::new(saboteur, true, tx)), last];
        run_batch(&conn, &mut state, batch, &committed);

        assert_eq!(first_reply.blocking_recv().unwrap().ok(), Some(1));
        assert_eq!(
            last_reply.blocking_recv().unwrap().ok(),
            Some(2),
            "no position is lost"
        );
        assert!(matches!(
            saboteur_reply.try_recv().unwrap(),
            Err(StoreError::Unavailable(text)) if text == "sabotage"
        ));
        assert_eq!(events(&conn), [1, 2]);
        assert_eq!(committed.load(Ordering::Acquire), 2);
        assert!(conn.is_autocommit(), "no transaction is left open");
    }

    #[test]
    fn a_failing_or_panicking_request_is_rolled_back_alone() {
        let (_dir, conn) = database();
        let mut state = WriterState::load(&conn).unwrap();
        let committed = AtomicI64::new(0);
        let (first, first_reply) = event_job();
        let (last, last_reply) = event_job();
        let (tx, failing_reply) = oneshot::channel::<StoreResult<i64>>();
        let failing = |conn: &Connection, state: &mut WriterState| -> R<i64> {
            let pos = state.take_pos();
            conn.execute(
                "INSERT INTO account_events (pos, user_id, at, payload) VALUES (?1, 1, 0, '{}')",
                [pos.0],
            )?;
            Err(StoreError::NotFound("something".into()).into())
        };
        let (ptx, panicking_reply) = oneshot::channel::<StoreResult<i64>>();
        let panicking = |_: &Connection, state: &mut WriterState| -> R<i64> {
            state.take_pos();
            panic!("a bug in a request");
        };
        let batch: Vec<Job> = vec![
            first,
            Box::new(Request::new(failing, true, tx)),
            Box::new(Request::new(panicking, true, ptx)),
            last,
        ];
        run_batch(&conn, &mut state, batch, &committed);

        assert_eq!(first_reply.blocking_recv().unwrap().ok(), Some(1));
        assert!(matches!(
            failing_reply.blocking_recv().unwrap(),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            panicking_reply.blocking_recv().unwrap(),
            Err(StoreError::Unavailable(_))
        ));
        assert_eq!(last_reply.blocking_recv().unwrap().ok(), Some(2));
        assert_eq!(
            events(&conn),
            [1, 2],
            "the failed request's row was rolled back"
        );
        assert_eq!(committed.load(Ordering::Acquire), 2);
        let user: Option<i64> = conn
            .query_row(
                "SELECT id FROM accounts WHERE id = ?1",
                [UserId(1).0],
                |r| r.get(0),
            )
            .optional()
            .unwrap();
        assert_eq!(user, Some(1));
    }
}
