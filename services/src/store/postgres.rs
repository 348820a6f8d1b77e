//! The store on PostgreSQL, for deployments that outgrow one machine.
//!
//! The same records as the JSON Lines store, as rows: a function per row of
//! `taskforge_functions`; an execution per row of `taskforge_executions`,
//! updated as it starts and finishes, deleted when retention forgets it. A
//! finished execution's row is its history record: its location is its id.
//! The schema is created and migrated by the store itself when it connects
//! (refinery, with the versioned SQL files in `services/migrations/`).
//!
//! The durability rules are the JSON Lines store's: appends wait in memory,
//! and [`Store::sync`] writes them all in one transaction; after its commit
//! they are durable, and not before (the scheduler acknowledges nothing
//! earlier). A failed transaction leaves nothing half-written: the records
//! stay buffered and the next sync writes them again.
//!
//! The client is the synchronous `postgres` crate (tokio-postgres underneath,
//! chosen over sqlx for its small footprint and plain SQL): the store runs on
//! the committer's thread, which blocks by design. That client runs a runtime
//! of its own, so it must never be used on a thread inside tokio's: the store
//! connects in [`Store::load`] (a start loads on a thread of its own), and the
//! history is read on a thread of its own too.

use std::fmt;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use bytes::Bytes;
use postgres::{Client, Config, NoTls, Row, Transaction};
use taskforge_core::{ExecutionId, Policy, Status, Terminal};

use super::{
    ExecutionRecord, Filed, FinishedExecution, FinishedRecord, FunctionRecord, HistoryReader,
    IdempotencyKey, Location, Record, Recovered, RecoveredExecution, Store, StoreError,
};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// A [`Store`] on a PostgreSQL database; see the module documentation.
pub struct PostgresStore {
    config: Config,
    /// Connected by `load`.
    client: Option<Client>,
    buffered: Vec<Record>,
    filed: Vec<(ExecutionId, Location)>,
    loaded: bool,
}

impl PostgresStore {
    /// A store on the database `config` names. Nothing connects until
    /// [`Store::load`], which also brings the schema up to date.
    pub fn new(config: Config) -> PostgresStore {
        PostgresStore {
            config,
            client: None,
            buffered: Vec::new(),
            filed: Vec::new(),
            loaded: false,
        }
    }

    /// A store on `url` (`postgres://user@host:port/database`).
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let config: Config = url.parse().map_err(|source| StoreError::Database {
            op: "parse the address of",
            source,
        })?;
        Ok(PostgresStore::new(config))
    }

    fn client(&mut self) -> Result<&mut Client, StoreError> {
        match (self.loaded, self.client.as_mut()) {
            (true, Some(client)) => Ok(client),
            _ => Err(StoreError::NotLoaded),
        }
    }
}

/// Connects to the database and brings its schema up to date.
fn connect(config: &Config) -> Result<Client, StoreError> {
    let mut client = config.connect(NoTls).map_err(db("connect to"))?;
    embedded::migrations::runner()
        .run(&mut client)
        .map_err(|error| StoreError::Migration(error.to_string()))?;
    Ok(client)
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

/// Execution ids are stored as BIGINT, bit for bit.
fn to_db(id: ExecutionId) -> i64 {
    id.0 as i64
}

fn from_db(id: i64) -> ExecutionId {
    ExecutionId(id as u64)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Where a row's history record is: the row itself, found by its id.
const IN_ITS_ROW: Location = Location {
    segment: 0,
    offset: 0,
    len: 0,
};

/// Writes one record in `tx`; returns whether it finished an execution.
fn write(tx: &mut Transaction<'_>, record: &Record) -> Result<bool, postgres::Error> {
    match record {
        Record::Function(function) => {
            tx.execute(
                "INSERT INTO taskforge_functions (function_id, name, language, code, timeout_ms, \
                 max_attempts, max_memory_bytes, created_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (function_id) DO UPDATE SET name = $2, language = $3, code = $4, \
                 timeout_ms = $5, max_attempts = $6, max_memory_bytes = $7, created_at_us = $8",
                &[
                    &function.function_id,
                    &function.name,
                    &function.language,
                    &function.code.as_ref(),
                    &(function.timeout_ms as i64),
                    &(function.max_attempts as i32),
                    &(function.max_memory_bytes as i64),
                    &(function.created_at_us as i64),
                ],
            )?;
        }
        Record::FunctionDeleted { function_id } => {
            tx.execute(
                "DELETE FROM taskforge_functions WHERE function_id = $1",
                &[function_id],
            )?;
        }
        Record::Accepted(execution) => {
            let policy = &execution.policy;
            let key = execution.idempotency.as_ref();
            tx.execute(
                "INSERT INTO taskforge_executions (id, function_id, payload, max_attempts, \
                 timeout_ms, schedule_to_start_ms, created_at_us, idempotency_key, request_digest) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
                &[
                    &to_db(execution.id),
                    &execution.function_id,
                    &execution.payload.as_ref(),
                    &(policy.max_attempts as i32),
                    &millis(policy.timeout),
                    &policy.schedule_to_start.map(millis),
                    &(execution.created_at_us as i64),
                    &key.map(|k| k.key.as_str()),
                    &key.map(|k| k.digest as i64),
                ],
            )?;
        }
        Record::Started { id, attempt, .. } => {
            tx.execute(
                "UPDATE taskforge_executions SET attempts_started = $2 \
                 WHERE id = $1 AND status IS NULL AND attempts_started < $2",
                &[&to_db(*id), &(*attempt as i32)],
            )?;
        }
        Record::Finished { id, finished } => {
            let terminal = &finished.terminal;
            let error = match terminal {
                Terminal::Completed { .. } => None,
                other => Some(other.error()),
            };
            let changed = tx.execute(
                "UPDATE taskforge_executions SET payload = '', status = $2, attempt = $3, \
                 worker_id = $4, started_at_us = $5, finished_at_us = $6, error = $7, \
                 output = $8, logs = $9 WHERE id = $1 AND status IS NULL",
                &[
                    &to_db(*id),
                    &terminal.status().as_str(),
                    &(finished.attempt as i32),
                    &finished.worker_id,
                    &(finished.started_at_us as i64),
                    &(finished.finished_at_us as i64),
                    &error,
                    &terminal.output().as_ref(),
                    &finished.logs,
                ],
            )?;
            return Ok(changed == 1);
        }
        Record::Evicted { id, .. } => {
            tx.execute(
                "DELETE FROM taskforge_executions WHERE id = $1",
                &[&to_db(*id)],
            )?;
        }
    }
    Ok(false)
}

fn function_of(row: &Row) -> FunctionRecord {
    FunctionRecord {
        function_id: row.get("function_id"),
        name: row.get("name"),
        language: row.get("language"),
        code: Bytes::from(row.get::<_, Vec<u8>>("code")),
        timeout_ms: row.get::<_, i64>("timeout_ms") as u64,
        max_attempts: row.get::<_, i32>("max_attempts") as u32,
        max_memory_bytes: row.get::<_, i64>("max_memory_bytes") as u64,
        created_at_us: row.get::<_, i64>("created_at_us") as u64,
    }
}

fn idempotency_of(row: &Row) -> Option<IdempotencyKey> {
    let key: Option<String> = row.get("idempotency_key");
    let digest: Option<i64> = row.get("request_digest");
    Some(IdempotencyKey {
        key: key?,
        digest: digest? as u64,
    })
}

fn execution_of(row: &Row) -> ExecutionRecord {
    ExecutionRecord {
        id: from_db(row.get("id")),
        function_id: row.get("function_id"),
        payload: Bytes::from(row.get::<_, Vec<u8>>("payload")),
        policy: Policy {
            max_attempts: row.get::<_, i32>("max_attempts") as u32,
            timeout: Duration::from_millis(row.get::<_, i64>("timeout_ms") as u64),
            schedule_to_start: row
                .get::<_, Option<i64>>("schedule_to_start_ms")
                .map(|ms| Duration::from_millis(ms as u64)),
        },
        created_at_us: row.get::<_, i64>("created_at_us") as u64,
        idempotency: idempotency_of(row),
    }
}

fn status_of(row: &Row) -> Result<Status, StoreError> {
    let text: String = row.get("status");
    Status::parse(&text)
        .filter(|status| status.is_terminal())
        .ok_or_else(|| StoreError::BadRow(format!("an execution has status {text:?}")))
}

fn finished_of(row: &Row) -> Result<FinishedExecution, StoreError> {
    let output = Bytes::from(row.get::<_, Option<Vec<u8>>>("output").unwrap_or_default());
    let error: Option<String> = row.get("error");
    let terminal = match status_of(row)? {
        Status::Completed => Terminal::Completed { output },
        Status::Failed => Terminal::Failed {
            error: error.unwrap_or_default(),
            output,
        },
        Status::TimedOut => Terminal::TimedOut {
            error: error.unwrap_or_default(),
        },
        _ => Terminal::Cancelled,
    };
    Ok(FinishedExecution {
        record: execution_of(row),
        finished: FinishedRecord {
            terminal,
            attempt: row.get::<_, Option<i32>>("attempt").unwrap_or(0) as u32,
            worker_id: row
                .get::<_, Option<String>>("worker_id")
                .unwrap_or_default(),
            started_at_us: row.get::<_, Option<i64>>("started_at_us").unwrap_or(0) as u64,
            finished_at_us: row.get::<_, Option<i64>>("finished_at_us").unwrap_or(0) as u64,
            logs: row.get::<_, Option<String>>("logs").unwrap_or_default(),
        },
    })
}

impl Store for PostgresStore {
    fn load(&mut self) -> Result<Recovered, StoreError> {
        if self.loaded {
            return Err(StoreError::AlreadyLoaded);
        }
        let client = self.client.insert(connect(&self.config)?);
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
        let rows = client
            .query(
                "SELECT id, function_id, status, attempt, finished_at_us, idempotency_key, \
                 request_digest FROM taskforge_executions WHERE status IS NOT NULL \
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
        self.client()?;
        self.buffered.push(record.clone());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.client()?;
        if self.buffered.is_empty() {
            return Ok(());
        }
        let Some(client) = self.client.as_mut() else {
            return Err(StoreError::NotLoaded);
        };
        let mut tx = client.transaction().map_err(db("begin a transaction on"))?;
        let mut finished = Vec::new();
        for record in &self.buffered {
            if write(&mut tx, record).map_err(db("write to"))? {
                if let Record::Finished { id, .. } = record {
                    finished.push((*id, IN_ITS_ROW));
                }
            }
        }
        tx.commit().map_err(db("commit to"))?;
        self.buffered.clear();
        self.filed.extend(finished);
        Ok(())
    }

    fn take_filed(&mut self) -> Vec<(ExecutionId, Location)> {
        std::mem::take(&mut self.filed)
    }

    fn history(&self) -> Arc<dyn HistoryReader> {
        Arc::new(PostgresHistory {
            config: self.config.clone(),
            reader: Mutex::new(None),
        })
    }

    fn wants_compaction(&self) -> bool {
        false
    }

    fn compact(&mut self) -> Result<(), StoreError> {
        self.sync()
    }
}

/// Reads finished executions on a connection of its own, on a thread of its
/// own (started at the first read; a connection is opened again after an
/// error).
struct PostgresHistory {
    config: Config,
    reader: Mutex<Option<mpsc::Sender<ReadRequest>>>,
}

struct ReadRequest {
    id: ExecutionId,
    reply: mpsc::Sender<Result<Option<FinishedExecution>, StoreError>>,
}

impl fmt::Debug for PostgresHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresHistory").finish_non_exhaustive()
    }
}

impl PostgresHistory {
    fn reader(&self) -> Result<mpsc::Sender<ReadRequest>, StoreError> {
        let mut reader = self
            .reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(requests) = reader.as_ref() {
            return Ok(requests.clone());
        }
        let (requests, incoming) = mpsc::channel::<ReadRequest>();
        let config = self.config.clone();
        std::thread::Builder::new()
            .name("taskforge-history".into())
            .spawn(move || serve_reads(&config, &incoming))
            .map_err(|source| StoreError::Io {
                op: "start the reader of",
                path: "the database".into(),
                source,
            })?;
        *reader = Some(requests.clone());
        Ok(requests)
    }
}

/// Answers reads until every sender is gone.
fn serve_reads(config: &Config, incoming: &mpsc::Receiver<ReadRequest>) {
    let mut client: Option<Client> = None;
    while let Ok(ReadRequest { id, reply }) = incoming.recv() {
        let answer = read_one(config, &mut client, id);
        if answer.is_err() {
            // The connection may be broken: the next read opens another.
            client = None;
        }
        let _ = reply.send(answer);
    }
}

fn read_one(
    config: &Config,
    client: &mut Option<Client>,
    id: ExecutionId,
) -> Result<Option<FinishedExecution>, StoreError> {
    let connection = match client {
        Some(connection) => connection,
        None => client.insert(config.connect(NoTls).map_err(db("connect to"))?),
    };
    let row = connection
        .query_opt(
            "SELECT * FROM taskforge_executions WHERE id = $1 AND status IS NOT NULL",
            &[&to_db(id)],
        )
        .map_err(db("read a finished execution from"))?;
    row.as_ref().map(finished_of).transpose()
}

impl HistoryReader for PostgresHistory {
    fn read(
        &self,
        id: ExecutionId,
        _location: Location,
    ) -> Result<Option<FinishedExecution>, StoreError> {
        let (reply, answer) = mpsc::channel();
        let gone = || StoreError::Io {
            op: "read the history from",
            path: "the database".into(),
            source: std::io::Error::other("its reader thread stopped"),
        };
        self.reader()?
            .send(ReadRequest { id, reply })
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}
