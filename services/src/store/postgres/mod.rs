//! The store on PostgreSQL, for deployments that outgrow one machine.
//!
//! The same records as the JSON Lines store, as rows: a function per row of
//! `taskforge_functions`; an execution per row of `taskforge_executions`,
//! updated as it starts and finishes, deleted when retention forgets it. A
//! finished execution's row is its history record: its location is its id.
//! The schema is created and migrated by the store itself when it connects
//! (refinery, with the versioned SQL files in `services/migrations/`).
//!
//! The history is the database's (`history.rs` implements
//! [`HistorySearch`](crate::store::HistorySearch)): listings, filters and
//! counts are SQL on indexes, the scheduler forgets a finished execution
//! once its end is durable, and retention runs here (`retention.rs`). A
//! load brings back functions, unfinished executions and only those
//! finished ones with an idempotency key.
//!
//! The durability rules are the JSON Lines store's: appends wait in memory,
//! and [`Store::sync`] writes them all in one transaction; after its commit
//! they are durable, and not before (the scheduler acknowledges nothing
//! earlier). A failed transaction leaves nothing half-written: the records
//! stay buffered and the next sync writes them again.
//!
//! The client is tokio-postgres (chosen over sqlx for its small footprint,
//! plain SQL and pipelining): syncs send each transaction as one pipeline
//! (see `batch.rs`) on a runtime the store owns, since the store runs on the
//! committer's thread, which blocks by design. Loading and history reads use
//! its synchronous wrapper, `postgres`. Both run runtimes of their own, so
//! neither may be used on a thread inside tokio's: the store loads on a
//! thread of its own, writes on the committer's, and the history is read on
//! a thread of its own too.

use std::fmt;
use std::sync::Arc;

use postgres::{Client, Config, NoTls};
use taskforge_core::ExecutionId;
use taskforge_core::scheduler::Retention;

use super::{
    Filed, HistoryReader, Location, Record, Recovered, RecoveredExecution, Store, StoreError,
};
use batch::{Statements, Written};
use history::PostgresHistory;
use retention::Pruned;
use rows::{execution_of, from_db, function_of, idempotency_of, status_of};

mod batch;
mod history;
mod lease;
mod retention;
mod rows;

pub use lease::{LeaseAnswer, LeaseDb};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// A [`Store`] on a PostgreSQL database; see the module documentation.
pub struct PostgresStore {
    config: tokio_postgres::Config,
    /// Opened by the first sync; dropped after an error, opened again by
    /// the next.
    writer: Option<Writer>,
    buffered: Vec<Record>,
    filed: Vec<(ExecutionId, Location)>,
    loaded: bool,
    fence: Option<Fence>,
    /// Retention runs here when set (see `retention.rs`).
    retention: Option<Retention>,
    last_pruned: Option<std::time::Instant>,
    pruned: Vec<ExecutionId>,
}

/// The lease epoch a leading scheduler writes under, and whom to tell when
/// the database says another scheduler holds the lease now.
pub struct Fence {
    pub epoch: u64,
    pub on_fenced: Box<dyn Fn() + Send>,
}

impl fmt::Debug for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fence")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// The connection syncs write on, with a runtime of its own to drive it:
/// the store runs on the committer's thread, outside tokio's, and a group
/// commit is a pipeline of statements sent at once (see `batch.rs`), which
/// the asynchronous client does and the synchronous one cannot.
struct Writer {
    client: tokio_postgres::Client,
    statements: Statements,
    runtime: tokio::runtime::Runtime,
}

impl PostgresStore {
    /// A store on the database `config` names. Nothing connects until
    /// [`Store::load`], which also brings the schema up to date.
    pub fn new(config: tokio_postgres::Config) -> PostgresStore {
        PostgresStore {
            config,
            writer: None,
            buffered: Vec::new(),
            filed: Vec::new(),
            loaded: false,
            fence: None,
            retention: None,
            last_pruned: None,
            pruned: Vec::new(),
        }
    }

    /// A store on `url` (`postgres://user@host:port/database`).
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let config = url.parse().map_err(|source| StoreError::Database {
            op: "parse the address of",
            source,
        })?;
        Ok(PostgresStore::new(config))
    }

    /// Every transaction this store commits first checks that `fence.epoch`
    /// still holds the scheduler lease (and holds the lease row until it
    /// commits); when it does not, nothing is written, the sync fails with
    /// [`StoreError::Fenced`], and so does every later one.
    pub fn fenced_by(mut self, fence: Fence) -> PostgresStore {
        self.fence = Some(fence);
        self
    }

    /// Finished executions are forgotten past `retention` by the store
    /// itself (the scheduler does not hold the history to apply it).
    pub fn retaining(mut self, retention: Retention) -> PostgresStore {
        self.retention = Some(retention);
        self
    }

    /// Applies retention in a fenced transaction of its own.
    fn prune(&mut self, retention: Retention) -> Result<(), StoreError> {
        let epoch = self.fence.as_ref().map(|fence| fence.epoch as i64);
        let Writer {
            client, runtime, ..
        } = self.writer()?;
        let pruned = runtime
            .block_on(retention::prune(client, epoch, retention))
            .map_err(db("apply retention to"));
        match pruned {
            Ok(Pruned::Removed(keyed)) => {
                self.pruned.extend(keyed);
                Ok(())
            }
            Ok(Pruned::Fenced) => Err(self.deposed(epoch)),
            Err(error) => {
                self.writer = None;
                Err(error)
            }
        }
    }

    /// Another scheduler holds the lease: this store never writes again,
    /// and its owner is told.
    fn deposed(&mut self, epoch: Option<i64>) -> StoreError {
        if let Some(fence) = &self.fence {
            (fence.on_fenced)();
        }
        self.buffered.clear();
        self.loaded = false;
        StoreError::Fenced {
            epoch: epoch.unwrap_or_default() as u64,
        }
    }

    /// The open connection, opening one if an error dropped the last.
    fn writer(&mut self) -> Result<&mut Writer, StoreError> {
        if !self.loaded {
            return Err(StoreError::NotLoaded);
        }
        match self.writer {
            Some(ref mut writer) => Ok(writer),
            None => Ok(self.writer.insert(Writer::open(&self.config)?)),
        }
    }

    /// One transaction with every buffered record.
    fn write_buffered(&mut self) -> Result<Vec<ExecutionId>, StoreError> {
        let epoch = self.fence.as_ref().map(|fence| fence.epoch as i64);
        let records = std::mem::take(&mut self.buffered);
        let written = self.writer().and_then(|writer| {
            let Writer {
                client,
                statements,
                runtime,
            } = writer;
            let written = runtime
                .block_on(batch::write(client, statements, epoch, &records))
                .map_err(db("write to"))?;
            match written {
                Written::Fenced => Err(StoreError::Fenced {
                    epoch: epoch.unwrap_or_default() as u64,
                }),
                Written::Finished(ids) => Ok(ids),
            }
        });
        if written.is_err() {
            self.buffered = records;
        }
        written
    }
}

/// Brings the schema of the database at `url` up to date. Several
/// schedulers may start at once: an advisory lock lets one migrate at a
/// time, and the others find nothing left to do.
pub fn migrate(url: &str) -> Result<(), StoreError> {
    let config: Config = url.parse().map_err(db("parse the address of"))?;
    let mut client = config.connect(NoTls).map_err(db("connect to"))?;
    migrate_on(&mut client)
}

/// The advisory lock key of migrations ("TFmig" in ASCII).
const MIGRATION_LOCK: i64 = 0x54_46_6d_69_67;

fn migrate_on(client: &mut Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(db("lock the schema of"))?;
    let migrated = embedded::migrations::runner()
        .run(client)
        .map(drop)
        .map_err(|error| StoreError::Migration(error.to_string()));
    // Session locks end with the session anyway; unlocking is tidiness.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    migrated
}

/// How long the store's connection may sit inside a transaction without a
/// statement: a scheduler paused mid-commit (stopped, swapped out) would
/// otherwise hold the lease row and keep a standby from taking over.
const IDLE_IN_TRANSACTION: &str = "SET idle_in_transaction_session_timeout = 2000";

impl Writer {
    fn open(config: &tokio_postgres::Config) -> Result<Writer, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io {
                op: "start the connection runtime of",
                path: "the database".into(),
                source,
            })?;
        let (client, statements) = runtime.block_on(async {
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(db("connect to"))?;
            tokio::spawn(async move {
                // Its end shows as an error on the next statement.
                let _ = connection.await;
            });
            client
                .batch_execute(IDLE_IN_TRANSACTION)
                .await
                .map_err(db("configure the session on"))?;
            let statements = Statements::prepare(&client)
                .await
                .map_err(db("prepare statements on"))?;
            Ok::<_, StoreError>((client, statements))
        })?;
        Ok(Writer {
            client,
            statements,
            runtime,
        })
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("loaded", &self.loaded)
            .field("buffered", &self.buffered.len())
            .finish_non_exhaustive()
    }
}

fn db(op: &'static str) -> impl FnOnce(postgres::Error) -> StoreError {
    move |source| StoreError::Database { op, source }
}

/// Where a row's history record is: the row itself, found by its id.
const IN_ITS_ROW: Location = Location {
    segment: 0,
    offset: 0,
    len: 0,
};

impl Store for PostgresStore {
    fn load(&mut self) -> Result<Recovered, StoreError> {
        if self.loaded {
            return Err(StoreError::AlreadyLoaded);
        }
        let mut client = Config::from(self.config.clone())
            .connect(NoTls)
            .map_err(db("connect to"))?;
        migrate_on(&mut client)?;
        let functions = client
            .query("SELECT * FROM taskforge_functions ORDER BY seq", &[])
            .map_err(db("read the functions from"))?
            .iter()
            .map(function_of)
            .collect();
        let executions = client
            .query(
                "SELECT * FROM taskforge_executions WHERE status IS NULL ORDER BY seq",
                &[],
            )
            .map_err(db("read the unfinished executions from"))?
            .iter()
            .map(|row| RecoveredExecution {
                record: execution_of(row),
                attempts_started: row.get::<_, i32>("attempts_started") as u32,
            })
            .collect();
        let mut names: std::collections::BTreeMap<String, Arc<str>> = Default::default();
        let mut history = Vec::new();
        // The history stays in the database (`HistorySearch`): only the
        // executions whose idempotency keys must still be recognised come
        // back.
        let rows = client
            .query(
                "SELECT id, function_id, status, attempt, finished_at_us, idempotency_key, \
                 request_digest FROM taskforge_executions \
                 WHERE status IS NOT NULL AND idempotency_key IS NOT NULL \
                 ORDER BY finished_at_us, seq",
                &[],
            )
            .map_err(db("read the finished executions from"))?;
        for row in &rows {
            let function: String = row.get("function_id");
            let function_id = names
                .entry(function)
                .or_insert_with_key(|name| Arc::from(name.as_str()))
                .clone();
            history.push(Filed {
                id: from_db(row.get("id")),
                function_id,
                status: status_of(row)?,
                attempt: row.get::<_, Option<i32>>("attempt").unwrap_or(0) as u32,
                finished_at_us: row.get::<_, Option<i64>>("finished_at_us").unwrap_or(0) as u64,
                idempotency: idempotency_of(row),
                location: IN_ITS_ROW,
            });
        }
        self.loaded = true;
        Ok(Recovered {
            functions,
            executions,
            history,
            warnings: Vec::new(),
        })
    }

    fn append(&mut self, record: &Record) -> Result<(), StoreError> {
        if !self.loaded {
            return Err(StoreError::NotLoaded);
        }
        self.buffered.push(record.clone());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if !self.loaded {
            return Err(StoreError::NotLoaded);
        }
        if self.buffered.is_empty() {
            return Ok(());
        }
        match self.write_buffered() {
            Ok(finished) => {
                self.filed
                    .extend(finished.into_iter().map(|id| (id, IN_ITS_ROW)));
                Ok(())
            }
            Err(StoreError::Fenced { epoch }) => Err(self.deposed(Some(epoch as i64))),
            Err(error) => {
                // The connection may be broken (the server restarted): the
                // next sync opens another and writes it all again.
                self.writer = None;
                Err(error)
            }
        }
    }

    fn take_filed(&mut self) -> Vec<(ExecutionId, Location)> {
        std::mem::take(&mut self.filed)
    }

    fn take_pruned(&mut self) -> Vec<ExecutionId> {
        std::mem::take(&mut self.pruned)
    }

    fn history(&self) -> Arc<dyn HistoryReader> {
        Arc::new(PostgresHistory::new(self.config.clone().into()))
    }

    /// No log to compact: "compaction" is when retention runs.
    fn wants_compaction(&self) -> bool {
        self.loaded
            && self.retention.is_some()
            && self
                .last_pruned
                .is_none_or(|at| at.elapsed() >= retention::PRUNE_EVERY)
    }

    fn compact(&mut self) -> Result<(), StoreError> {
        self.sync()?;
        let Some(retention) = self.retention else {
            return Ok(());
        };
        self.last_pruned = Some(std::time::Instant::now());
        self.prune(retention)
    }
}
