//! The progress display while a run goes: phase, progress, live throughput,
//! live p99 and errors.
//!
//! On a terminal it is one line redrawn five times a second, with a bar; when
//! stderr is not a terminal (CI logs, a file) it is one plain line per second,
//! so the log stays readable. It reads the recorder's live counters, which
//! cover what ended since it last looked. Written by hand: a dozen lines do
//! what a progress-bar crate and its terminal stack would.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::load::{Plan, Stop};
use crate::measure::Recorder;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar on a terminal, plain lines otherwise.
    Auto,
    /// A redrawn bar.
    Bar,
    /// One plain line per second.
    Lines,
    /// Nothing.
    Off,
}

impl ProgressMode {
    /// `Auto` resolved against stderr.
    fn resolve(self) -> ProgressMode {
        match self {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Lines,
            other => other,
        }
    }
}

/// A running progress display; [`Progress::finish`] ends it.
#[derive(Debug)]
pub struct Progress {
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Progress {
    /// Starts showing the progress of `plan`, started at `start`, under `label`.
    pub fn start(
        mode: ProgressMode,
        recorder: Arc<Recorder>,
        plan: Plan,
        start: Instant,
        label: String,
    ) -> Progress {
        let mode = mode.resolve();
        let tick = match mode {
            ProgressMode::Off => return Progress { running: None },
            ProgressMode::Bar => Duration::from_millis(200),
            _ => Duration::from_secs(1),
        };
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(start + tick, tick);
            let mut last = start;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = &mut stopped => break,
                }
                let now = Instant::now();
                let line = status_line(&recorder, &plan, start, now - last, now, &label);
                last = now;
                draw(mode, &line);
            }
            let line = status_line(
                &recorder,
                &plan,
                start,
                Instant::now() - last,
                Instant::now(),
                &label,
            );
            draw(mode, &line);
            if mode == ProgressMode::Bar {
                eprintln!();
            }
        });
        Progress {
            running: Some((stop, task)),
        }
    }

    /// Draws the last line and stops.
    pub async fn finish(self) {
        if let Some((stop, task)) = self.running {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}

fn draw(mode: ProgressMode, line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = match mode {
        ProgressMode::Bar => write!(err, "\r\x1b[2K{line}"),
        _ => writeln!(err, "{line}"),
    };
    let _ = err.flush();
}

fn status_line(
    recorder: &Recorder,
    plan: &Plan,
    start: Instant,
    since_last: Duration,
    now: Instant,
    label: &str,
) -> String {
    let live = recorder.take_live();
    let elapsed = now.saturating_duration_since(start);
    let (phase, done) = match plan.stop {
        _ if elapsed < plan.warmup => ("warm-up", 0.0),
        Stop::After(duration) => {
            let measured = elapsed - plan.warmup;
            match measured < duration {
                true => ("measuring", measured.as_secs_f64() / duration.as_secs_f64()),
                false => ("draining", 1.0),
            }
        }
        Stop::Count(count) => ("measuring", live.issued as f64 / count.max(1) as f64),
    };
    // A rate over a sliver of time (the last line, drawn as the run ends)
    // would mean nothing.
    let rate = match since_last < Duration::from_millis(100) {
        true => "-".to_string(),
        false => format!("{:.0}", live.completed as f64 / since_last.as_secs_f64()),
    };
    let p99 = match live.e2e.is_empty() {
        true => "-".to_string(),
        false => format_us(live.e2e.value_at_quantile(0.99)),
    };
    let width = 24;
    let filled = ((done.clamp(0.0, 1.0) * width as f64) as usize).min(width);
    format!(
        "{label} [{}{}] {:>3.0}% {phase:<9} {:>6.1}s {rate:>9}/s  p99 {p99:>8}  errors {}",
        "#".repeat(filled),
        "-".repeat(width - filled),
        done * 100.0,
        elapsed.as_secs_f64(),
        live.errors,
    )
}

/// Microseconds for people: `840µs`, `1.21ms`, `3.5s`.
pub fn format_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..1_000_000 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microseconds_read_well() {
        assert_eq!(format_us(840), "840µs");
        assert_eq!(format_us(1_210), "1.21ms");
        assert_eq!(format_us(3_500_000), "3.50s");
    }
}
