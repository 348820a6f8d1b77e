//! Retention in the database: the history is not in the scheduler's memory,
//! so the store forgets finished executions past their age or beyond the
//! newest `max_count` itself, every [`PRUNE_EVERY`], in a fenced transaction
//! of its own (a deposed leader prunes nothing).

use std::time::Duration;

use taskforge_core::ExecutionId;
use taskforge_core::scheduler::Retention;
use tokio_postgres::Client;

use super::batch::FENCED;
use super::rows::from_db;

/// How often retention runs: forgetting is never urgent, and each run walks
/// the newest `max_count` entries of an index.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(10);

pub(super) enum Pruned {
    /// The executions with an idempotency key that were forgotten (the
    /// scheduler holds their keys).
    Removed(Vec<ExecutionId>),
    /// Another scheduler holds the lease now.
    Fenced,
}

/// Forgets what `retention` no longer keeps; the age counts on the
/// database's clock.
pub(super) async fn prune(
    client: &mut Client,
    fence: Option<i64>,
    retention: Retention,
) -> Result<Pruned, tokio_postgres::Error> {
    let max_age_us = i64::try_from(retention.max_age.as_micros()).unwrap_or(i64::MAX);
    let keep = i64::try_from(retention.max_count).unwrap_or(i64::MAX);
    let transaction = client.transaction().await?;
    if let Some(epoch) = fence {
        if let Err(error) = transaction
            .execute("SELECT taskforge_fence($1)", &[&epoch])
            .await
        {
            if error.code().is_some_and(|code| code.code() == FENCED) {
                return Ok(Pruned::Fenced);
            }
            return Err(error);
        }
    }
    let too_old = transaction
        .query(
            "DELETE FROM taskforge_executions \
             WHERE status IS NOT NULL AND finished_at_us < \
                   (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT - $1 \
             RETURNING id, idempotency_key IS NOT NULL AS keyed",
            &[&max_age_us],
        )
        .await?;
    let too_many = transaction
        .query(
            "DELETE FROM taskforge_executions WHERE id IN ( \
                 SELECT id FROM taskforge_executions WHERE status IS NOT NULL \
                 ORDER BY finished_at_us DESC, seq DESC OFFSET $1) \
             RETURNING id, idempotency_key IS NOT NULL AS keyed",
            &[&keep],
        )
        .await?;
    transaction.commit().await?;
    Ok(Pruned::Removed(
        too_old
            .iter()
            .chain(&too_many)
            .filter(|row| row.get::<_, bool>("keyed"))
            .map(|row| from_db(row.get("id")))
            .collect(),
    ))
}
