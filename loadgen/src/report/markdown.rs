//! `report.md`: the report as tables people read — the headline figures, the
//! latency percentiles, the sweep's cells, and how the run was set up — with
//! the plots inline. [`headline`] is the short form printed at the end of a run.

use std::fmt::Write;

use super::Report;
use crate::measure::Percentiles;
use crate::summary::Summary;
use crate::sweep::Cell;

/// The whole of `report.md`.
pub fn report(report: &Report) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {}\n", report.name);
    let _ = writeln!(md, "```\n{}\n```\n", report.command);
    if let Some(run) = &report.run {
        figures(&mut md, report, run);
        latency_table(&mut md, run);
        let _ = writeln!(md, "![latency percentiles](latency.svg)\n");
        let _ = writeln!(
            md,
            "![throughput, p99 and running executions over time](timeline.svg)\n"
        );
        if let Some(memory) = &run.memory {
            let mb = |bytes: u64| bytes as f64 / 1e6;
            let _ = writeln!(
                md,
                "Resident memory of {}: {:.1} MB at the start, {:.1} MB at the peak, \
                 {:.1} MB at the end.\n",
                memory.process,
                mb(memory.first_rss_bytes),
                mb(memory.peak_rss_bytes),
                mb(memory.last_rss_bytes)
            );
        }
        errors(&mut md, run);
    }
    if let Some(cells) = &report.sweep {
        sweep_table(&mut md, cells);
        let _ = writeln!(md, "![throughput per W × P](sweep.svg)\n");
        let _ = writeln!(md, "![end-to-end latency per W × P](latency.svg)\n");
        for cell in cells {
            if cell.summary.errors > 0 {
                let _ = writeln!(md, "### Errors in {}\n", cell.shape);
                errors(&mut md, &cell.summary);
            }
        }
    }
    setup(&mut md, report);
    md
}

/// A few lines for the terminal at the end of a run.
pub fn headline(report: &Report) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "{}", report.name);
    if let Some(run) = &report.run {
        let e2e = &run.latency_us.e2e;
        let _ = writeln!(
            text,
            "  throughput {}/s   completed {}   errors {} ({:.3}%)",
            thousands(run.throughput_per_s),
            thousands(run.completed as f64),
            run.errors,
            run.error_rate * 100.0
        );
        let _ = writeln!(
            text,
            "  e2e p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            us(e2e.p50),
            us(e2e.p90),
            us(e2e.p99),
            us(e2e.p999),
            us(e2e.max)
        );
        let _ = writeln!(
            text,
            "  capacity {}   observed concurrency {:.2} (Little's law {:.2})   utilization {:.3}",
            run.capacity, run.observed_concurrency, run.littles_law_concurrency, run.utilization
        );
        if let Some(efficiency) = report.efficiency {
            let _ = writeln!(text, "  efficiency {efficiency:.3}");
        }
    }
    if let Some(cells) = &report.sweep {
        for cell in cells {
            let theoretical = cell
                .theoretical_per_s
                .map_or_else(String::new, |t| format!(" of {}/s", thousands(t)));
            let _ = writeln!(
                text,
                "  {:>6}  {}/s{theoretical}   utilization {:.3}   e2e p99 {}",
                cell.shape,
                thousands(cell.summary.throughput_per_s),
                cell.summary.utilization,
                us(cell.summary.latency_us.e2e.p99)
            );
        }
    }
    if let (Some(ceiling), Some(ratio)) = (report.baseline_per_s, report.ratio_to_baseline) {
        let _ = writeln!(
            text,
            "  baseline (unary gRPC ceiling) {}/s   ratio {:.3}",
            thousands(ceiling),
            ratio
        );
    }
    if let (Some(sequential), Some(ratio)) =
        (&report.baseline_latency_us, report.e2e_p50_to_baseline_p50)
    {
        let _ = writeln!(
            text,
            "  baseline one call at a time: p50 {}  p99 {}   e2e p50 / baseline p50 {:.2}",
            us(sequential.p50),
            us(sequential.p99),
            ratio
        );
    }
    text
}

fn figures(md: &mut String, report: &Report, run: &Summary) {
    let _ = writeln!(md, "| figure | value |\n|---|---|");
    let mut row = |name: &str, value: String| {
        let _ = writeln!(md, "| {name} | {value} |");
    };
    row(
        "throughput",
        format!("**{}** executions/s", thousands(run.throughput_per_s)),
    );
    if let (Some(baseline), Some(ratio)) = (&report.baseline, report.ratio_to_baseline) {
        row(
            "baseline: transport ceiling",
            format!(
                "{} calls/s ({} clients, {} connections)",
                thousands(baseline.throughput_per_s),
                baseline.concurrency,
                baseline.connections
            ),
        );
        row("ratio to baseline", format!("**{ratio:.3}**"));
    }
    if let (Some(sequential), Some(ratio)) =
        (&report.baseline_latency_us, report.e2e_p50_to_baseline_p50)
    {
        row(
            "baseline: one call at a time",
            format!("p50 {}, p99 {}", us(sequential.p50), us(sequential.p99)),
        );
        row("e2e p50 / baseline p50", format!("**{ratio:.2}**"));
    }
    if let (Some(nominal), Some(efficiency)) = (report.nominal_run_time_ms, report.efficiency) {
        row(
            "efficiency (throughput × nominal run time / capacity)",
            format!("**{efficiency:.3}** (nominal run time {nominal} ms)"),
        );
    }
    row(
        "issued = completed + errors",
        format!(
            "{} = {} + {} (error rate {:.3}%)",
            thousands(run.issued as f64),
            thousands(run.completed as f64),
            thousands(run.errors as f64),
            run.error_rate * 100.0
        ),
    );
    row(
        "capacity (Σ pool sizes)",
        format!("{} slots on {} workers", run.capacity, run.workers),
    );
    row(
        "observed concurrency (time-weighted)",
        format!("{:.3}", run.observed_concurrency),
    );
    row(
        "Little's law (throughput × mean run time)",
        format!(
            "{:.3} (mean run time {})",
            run.littles_law_concurrency,
            us(run.mean_run_time_us.round() as u64)
        ),
    );
    row("utilization", format!("**{:.3}**", run.utilization));
    row("peak concurrency", run.peak_concurrency.to_string());
    row("measurement window", format!("{:.2} s", run.window_s));
    md.push('\n');
}

fn latency_table(md: &mut String, run: &Summary) {
    let _ = writeln!(
        md,
        "## Latency\n\n| | p50 | p90 | p99 | p99.9 | max | mean | count |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    let l = &run.latency_us;
    for (name, p) in [
        ("end-to-end", &l.e2e),
        ("overhead (e2e − run)", &l.overhead),
        ("queue wait", &l.queue_wait),
        ("accept", &l.accept),
        ("run", &l.run),
    ] {
        percentile_row(md, name, p);
    }
    let _ = writeln!(
        md,
        "\nEnd-to-end and accept are measured from each request's intended send time \
         (in an open loop, its slot in the schedule); queue wait and run come from the \
         scheduler's and workers' stamps. `latency.hgrm` holds the whole end-to-end \
         distribution.\n"
    );
}

fn percentile_row(md: &mut String, name: &str, p: &Percentiles) {
    let _ = writeln!(
        md,
        "| {name} | {} | {} | {} | {} | {} | {} | {} |",
        us(p.p50),
        us(p.p90),
        us(p.p99),
        us(p.p999),
        us(p.max),
        us(p.mean.round() as u64),
        thousands(p.count as f64)
    );
}

fn errors(md: &mut String, run: &Summary) {
    if run.errors == 0 {
        return;
    }
    let kinds: Vec<String> = run
        .errors_by_kind
        .iter()
        .map(|(kind, n)| format!("{kind}: {n}"))
        .collect();
    let _ = writeln!(md, "Errors by kind: {}.\n", kinds.join(", "));
    for sample in &run.error_samples {
        let _ = writeln!(md, "- `{}`", sample.replace('`', "'"));
    }
    md.push('\n');
}

fn sweep_table(md: &mut String, cells: &[Cell]) {
    let _ = writeln!(
        md,
        "| W × P | clients | throughput/s | theoretical/s | measured / theoretical | utilization | observed | Little's law | e2e p50 | e2e p99 | errors |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for cell in cells {
        let s = &cell.summary;
        let _ = writeln!(
            md,
            "| {} × {} | {} | {} | {} | {} | {:.3} | {:.2} | {:.2} | {} | {} | {} |",
            cell.workers,
            cell.pool_size,
            cell.concurrency
                .map_or_else(|| "-".to_string(), |c| c.to_string()),
            thousands(s.throughput_per_s),
            cell.theoretical_per_s
                .map_or_else(|| "-".to_string(), thousands),
            cell.efficiency
                .map_or_else(|| "-".to_string(), |e| format!("{e:.3}")),
            s.utilization,
            s.observed_concurrency,
            s.littles_law_concurrency,
            us(s.latency_us.e2e.p50),
            us(s.latency_us.e2e.p99),
            s.errors
        );
    }
    md.push('\n');
}

fn setup(md: &mut String, report: &Report) {
    let t = &report.target;
    let l = &report.load;
    let m = &report.machine;
    let _ = writeln!(md, "## Setup\n");
    let target = match (t.workers, t.pool_size) {
        (Some(w), Some(p)) => format!("embedded cluster, {w} workers × {p} slots"),
        _ if t.kind == "embedded" => "embedded clusters (one per cell)".to_string(),
        _ => format!("{} at {}", t.kind, t.address.as_deref().unwrap_or("?")),
    };
    let mut extras = vec![match t.grpc_call {
        Some(call) => format!("over gRPC: {call}"),
        None => format!("over {}", t.protocol),
    }];
    if let Some(store) = t.store {
        extras.push(format!("store: {store}"));
    }
    if let Some(prefetch) = t.prefetch {
        extras.push(format!("prefetch {prefetch}"));
    }
    if let Some(delay) = t.commit_delay_us {
        extras.push(format!("commit delay {delay} µs"));
    }
    if let Some(threads) = t.server_threads {
        extras.push(format!("cluster runtime: {threads} threads"));
    }
    let _ = writeln!(md, "- target: {target} ({})", extras.join(", "));
    let shape = match (l.shape, l.concurrency, l.rate_per_s) {
        ("closed", Some(c), _) => format!("closed loop, {c} clients"),
        ("closed", None, _) => "closed loop, 4 clients per slot (at least 16)".to_string(),
        (_, _, Some(rate)) => format!(
            "open loop, {}/s (at most {} in flight)",
            thousands(rate),
            l.max_in_flight.unwrap_or(0)
        ),
        _ => l.shape.to_string(),
    };
    let stop = match (l.duration_s, l.count) {
        (Some(d), _) => format!("{d} s measured"),
        (_, Some(n)) => format!("{n} measured requests"),
        _ => String::new(),
    };
    let _ = writeln!(
        md,
        "- load: {shape} over {} connections; {} s warm-up, {stop}; function `{}`, {}-byte payload; \
         load generator runtime: {} threads",
        l.connections, l.warmup_s, l.function, l.payload_bytes, l.client_threads
    );
    let load_average = m.load_average.map_or_else(
        || "unknown".to_string(),
        |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"),
    );
    let _ = writeln!(
        md,
        "- machine: {}, {} logical CPUs, {} MB, {} {}; load average at start {load_average}",
        m.cpu,
        m.logical_cpus,
        m.memory_mb.unwrap_or(0),
        m.os,
        m.kernel
    );
    if let Some(cpu) = m.cpu_use {
        let _ = writeln!(
            md,
            "- CPU time while it ran ({:.1} s): {:.1} s by this process, {:.1} s by other processes \
             ({:.0}% of one CPU)",
            cpu.elapsed_s,
            cpu.ours_s,
            cpu.others_s,
            100.0 * cpu.others_s / cpu.elapsed_s.max(1e-9)
        );
    }
    let _ = writeln!(
        md,
        "- the load generator and the cluster share the machine's CPUs; figures vary between sittings"
    );
}

/// Microseconds for people: `840µs`, `1.21ms`, `3.50s`.
fn us(us: u64) -> String {
    crate::progress::format_us(us)
}

/// `31234.4` → `31,234`.
pub fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    match value < -0.5 {
        true => format!("-{out}"),
        false => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(31_234.4), "31,234");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
        assert_eq!(thousands(-1234.0), "-1,234");
    }
}
