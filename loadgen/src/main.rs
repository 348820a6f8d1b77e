//! `taskforge-loadgen`: parses the command line, runs, prints the headline
//! figures, writes the report, and exits 0 (within the error budget), 1 (error
//! rate above `--max-error-rate`) or 2 (could not run).

use std::process::ExitCode;

use taskforge_loadgen::report::markdown;
use taskforge_loadgen::{Config, run};

// The same allocator as the `taskforge` binary's: under glibc's malloc the
// embedded cluster spent 17% of its samples in malloc and free.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The embedded cluster's Python and JavaScript sandboxes are launched
    // through this binary.
    if let Some(code) = taskforge_services::sandbox::run_if_sandbox_process() {
        return ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX));
    }
    let config = Config::from_env();
    // The embedded cluster logs through tracing; warnings and errors show.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let report = match run(&config) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("taskforge-loadgen: {error}");
            return ExitCode::from(2);
        }
    };
    print!("{}", markdown::headline(&report));
    if let Some(dir) = &config.out {
        match report.write(dir) {
            Ok(files) => eprintln!("wrote {} files to {}", files.len(), dir.display()),
            Err(error) => {
                eprintln!(
                    "taskforge-loadgen: could not write the report to {}: {error}",
                    dir.display()
                );
                return ExitCode::from(2);
            }
        }
    }
    let error_rate = report.error_rate();
    if error_rate > config.max_error_rate {
        eprintln!(
            "taskforge-loadgen: error rate {:.4}% is above --max-error-rate {:.4}%",
            error_rate * 100.0,
            config.max_error_rate * 100.0
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
