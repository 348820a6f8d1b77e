//! Finished executions read back, listed and counted from the database, for
//! the API: the history is searched with SQL on indexes
//! (`V4__history_search.sql`), and the scheduler keeps none of it in memory.

use std::fmt;
use std::sync::{Mutex, mpsc};

use postgres::{Client, Config, NoTls};
use taskforge_core::ExecutionId;

use super::db;
use super::rows::{finished_of, status_of, to_db};
use crate::store::{
    FinishedExecution, HistoryQuery, HistoryReader, HistorySearch, Location, StatusCounts,
    StoreError,
};

/// Reads finished executions on a connection of its own, on a thread of its
/// own (started at the first read; a connection is opened again after an
/// error).
pub(super) struct PostgresHistory {
    config: Config,
    reader: Mutex<Option<mpsc::Sender<ReadRequest>>>,
}

type Reply<T> = mpsc::Sender<Result<T, StoreError>>;

enum ReadRequest {
    One(ExecutionId, Reply<Option<FinishedExecution>>),
    List(HistoryQuery, Reply<Vec<FinishedExecution>>),
    Counts(Reply<StatusCounts>),
}

impl fmt::Debug for PostgresHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresHistory").finish_non_exhaustive()
    }
}

impl PostgresHistory {
    pub(super) fn new(config: Config) -> PostgresHistory {
        PostgresHistory {
            config,
            reader: Mutex::new(None),
        }
    }

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
    while let Ok(request) = incoming.recv() {
        let failed = match request {
            ReadRequest::One(id, reply) => answer(config, &mut client, reply, |c| read_one(c, id)),
            ReadRequest::List(query, reply) => {
                answer(config, &mut client, reply, |c| list(c, &query))
            }
            ReadRequest::Counts(reply) => answer(config, &mut client, reply, counts),
        };
        if failed {
            // The connection may be broken: the next read opens another.
            client = None;
        }
    }
}

/// Runs `read` on the connection (opened if need be) and sends its answer;
/// true if it failed.
fn answer<T>(
    config: &Config,
    client: &mut Option<Client>,
    reply: Reply<T>,
    read: impl FnOnce(&mut Client) -> Result<T, StoreError>,
) -> bool {
    let result = match client {
        Some(connection) => read(connection),
        None => match config.connect(NoTls).map_err(db("connect to")) {
            Ok(connection) => read(client.insert(connection)),
            Err(error) => Err(error),
        },
    };
    let failed = result.is_err();
    let _ = reply.send(result);
    failed
}

fn read_one(client: &mut Client, id: ExecutionId) -> Result<Option<FinishedExecution>, StoreError> {
    let row = client
        .query_opt(
            "SELECT * FROM taskforge_executions WHERE id = $1 AND status IS NOT NULL",
            &[&to_db(id)],
        )
        .map_err(db("read a finished execution from"))?;
    row.as_ref().map(finished_of).transpose()
}

/// The id's place in id order (see `V4__history_search.sql`).
fn sort_key(id: ExecutionId) -> i64 {
    (id.0 ^ (1 << 63)) as i64
}

fn list(client: &mut Client, query: &HistoryQuery) -> Result<Vec<FinishedExecution>, StoreError> {
    let after = query.after.map_or(i64::MIN, sort_key);
    let status = query.status.map(|status| status.as_str().to_string());
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    // One statement for every filter: a NULL parameter matches anything,
    // and the planner picks the index that fits the filters given.
    let rows = client
        .query(
            "SELECT * FROM taskforge_executions \
             WHERE status IS NOT NULL AND sort_key > $1 \
               AND ($2::TEXT IS NULL OR status = $2) \
               AND ($3::TEXT IS NULL OR function_id = $3) \
             ORDER BY sort_key LIMIT $4",
            &[&after, &status, &query.function_id, &limit],
        )
        .map_err(db("list the history in"))?;
    rows.iter().map(finished_of).collect()
}

fn counts(client: &mut Client) -> Result<StatusCounts, StoreError> {
    let rows = client
        .query(
            "SELECT status, count(*) AS n FROM taskforge_executions \
             WHERE status IS NOT NULL GROUP BY status",
            &[],
        )
        .map_err(db("count the history in"))?;
    let mut counts = StatusCounts::default();
    for row in &rows {
        counts.add(status_of(row)?, row.get::<_, i64>("n") as u64);
    }
    Ok(counts)
}

impl PostgresHistory {
    /// Sends a request to the reader thread and waits for its answer.
    fn ask<T>(&self, request: impl FnOnce(Reply<T>) -> ReadRequest) -> Result<T, StoreError> {
        let (reply, answer) = mpsc::channel();
        let gone = || StoreError::Io {
            op: "read the history from",
            path: "the database".into(),
            source: std::io::Error::other("its reader thread stopped"),
        };
        self.reader()?.send(request(reply)).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl HistoryReader for PostgresHistory {
    fn read(
        &self,
        id: ExecutionId,
        _location: Location,
    ) -> Result<Option<FinishedExecution>, StoreError> {
        self.ask(|reply| ReadRequest::One(id, reply))
    }

    fn search(&self) -> Option<&dyn HistorySearch> {
        Some(self)
    }
}

impl HistorySearch for PostgresHistory {
    fn list(&self, query: &HistoryQuery) -> Result<Vec<FinishedExecution>, StoreError> {
        self.ask(|reply| ReadRequest::List(query.clone(), reply))
    }

    fn counts(&self) -> Result<StatusCounts, StoreError> {
        self.ask(ReadRequest::Counts)
    }
}
