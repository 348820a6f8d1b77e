//! The report's plots, drawn with [`crate::svg`]:
//!
//! - `latency.svg`: percentile curves (HdrHistogram style) of the end-to-end
//!   latency and its parts — overhead, queue wait, accept, run — and of the
//!   baseline's round trip when there is one; for a sweep, one end-to-end curve
//!   per cell.
//! - `timeline.svg`: over the run, throughput and errors per second, the p99
//!   end-to-end latency, and the executions running on the workers against
//!   the capacity; the measurement window is marked.
//! - `sweep.svg`: per W × P cell, measured throughput beside the theoretical
//!   `W × P / run time`, and utilization.

use hdrhistogram::Histogram;

use crate::baseline::Baseline;
use crate::summary::{Summary, TimelinePoint};
use crate::svg::{self, Chart, Rule, Style, XAxis};
use crate::sweep::Cell;

const WIDTH: f64 = 900.0;

/// Points of a percentile curve: (quantile, milliseconds).
fn curve(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    histogram
        .iter_quantiles(5)
        .map(|step| {
            (
                step.quantile_iterated_to(),
                step.value_iterated_to() as f64 / 1e3,
            )
        })
        .filter(|&(q, _)| q < 1.0)
        .collect()
}

/// Nines worth showing for `count` samples: 99% at least, 99.9999% at most.
fn decades(count: u64) -> u32 {
    ((count.max(1) as f64).log10().ceil() as u32).clamp(2, 6)
}

/// Percentile curves of one run.
pub fn latency(summary: &Summary, baseline: Option<&Baseline>) -> String {
    let l = &summary.latencies;
    let mut chart = Chart::new(
        "Latency by percentile",
        "percentile",
        "latency (ms, log scale)",
        XAxis::Percentile {
            decades: decades(l.e2e.len()),
        },
    )
    .series("end-to-end", Style::Line, curve(&l.e2e))
    .series("overhead (e2e − run)", Style::Line, curve(&l.overhead))
    .series("queue wait", Style::Line, curve(&l.queue_wait))
    .series("accept", Style::Line, curve(&l.accept))
    .series("run", Style::Line, curve(&l.run));
    if let Some(baseline) = baseline {
        chart = chart.series(
            "baseline unary gRPC",
            Style::Dashed,
            curve(&baseline.histogram),
        );
    }
    // The parts span microseconds (run) to milliseconds (end-to-end).
    chart.y_log = true;
    chart.height = 420.0;
    svg::render(&[chart], WIDTH)
}

/// End-to-end percentile curves of every cell of a sweep.
pub fn sweep_latency(cells: &[Cell]) -> String {
    let most = cells
        .iter()
        .map(|c| c.summary.latencies.e2e.len())
        .max()
        .unwrap_or(0);
    let mut chart = Chart::new(
        "End-to-end latency by percentile, per W × P",
        "percentile",
        "latency (ms)",
        XAxis::Percentile {
            decades: decades(most),
        },
    );
    for cell in cells {
        chart = chart.series(
            cell.shape.clone(),
            Style::Line,
            curve(&cell.summary.latencies.e2e),
        );
    }
    chart.height = 420.0;
    svg::render(&[chart], WIDTH)
}

/// Throughput, p99 and running executions over the run.
pub fn timeline(summary: &Summary, baseline: Option<&Baseline>) -> String {
    let points = &summary.timeline;
    let at = |p: &TimelinePoint| p.t_s + p.span_s / 2.0;
    let window = |chart: Chart| {
        chart
            .rule(Rule::Vertical {
                x: summary.window.from_s,
                label: "measuring".into(),
            })
            .rule(Rule::Vertical {
                x: summary.window.until_s,
                label: "end".into(),
            })
    };

    let mut throughput = Chart::new(
        "Throughput over time",
        "seconds",
        "per second",
        XAxis::Linear,
    )
    .series(
        "completed/s",
        Style::Line,
        points.iter().map(|p| (at(p), p.throughput_per_s)).collect(),
    )
    .series(
        "errors/s",
        Style::Line,
        points.iter().map(|p| (at(p), p.errors_per_s)).collect(),
    );
    if let Some(baseline) = baseline {
        throughput = throughput.rule(Rule::Horizontal {
            y: baseline.throughput_per_s,
            label: format!("baseline {}/s", svg::compact(baseline.throughput_per_s)),
        });
    }
    let p99 = Chart::new(
        "p99 end-to-end latency over time",
        "seconds",
        "ms",
        XAxis::Linear,
    )
    .series(
        "p99",
        Style::Line,
        points
            .iter()
            .filter(|p| p.throughput_per_s > 0.0)
            .map(|p| (at(p), p.p99_us as f64 / 1e3))
            .collect(),
    );
    let running = Chart::new(
        "Executions running on the workers",
        "seconds",
        "running (mean)",
        XAxis::Linear,
    )
    .series(
        "running",
        Style::Line,
        points.iter().map(|p| (at(p), p.running)).collect(),
    )
    .rule(Rule::Horizontal {
        y: f64::from(summary.capacity),
        label: format!("capacity {}", summary.capacity),
    });
    let mut charts = vec![window(throughput), window(p99), window(running)];
    if let Some(memory) = &summary.memory {
        let rss = Chart::new(
            format!("Resident memory of {}", memory.process),
            "seconds",
            "MB",
            XAxis::Linear,
        )
        .series(
            "resident set",
            Style::Line,
            memory
                .samples
                .iter()
                .map(|s| (s.t_s, s.rss_bytes as f64 / 1e6))
                .collect(),
        );
        charts.push(window(rss));
    }
    svg::render(&charts, WIDTH)
}

/// Measured against theoretical throughput, and utilization, per cell.
pub fn sweep(cells: &[Cell]) -> String {
    let names: Vec<String> = cells.iter().map(|c| c.shape.replace('x', " × ")).collect();
    let indexed = |value: &dyn Fn(&Cell) -> Option<f64>| -> Vec<(f64, f64)> {
        cells
            .iter()
            .enumerate()
            .filter_map(|(i, c)| value(c).map(|v| (i as f64, v)))
            .collect()
    };
    let mut throughput = Chart::new(
        "Throughput per W × P",
        "workers × pool size",
        "executions per second",
        XAxis::Categories(names.clone()),
    );
    if cells.iter().any(|c| c.theoretical_per_s.is_some()) {
        throughput = throughput.series(
            "theoretical W × P / run time",
            Style::Bars,
            indexed(&|c| c.theoretical_per_s),
        );
    }
    throughput = throughput.series(
        "measured",
        Style::Bars,
        indexed(&|c| Some(c.summary.throughput_per_s)),
    );
    let mut utilization = Chart::new(
        "Utilization (observed concurrency / capacity)",
        "workers × pool size",
        "utilization",
        XAxis::Categories(names),
    )
    .series(
        "utilization",
        Style::Bars,
        indexed(&|c| Some(c.summary.utilization)),
    )
    .rule(Rule::Horizontal {
        y: 1.0,
        label: "1.0".into(),
    });
    utilization.height = 240.0;
    svg::render(&[throughput, utilization], WIDTH)
}
