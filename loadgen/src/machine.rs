//! The machine a run ran on, for the report: figures only mean something next
//! to the CPU they were measured on and how busy it was with other work.
//!
//! Read from `/proc` on Linux; elsewhere the fields say `unknown`. The CPU time
//! other processes used while the run went ([`CpuUse`]) is the honest measure
//! of noise on a shared machine: the load average only trails it.

use serde::Serialize;

/// What the report says about the machine.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub logical_cpus: usize,
    pub os: String,
    pub kernel: String,
    pub memory_mb: Option<u64>,
    /// 1, 5 and 15 minute load averages when the run started: anything well
    /// above zero means other work shared the CPUs.
    pub load_average: Option<[f64; 3]>,
    /// CPU time spent while the run went, by it and by everything else.
    pub cpu_use: Option<CpuUse>,
}

/// CPU seconds over a stretch of wall-clock time.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CpuUse {
    pub elapsed_s: f64,
    /// By this process (the load generator and an embedded cluster).
    pub ours_s: f64,
    /// By every other process on the machine (and the hypervisor's steal).
    pub others_s: f64,
}

/// A reading of the machine's and this process's CPU time.
#[derive(Clone, Copy, Debug)]
pub struct CpuClock {
    at: std::time::Instant,
    machine_busy_ticks: u64,
    own_ticks: u64,
}

/// Clock ticks per second of `/proc/stat` and `/proc/<pid>/stat` (`USER_HZ`,
/// 100 on every Linux build in practice).
const TICKS_PER_S: f64 = 100.0;

impl CpuClock {
    pub fn now() -> Option<CpuClock> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let machine_busy_ticks = machine_busy(&stat)?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        Some(CpuClock {
            at: std::time::Instant::now(),
            machine_busy_ticks,
            own_ticks: own_ticks(&own)?,
        })
    }

    /// The CPU time used since this reading.
    pub fn since(&self) -> Option<CpuUse> {
        let now = CpuClock::now()?;
        let busy = now
            .machine_busy_ticks
            .saturating_sub(self.machine_busy_ticks) as f64;
        let ours = now.own_ticks.saturating_sub(self.own_ticks) as f64;
        Some(CpuUse {
            elapsed_s: (now.at - self.at).as_secs_f64(),
            ours_s: ours / TICKS_PER_S,
            others_s: ((busy - ours) / TICKS_PER_S).max(0.0),
        })
    }
}

/// user + nice + system + irq + softirq + steal of the `cpu` line.
fn machine_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    Some(
        [0, 1, 2, 5, 6, 7]
            .iter()
            .filter_map(|&i| fields.get(i))
            .sum(),
    )
}

/// utime + stime of a `/proc/<pid>/stat` line (fields 14 and 15; the command
/// name before them is in parentheses and may hold spaces).
fn own_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

impl Machine {
    pub fn probe() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let cpu = read("/proc/cpuinfo")
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, name)| name.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let memory_mb = read("/proc/meminfo").and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / 1024)
        });
        let load_average = read("/proc/loadavg").and_then(|text| {
            let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
            Some([fields.next()??, fields.next()??, fields.next()??])
        });
        Machine {
            cpu,
            logical_cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            os: std::env::consts::OS.to_string(),
            kernel: read("/proc/sys/kernel/osrelease")
                .map_or_else(|| "unknown".to_string(), |k| k.trim().to_string()),
            memory_mb,
            load_average,
            cpu_use: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_lines_parse() {
        let stat = "cpu  100 5 50 9000 20 3 7 11 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(machine_busy(stat), Some(100 + 5 + 50 + 3 + 7 + 11));
        let own = "4242 (taskforge (x) y) S 1 2 3 4 5 6 7 8 9 10 321 123 0 0 20 0";
        assert_eq!(own_ticks(own), Some(321 + 123));
        assert_eq!(own_ticks("garbage"), None);
    }
}
