//! What a node is made of, shared by `serve` and by the CLI when no server runs: the data
//! directory and its lock, and the store.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard_core::Hub;
use switchboard_core::hub::HubTasks;
use switchboard_core::store::Store;
use switchboard_store::{PostgresStore, SqliteOptions, SqliteStore};

use crate::config::{Config, Synchronous};

/// The lock file's name inside the data directory.
const LOCK_NAME: &str = "switchboard.lock";

/// An exclusive lock on the data directory, held for as long as this value lives.
///
/// The store assigns journal positions in one writer per process; two processes writing one
/// store would hand out the same positions. The lock keeps it to one: the server holds it
/// while it runs, and the CLI takes it only when it writes the store itself, so a CLI that
/// finds the lock taken knows a server runs and must be reached through its admin socket.
/// The operating system releases the lock when the process ends, however it ends, so a
/// killed server never leaves it stuck. The file itself stays; removing it would let two
/// processes lock two different files.
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock, creating the data directory if needed. `Ok(None)` means another
    /// process holds it.
    pub fn try_acquire(data_dir: &Path) -> anyhow::Result<Option<DataDirLock>> {
        ensure_data_dir(data_dir)?;
        let path = data_dir.join(LOCK_NAME);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DataDirLock { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
}

/// Creates the data directory if it is missing, readable by its owner only: it holds the
/// database and the admin socket.
fn ensure_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    if data_dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| {
            format!(
                "cannot create the data directory {} (data_dir)",
                data_dir.display()
            )
        })
}

/// Opens the configured store: PostgreSQL when `store.postgres_url` is set, otherwise SQLite
/// in the data directory.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(url) = &config.store.postgres_url {
        // The URL may hold a password, so it is not repeated in messages.
        let pool = config.store.postgres_pool;
        let store = match &config.store.postgres_schema {
            Some(schema) => PostgresStore::connect_with_schema(url, schema, pool).await,
            None => PostgresStore::connect(url, pool).await,
        }
        .context("cannot open the PostgreSQL store (store.postgres_url)")?;
        tracing::info!(schema = ?config.store.postgres_schema, "store: PostgreSQL");
        return Ok(Arc::new(store));
    }
    let path = config.sqlite_path();
    let options = SqliteOptions {
        synchronous_full: config.store.sqlite_synchronous == Synchronous::Full,
        readers: config.store.sqlite_readers,
    };
    let shown = path.display().to_string();
    // Opening applies migrations and may take a while: not on an async worker.
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path, options))
        .await
        .context("the store could not be opened")?
        .with_context(|| format!("cannot open the SQLite store {shown}"))?;
    tracing::info!(path = %shown, "store: SQLite");
    Ok(Arc::new(store))
}

/// How long the hub may take to commit what is queued and stop. A commit takes milliseconds;
/// the bound only matters when the store itself hangs (a PostgreSQL server that stopped
/// answering), which must not keep the process alive for ever. Whatever the hub acknowledged
/// is committed either way.
const HUB_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Stops the hub: every write already submitted is committed and the sessions are recorded.
pub async fn stop_hub(hub: Hub, tasks: HubTasks) {
    match tokio::time::timeout(HUB_STOP_TIMEOUT, tasks.shutdown(hub)).await {
        Ok(()) => tracing::debug!("the hub committed everything queued and stopped"),
        Err(_) => tracing::warn!(
            "the hub did not stop within {}s: the store did not answer (every write it \
             acknowledged is committed)",
            HUB_STOP_TIMEOUT.as_secs()
        ),
    }
}
