//! A PostgreSQL schema of its own for each test, dropped afterwards.
//!
//! The server is `TASKFORGE_TEST_DATABASE_URL`, by default the machine's
//! (`postgres://postgres@127.0.0.1:5432/test`). Where none answers the tests
//! say so and skip, unless `TASKFORGE_REQUIRE_POSTGRES` is set (as `.ci/run`
//! does): then they fail.
//!
//! The synchronous client runs a runtime of its own, so its work here runs
//! on a thread of its own: the tests that use a schema may be async.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use postgres::{Client, Config, NoTls};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema for one test; its tables go with it on drop.
pub struct TestSchema {
    admin: Option<Client>,
    name: String,
    config: Config,
    url: String,
}

impl TestSchema {
    /// A fresh schema, or `None` (having said why) if no server answers and
    /// none is required.
    pub fn create(label: &str) -> Option<TestSchema> {
        off_runtime(|| TestSchema::create_here(label))
    }

    fn create_here(label: &str) -> Option<TestSchema> {
        let url = std::env::var("TASKFORGE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_URL.to_string());
        let mut config: Config = url
            .parse()
            .expect("TASKFORGE_TEST_DATABASE_URL is a postgres:// URL");
        config.connect_timeout(Duration::from_secs(5));
        let mut admin = match config.connect(NoTls) {
            Ok(client) => client,
            Err(error) if std::env::var_os("TASKFORGE_REQUIRE_POSTGRES").is_some() => {
                panic!("PostgreSQL at {url} is required (TASKFORGE_REQUIRE_POSTGRES) but: {error}")
            }
            Err(error) => {
                eprintln!(
                    "skipped: no PostgreSQL at {url} ({error}); set TASKFORGE_TEST_DATABASE_URL"
                );
                return None;
            }
        };
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tf_{label}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .expect("create the test's schema");
        config.options(&format!("-c search_path={name}"));
        let separator = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{separator}options=-c%20search_path%3D{name}");
        Some(TestSchema {
            admin: Some(admin),
            name,
            config,
            url,
        })
    }

    /// Connections to the schema alone (the store takes the asynchronous
    /// client's configuration).
    pub fn config(&self) -> tokio_postgres::Config {
        let mut config: tokio_postgres::Config = self.url.parse().expect("the schema's URL parses");
        config.connect_timeout(Duration::from_secs(5));
        config
    }

    /// Runs `work` with a connection to the schema, off the runtime.
    pub fn with_client<T: Send>(&self, work: impl FnOnce(&mut Client) -> T + Send) -> T {
        let config = self.config.clone();
        off_runtime(move || {
            let mut client = config.connect(NoTls).expect("connect to the test schema");
            work(&mut client)
        })
    }

    /// The same, as a URL for `--store`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (Some(mut admin), name) = (self.admin.take(), &self.name) else {
            return;
        };
        let config = self.config.clone();
        off_runtime(move || {
            let drop_schema = format!("DROP SCHEMA {name} CASCADE");
            if admin.batch_execute(&drop_schema).is_err() {
                // The server restarted under the test: a new connection.
                if let Ok(mut again) = config.connect(NoTls) {
                    let _ = again.batch_execute(&drop_schema);
                }
            }
        });
    }
}

/// Runs `work` on a thread outside any tokio runtime.
fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(work)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
