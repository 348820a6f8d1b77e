//! HdrHistogram's percentile distribution text format (`.hgrm`), as written by
//! the Java original's `outputPercentileDistribution` (and by wrk2): one line
//! per percentile step with the value, the percentile, the running count and
//! `1/(1-percentile)`, then the mean, deviation, max and count. HdrHistogram's
//! online plotter and its other tools read it.
//!
//! The hdrhistogram crate has the iterator but not the writer; this is the
//! writer, line for line in the Java format (`%12.{d}f %2.12f %10d %14.2f`,
//! with `d` the histogram's significant digits), so files compare with other
//! tools' output.

use std::fmt::Write;

use hdrhistogram::Histogram;

/// The percentile distribution of `histogram`, values divided by `scale`
/// (1000.0 turns microseconds into milliseconds), with
/// `ticks_per_half_distance` steps per halving of the distance to 100% (5 is
/// the usual).
pub fn percentile_distribution(
    histogram: &Histogram<u64>,
    ticks_per_half_distance: u32,
    scale: f64,
) -> String {
    let digits = usize::from(histogram.sigfig());
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for step in histogram.iter_quantiles(ticks_per_half_distance) {
        total += step.count_since_last_iteration();
        let value = step.value_iterated_to() as f64 / scale;
        let quantile = step.quantile_iterated_to();
        if quantile < 1.0 {
            let _ = writeln!(
                out,
                "{value:12.digits$} {quantile:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - quantile)
            );
        } else {
            let _ = writeln!(out, "{value:12.digits$} {quantile:2.12} {total:10}");
        }
    }
    let (mean, deviation, max) = match histogram.is_empty() {
        true => (0.0, 0.0, 0.0),
        false => (
            histogram.mean() / scale,
            histogram.stdev() / scale,
            histogram.max() as f64 / scale,
        ),
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:12.digits$}, StdDeviation   = {deviation:12.digits$}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:12.digits$}, Total count    = {:12}]",
        histogram.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        histogram.buckets(),
        sub_bucket_count(histogram.sigfig())
    );
    out
}

/// Sub-buckets per bucket: the power of two that resolves `2 × 10^digits`.
fn sub_bucket_count(digits: u8) -> u64 {
    let largest_single_unit = 2 * 10u64.pow(u32::from(digits));
    largest_single_unit.next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::histogram;

    /// 1..=1000 µs, one each, written in milliseconds.
    fn sample() -> String {
        let mut h = histogram(3);
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        percentile_distribution(&h, 5, 1000.0)
    }

    #[test]
    fn it_has_the_header_lines_and_footer_of_the_java_format() {
        let text = sample();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        assert_eq!(
            lines[2],
            "       0.001 0.000000000000          1           1.00"
        );
        assert!(
            lines.contains(&"       0.500 0.500000000000        500           2.00"),
            "{text}"
        );
        let footer = &lines[lines.len() - 3..];
        assert_eq!(
            footer[0],
            "#[Mean    =        0.500, StdDeviation   =        0.289]"
        );
        assert_eq!(
            footer[1],
            "#[Max     =        1.000, Total count    =         1000]"
        );
        assert_eq!(
            footer[2],
            "#[Buckets =           22, SubBuckets     =         2048]"
        );
    }

    #[test]
    fn percentiles_and_counts_climb_to_100_percent_and_the_total() {
        let text = sample();
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        let mut last = (0.0, 0.0, 0u64);
        for row in &rows {
            let value: f64 = row[0].parse().unwrap();
            let quantile: f64 = row[1].parse().unwrap();
            let count: u64 = row[2].parse().unwrap();
            assert!(
                value >= last.0 && quantile >= last.1 && count >= last.2,
                "{row:?}"
            );
            last = (value, quantile, count);
        }
        let final_row = rows.last().unwrap();
        assert_eq!(final_row.len(), 3, "the 100% line has no 1/(1-p) column");
        assert_eq!(final_row[1], "1.000000000000");
        assert_eq!(final_row[2], "1000");
        // Five steps per halving: the tail is sampled ever more finely.
        assert!(rows.len() > 50, "{} rows", rows.len());
    }

    #[test]
    fn an_empty_histogram_still_writes_its_frame() {
        let text = percentile_distribution(&histogram(3), 5, 1000.0);
        assert!(text.contains("Total count    =            0]"), "{text}");
    }
}
