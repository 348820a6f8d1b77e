//! One sync's records as one pipelined transaction of a few multi-row
//! statements.
//!
//! A statement per record costs a round trip per record: a group commit of
//! 64 executions (an acceptance, a start and an end each) would wait on ~200
//! of them. Instead the records are gathered by kind into columns, and each
//! kind is one statement over `UNNEST` of arrays: at most five statements
//! whatever the group's size. The kinds run in lifecycle order (accept,
//! start, finish, forget), which is the order any one execution's records
//! come in, so gathering them changes nothing an execution can observe.
//! Functions are rare and order-sensitive among themselves (a registration
//! and a deletion of one id): they keep a statement each, in order.
//!
//! The transaction (BEGIN, the fence, the statements, COMMIT) is sent as a
//! pipeline without waiting for any answer in between: one round trip per
//! group commit. The fence is a function that raises when the epoch no
//! longer holds the lease (migration V3), so a fenced transaction aborts
//! and its COMMIT rolls back.

use std::collections::BTreeMap;

use std::future::Future;
use std::pin::Pin;

use taskforge_core::{ExecutionId, Terminal};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::rows::{from_db, millis, to_db};
use crate::store::{FunctionRecord, Record};

/// The statements a sync runs, prepared once per connection.
pub(super) struct Statements {
    fence: Statement,
    upsert_function: Statement,
    delete_function: Statement,
    accept: Statement,
    start: Statement,
    finish: Statement,
    forget: Statement,
}

impl Statements {
    pub(super) async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            fence: client.prepare("SELECT taskforge_fence($1)").await?,
            upsert_function: client.prepare(
                "INSERT INTO taskforge_functions (function_id, name, language, code, timeout_ms, \
                 max_attempts, max_memory_bytes, created_at_us) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (function_id) DO UPDATE SET name = $2, language = $3, code = $4, \
                 timeout_ms = $5, max_attempts = $6, max_memory_bytes = $7, created_at_us = $8",
            ).await?,
            delete_function: client
                .prepare("DELETE FROM taskforge_functions WHERE function_id = $1").await?,
            accept: client.prepare(
                "INSERT INTO taskforge_executions (id, function_id, payload, max_attempts, \
                 timeout_ms, schedule_to_start_ms, created_at_us, idempotency_key, request_digest) \
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bytea[], $4::int[], \
                 $5::bigint[], $6::bigint[], $7::bigint[], $8::text[], $9::bigint[]) \
                 ON CONFLICT (id) DO NOTHING",
            ).await?,
            start: client.prepare(
                "UPDATE taskforge_executions AS e SET attempts_started = s.attempt \
                 FROM UNNEST($1::bigint[], $2::int[]) AS s(id, attempt) \
                 WHERE e.id = s.id AND e.status IS NULL AND e.attempts_started < s.attempt",
            ).await?,
            finish: client.prepare(
                "UPDATE taskforge_executions AS e SET payload = '', status = f.status, \
                 attempt = f.attempt, worker_id = f.worker_id, started_at_us = f.started_at_us, \
                 finished_at_us = f.finished_at_us, error = f.error, output = f.output, \
                 logs = f.logs \
                 FROM UNNEST($1::bigint[], $2::text[], $3::int[], $4::text[], $5::bigint[], \
                 $6::bigint[], $7::text[], $8::bytea[], $9::text[]) \
                 AS f(id, status, attempt, worker_id, started_at_us, finished_at_us, error, \
                 output, logs) \
                 WHERE e.id = f.id AND e.status IS NULL",
            ).await?,
            forget: client
                .prepare("DELETE FROM taskforge_executions WHERE id = ANY($1::bigint[])").await?,
        })
    }
}

/// Whether the fence held, and which executions' ends this sync holds.
pub(super) enum Written {
    Fenced,
    Finished(Vec<ExecutionId>),
}

/// The SQLSTATE `taskforge_fence` raises (migration V3).
pub(super) const FENCED: &str = "TF001";

type Pending<'a> = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send + 'a>>;

/// Writes `records` in one transaction, first checking that `epoch` (when
/// given) still holds the lease. Everything is sent at once, as a pipeline
/// (BEGIN, the fence, the writes, COMMIT), so a group commit costs one
/// round trip whatever its size: a failed statement aborts the transaction
/// and its COMMIT rolls back, so the writes count only if every answer is
/// a success.
pub(super) async fn write(
    client: &Client,
    statements: &Statements,
    epoch: Option<i64>,
    records: &[Record],
) -> Result<Written, tokio_postgres::Error> {
    let columns = Columns::gather(records);
    let (start_ids, start_attempts): (Vec<i64>, Vec<i32>) = columns.started.iter().unzip();
    let mut pipeline: Vec<Pending<'_>> = vec![Box::pin(client.batch_execute("BEGIN"))];
    if records.iter().all(promises_nothing) {
        // Nobody waits on these: no need to wait for the WAL to reach the
        // disk. The next commit that does wait flushes them too (the WAL is
        // written in order), and a crash before then loses only records
        // whose loss a start repairs anyway (see `promises_nothing`).
        pipeline.push(Box::pin(
            client.batch_execute("SET LOCAL synchronous_commit TO OFF"),
        ));
    }
    let fenced_at = epoch.map(|epoch| {
        pipeline.push(Box::pin(async move {
            client.execute(&statements.fence, &[&epoch]).await.map(drop)
        }));
        pipeline.len() - 1
    });
    for change in &columns.functions {
        pipeline.push(match *change {
            FunctionChange::Upsert(function) => {
                Box::pin(upsert_function(client, statements, function))
            }
            FunctionChange::Delete(function_id) => Box::pin(async move {
                client
                    .execute(&statements.delete_function, &[&function_id])
                    .await
                    .map(drop)
            }),
        });
    }
    let accepted = &columns.accepted;
    if !accepted.id.is_empty() {
        pipeline.push(Box::pin(async move {
            let params: [&(dyn ToSql + Sync); 9] = [
                &accepted.id,
                &accepted.function_id,
                &accepted.payload,
                &accepted.max_attempts,
                &accepted.timeout_ms,
                &accepted.schedule_to_start_ms,
                &accepted.created_at_us,
                &accepted.idempotency_key,
                &accepted.request_digest,
            ];
            client.execute(&statements.accept, &params).await.map(drop)
        }));
    }
    if !start_ids.is_empty() {
        let (ids, attempts) = (&start_ids, &start_attempts);
        pipeline.push(Box::pin(async move {
            client
                .execute(&statements.start, &[ids, attempts])
                .await
                .map(drop)
        }));
    }
    let finished = &columns.finished;
    if !finished.id.is_empty() {
        pipeline.push(Box::pin(async move {
            let params: [&(dyn ToSql + Sync); 9] = [
                &finished.id,
                &finished.status,
                &finished.attempt,
                &finished.worker_id,
                &finished.started_at_us,
                &finished.finished_at_us,
                &finished.error,
                &finished.output,
                &finished.logs,
            ];
            client.execute(&statements.finish, &params).await.map(drop)
        }));
    }
    if !columns.evicted.is_empty() {
        let evicted = &columns.evicted;
        pipeline.push(Box::pin(async move {
            client
                .execute(&statements.forget, &[evicted])
                .await
                .map(drop)
        }));
    }
    pipeline.push(Box::pin(client.batch_execute("COMMIT")));
    // Polled in order the first time, so sent in order.
    let answers = futures_util::future::join_all(pipeline).await;
    if let Some(fence) = fenced_at
        && let Err(error) = &answers[fence]
        && error.code().is_some_and(|code| code.code() == FENCED)
    {
        return Ok(Written::Fenced);
    }
    for answer in answers {
        answer?;
    }
    // Every end in the batch is in its row once this commits: written now,
    // or by an earlier commit whose answer was lost (the batch is being
    // written again), which the row's `status IS NULL` guard kept.
    Ok(Written::Finished(
        finished.id.iter().copied().map(from_db).collect(),
    ))
}

/// Whether no reply waits for this record: a start (lost, the execution
/// counts one attempt fewer after a crash, as if the worker had never
/// begun it) or a forgetting (a start applies retention again).
fn promises_nothing(record: &Record) -> bool {
    matches!(record, Record::Started { .. } | Record::Evicted { .. })
}

async fn upsert_function(
    client: &Client,
    statements: &Statements,
    function: &FunctionRecord,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            &statements.upsert_function,
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
        )
        .await?;
    Ok(())
}

enum FunctionChange<'a> {
    Upsert(&'a FunctionRecord),
    Delete(&'a str),
}

#[derive(Default)]
struct Accepted<'a> {
    id: Vec<i64>,
    function_id: Vec<&'a str>,
    payload: Vec<&'a [u8]>,
    max_attempts: Vec<i32>,
    timeout_ms: Vec<i64>,
    schedule_to_start_ms: Vec<Option<i64>>,
    created_at_us: Vec<i64>,
    idempotency_key: Vec<Option<&'a str>>,
    request_digest: Vec<Option<i64>>,
}

#[derive(Default)]
struct Finished<'a> {
    id: Vec<i64>,
    status: Vec<&'static str>,
    attempt: Vec<i32>,
    worker_id: Vec<&'a str>,
    started_at_us: Vec<i64>,
    finished_at_us: Vec<i64>,
    error: Vec<Option<&'a str>>,
    output: Vec<&'a [u8]>,
    logs: Vec<&'a str>,
}

/// One sync's records, by kind. An `UPDATE … FROM` touches a row once
/// whatever joins it, so each execution appears at most once per kind:
/// its highest start, its first end (the row keeps the first anyway).
#[derive(Default)]
struct Columns<'a> {
    functions: Vec<FunctionChange<'a>>,
    accepted: Accepted<'a>,
    started: BTreeMap<i64, i32>,
    finished: Finished<'a>,
    finished_seen: std::collections::BTreeSet<i64>,
    evicted: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn gather(records: &'a [Record]) -> Columns<'a> {
        let mut columns = Columns::default();
        for record in records {
            columns.add(record);
        }
        columns
    }

    fn add(&mut self, record: &'a Record) {
        match record {
            Record::Function(function) => self.functions.push(FunctionChange::Upsert(function)),
            Record::FunctionDeleted { function_id } => {
                self.functions.push(FunctionChange::Delete(function_id));
            }
            Record::Accepted(execution) => {
                let accepted = &mut self.accepted;
                let key = execution.idempotency.as_ref();
                accepted.id.push(to_db(execution.id));
                accepted.function_id.push(&execution.function_id);
                accepted.payload.push(&execution.payload);
                accepted
                    .max_attempts
                    .push(execution.policy.max_attempts as i32);
                accepted.timeout_ms.push(millis(execution.policy.timeout));
                accepted
                    .schedule_to_start_ms
                    .push(execution.policy.schedule_to_start.map(millis));
                accepted.created_at_us.push(execution.created_at_us as i64);
                accepted.idempotency_key.push(key.map(|k| k.key.as_str()));
                accepted.request_digest.push(key.map(|k| k.digest as i64));
            }
            Record::Started { id, attempt, .. } => {
                let highest = self.started.entry(to_db(*id)).or_default();
                *highest = (*highest).max(*attempt as i32);
            }
            Record::Finished { id, finished: end } => {
                if !self.finished_seen.insert(to_db(*id)) {
                    return;
                }
                let finished = &mut self.finished;
                let terminal = &end.terminal;
                finished.id.push(to_db(*id));
                finished.status.push(terminal.status().as_str());
                finished.attempt.push(end.attempt as i32);
                finished.worker_id.push(&end.worker_id);
                finished.started_at_us.push(end.started_at_us as i64);
                finished.finished_at_us.push(end.finished_at_us as i64);
                finished.error.push(match terminal {
                    Terminal::Completed { .. } => None,
                    other => Some(other.error()),
                });
                finished.output.push(terminal.output().as_ref());
                finished.logs.push(&end.logs);
            }
            Record::Evicted { id, .. } => self.evicted.push(to_db(*id)),
        }
    }
}
