//! The target's resident memory over a run, read from `/proc`.
//!
//! For a scheduler or gateway on this machine the command line names its
//! process (`--target-pid`); an embedded cluster runs inside the loadgen, so
//! the loadgen's own process is sampled (its clients included). A sample is
//! taken every timeline interval and reported beside the throughput, so a
//! memory that grows with the history, rather than with the work in flight,
//! shows as a slope.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Whose memory to follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watched {
    /// Another process on this machine.
    Pid(u32),
    /// The loadgen itself (an embedded cluster runs inside it).
    Loadgen,
}

impl Watched {
    /// How the report names it.
    pub fn describe(self) -> String {
        match self {
            Watched::Pid(pid) => format!("process {pid}"),
            Watched::Loadgen => "the loadgen process (embedded cluster and clients)".to_string(),
        }
    }

    fn status_path(self) -> String {
        match self {
            Watched::Pid(pid) => format!("/proc/{pid}/status"),
            Watched::Loadgen => "/proc/self/status".to_string(),
        }
    }

    /// Its resident set size now, or `None` if it cannot be read (gone, or
    /// not Linux).
    pub fn rss_bytes(self) -> Option<u64> {
        let status = std::fs::read_to_string(self.status_path()).ok()?;
        parse_vm_rss(&status)
    }
}

/// `VmRSS:    123456 kB` → bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let kib: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => Some(kib * 1024),
        _ => None,
    }
}

/// One reading.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    /// Seconds from the start of the run.
    pub t_s: f64,
    pub rss_bytes: u64,
}

/// What the report says of the target's memory.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryTrace {
    pub process: String,
    pub samples: Vec<Sample>,
    pub first_rss_bytes: u64,
    pub peak_rss_bytes: u64,
    pub last_rss_bytes: u64,
}

impl MemoryTrace {
    fn new(watched: Watched, samples: Vec<Sample>) -> Option<MemoryTrace> {
        let first = samples.first()?.rss_bytes;
        let last = samples.last()?.rss_bytes;
        let peak = samples.iter().map(|s| s.rss_bytes).max()?;
        Some(MemoryTrace {
            process: watched.describe(),
            samples,
            first_rss_bytes: first,
            peak_rss_bytes: peak,
            last_rss_bytes: last,
        })
    }
}

/// Samples a process's memory until [`Sampler::finish`].
#[derive(Debug)]
pub struct Sampler {
    watched: Watched,
    running: Option<(oneshot::Sender<()>, JoinHandle<Vec<Sample>>)>,
}

impl Sampler {
    /// Starts sampling `watched` every `every` from `start` on (a first
    /// sample at once).
    pub fn start(watched: Watched, start: Instant, every: Duration) -> Sampler {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut ticks = tokio::time::interval_at(start, every);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = &mut stopped => break,
                }
                let t_s = start.elapsed().as_secs_f64();
                if let Some(rss_bytes) = watched.rss_bytes() {
                    samples.push(Sample { t_s, rss_bytes });
                }
            }
            if let Some(rss_bytes) = watched.rss_bytes() {
                let t_s = start.elapsed().as_secs_f64();
                samples.push(Sample { t_s, rss_bytes });
            }
            samples
        });
        Sampler {
            watched,
            running: Some((stop, task)),
        }
    }

    /// Stops, with what was sampled (`None` if nothing could be read).
    pub async fn finish(mut self) -> Option<MemoryTrace> {
        let (stop, task) = self.running.take()?;
        let _ = stop.send(());
        let samples = task.await.ok()?;
        MemoryTrace::new(self.watched, samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_size_is_read_from_proc_status() {
        let status = "Name:\ttaskforge\nVmPeak:\t  900000 kB\nVmRSS:\t  123456 kB\nThreads:\t8\n";
        assert_eq!(parse_vm_rss(status), Some(123_456 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn this_process_has_a_resident_size() {
        let rss = Watched::Loadgen
            .rss_bytes()
            .expect("/proc/self/status is readable");
        assert!(rss > 0);
    }
}
