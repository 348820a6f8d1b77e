//! The scheduler lease in the database: one row of `taskforge_lease`.
//!
//! The rules are the sans-IO [`taskforge_core::lease::Lease`]'s; this is
//! the store side of them, each request one statement. Expiry is on the
//! database's clock (`clock_timestamp()`), so schedulers need not agree on
//! the time: a grant is counted from when the statement ran, which is after
//! the scheduler sent it, so the database's end of a term is never before
//! the end the scheduler acts to. Writes are fenced by the epoch in the
//! same row (see the store's sync).

use std::time::Duration;

use tokio_postgres::{Client, Config, NoTls};

/// The database's answer to a lease request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// The lease is this scheduler's, for the term `epoch`.
    Granted { epoch: u64 },
    /// Another term holds it; `leader` is where its scheduler said clients
    /// reach it ("" before any scheduler ever led).
    Refused { epoch: u64, leader: String },
}

/// Acquires the lease if it expired, as the next epoch. The outer SELECT
/// reads the row as it was before the UPDATE (one snapshot), so a refusal
/// names the holder.
const ACQUIRE: &str = "WITH won AS ( \
     UPDATE taskforge_lease SET epoch = epoch + 1, holder = $1, url = $2, \
     expires_at = clock_timestamp() + $3 * interval '1 millisecond' \
     WHERE id = 1 AND expires_at < clock_timestamp() RETURNING epoch) \
     SELECT (SELECT epoch FROM won) AS won, epoch, url FROM taskforge_lease WHERE id = 1";

/// Extends the term `$1` if it is still the row's.
const RENEW: &str = "WITH won AS ( \
     UPDATE taskforge_lease SET expires_at = clock_timestamp() + $2 * interval '1 millisecond' \
     WHERE id = 1 AND epoch = $1 RETURNING epoch) \
     SELECT (SELECT epoch FROM won) AS won, epoch, url FROM taskforge_lease WHERE id = 1";

/// Ends the term `$1` now, so a standby need not wait for it to expire.
const RELEASE: &str =
    "UPDATE taskforge_lease SET expires_at = '-infinity' WHERE id = 1 AND epoch = $1";

/// How long a lease statement may wait on the database (a row lock held by
/// a stuck transaction, a server under pressure) before it gives up.
const STATEMENT_TIMEOUT: &str = "SET statement_timeout = 2000";

/// A connection for lease requests, opened on first use and again after
/// any error.
pub struct LeaseDb {
    config: Config,
    client: Option<Client>,
}

impl std::fmt::Debug for LeaseDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseDb").finish_non_exhaustive()
    }
}

impl LeaseDb {
    pub fn open(url: &str) -> Result<LeaseDb, tokio_postgres::Error> {
        Ok(LeaseDb {
            config: url.parse()?,
            client: None,
        })
    }

    /// Asks for the lease for `duration`, as `holder` reached at `url`.
    pub async fn acquire(
        &mut self,
        holder: &str,
        url: &str,
        duration: Duration,
    ) -> Result<LeaseAnswer, tokio_postgres::Error> {
        let ms = duration.as_millis() as f64;
        self.ask(ACQUIRE, &[&holder, &url, &ms]).await
    }

    /// Asks to extend the term `epoch` by `duration` from now.
    pub async fn renew(
        &mut self,
        epoch: u64,
        duration: Duration,
    ) -> Result<LeaseAnswer, tokio_postgres::Error> {
        let ms = duration.as_millis() as f64;
        self.ask(RENEW, &[&(epoch as i64), &ms]).await
    }

    /// Gives the term `epoch` up (a graceful stop).
    pub async fn release(&mut self, epoch: u64) -> Result<(), tokio_postgres::Error> {
        let client = self.client().await?;
        let result = client.execute(RELEASE, &[&(epoch as i64)]).await;
        self.forget_on_error(result).map(drop)
    }

    async fn ask(
        &mut self,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<LeaseAnswer, tokio_postgres::Error> {
        let client = self.client().await?;
        let result = client.query_one(statement, params).await;
        let row = self.forget_on_error(result)?;
        let won: Option<i64> = row.get("won");
        let epoch: i64 = row.get("epoch");
        Ok(match won {
            Some(won) => LeaseAnswer::Granted { epoch: won as u64 },
            None => LeaseAnswer::Refused {
                epoch: epoch as u64,
                leader: row.get("url"),
            },
        })
    }

    /// Drops the connection: a request abandoned on it (timed out by the
    /// caller) may still be running.
    pub fn reset(&mut self) {
        self.client = None;
    }

    async fn client(&mut self) -> Result<&Client, tokio_postgres::Error> {
        let client = match self.client.take() {
            Some(client) if !client.is_closed() => client,
            _ => {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "the lease connection ended");
                    }
                });
                client.batch_execute(STATEMENT_TIMEOUT).await?;
                client
            }
        };
        Ok(self.client.insert(client))
    }

    /// Drops the connection after an error: it may be broken, and a request
    /// that timed out may still be running on it.
    fn forget_on_error<T>(
        &mut self,
        result: Result<T, tokio_postgres::Error>,
    ) -> Result<T, tokio_postgres::Error> {
        if result.is_err() {
            self.client = None;
        }
        result
    }
}
