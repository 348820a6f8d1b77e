//! Finished executions read back from the database, for the API.

use std::fmt;
use std::sync::{Mutex, mpsc};

use postgres::{Client, Config, NoTls};
use taskforge_core::ExecutionId;

use super::db;
use super::rows::{finished_of, to_db};
use crate::store::{FinishedExecution, HistoryReader, Location, StoreError};

/// Reads finished executions on a connection of its own, on a thread of its
/// own (started at the first read; a connection is opened again after an
/// error).
pub(super) struct PostgresHistory {
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
