//! Rows read back as the store's records.

use std::time::Duration;

use bytes::Bytes;
use postgres::Row;
use taskforge_core::{ExecutionId, Policy, Status, Terminal};

use crate::store::{
    ExecutionRecord, FinishedExecution, FinishedRecord, FunctionRecord, IdempotencyKey, StoreError,
};

/// Execution ids are stored as BIGINT, bit for bit.
pub(super) fn to_db(id: ExecutionId) -> i64 {
    id.0 as i64
}

pub(super) fn from_db(id: i64) -> ExecutionId {
    ExecutionId(id as u64)
}

pub(super) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn function_of(row: &Row) -> FunctionRecord {
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

pub(super) fn idempotency_of(row: &Row) -> Option<IdempotencyKey> {
    let key: Option<String> = row.get("idempotency_key");
    let digest: Option<i64> = row.get("request_digest");
    Some(IdempotencyKey {
        key: key?,
        digest: digest? as u64,
    })
}

pub(super) fn execution_of(row: &Row) -> ExecutionRecord {
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

pub(super) fn status_of(row: &Row) -> Result<Status, StoreError> {
    let text: String = row.get("status");
    Status::parse(&text)
        .filter(|status| status.is_terminal())
        .ok_or_else(|| StoreError::BadRow(format!("an execution has status {text:?}")))
}

pub(super) fn finished_of(row: &Row) -> Result<FinishedExecution, StoreError> {
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
