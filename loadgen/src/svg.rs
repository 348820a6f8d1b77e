//! Small hand-written SVG charts: line charts over a linear or a percentile
//! axis, grouped bar charts, reference lines, stacked into one figure.
//!
//! The report needs three kinds of plot (a latency percentile curve, figures
//! over time, a sweep's bars); a plotting crate would bring a font stack and
//! many transitive dependencies for that. The output is plain SVG 1.1 text
//! with no scripts or external references, so it renders the same in a
//! browser, on GitHub, or in an image viewer.
//!
//! The percentile axis is the one HdrHistogram's plotter uses: position
//! `log10(1 / (1 − q))`, so 0%, 90%, 99%, 99.9% … sit one step apart and the
//! tail gets as much room as the body.

use std::fmt::Write;

/// Colours for series, in order.
pub const PALETTE: [&str; 7] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#7f7f7f",
];

/// How a chart's x values are placed.
#[derive(Clone, Debug, PartialEq)]
pub enum XAxis {
    /// Values as they are, from 0 to the largest.
    Linear,
    /// Quantiles in [0, 1), spread as `log10(1 / (1 − q))` up to `decades`
    /// nines (2 = 99%, 3 = 99.9%, ...).
    Percentile { decades: u32 },
    /// Named categories, one band each; x values are indices.
    Categories(Vec<String>),
}

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Line,
    Dashed,
    Bars,
}

/// One series of points.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub style: Style,
    pub points: Vec<(f64, f64)>,
}

/// A labelled reference line across the plot.
#[derive(Clone, Debug)]
pub enum Rule {
    Vertical { x: f64, label: String },
    Horizontal { y: f64, label: String },
}

/// One chart (a panel of a figure).
#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_axis: XAxis,
    pub series: Vec<Series>,
    pub rules: Vec<Rule>,
    /// A logarithmic y axis (decades) instead of a linear one from zero.
    pub y_log: bool,
    pub height: f64,
}

impl Chart {
    pub fn new(title: impl Into<String>, x_label: &str, y_label: &str, x_axis: XAxis) -> Chart {
        Chart {
            title: title.into(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            x_axis,
            series: Vec::new(),
            rules: Vec::new(),
            y_log: false,
            height: 300.0,
        }
    }

    pub fn series(
        mut self,
        name: impl Into<String>,
        style: Style,
        points: Vec<(f64, f64)>,
    ) -> Chart {
        let color = PALETTE[self.series.len() % PALETTE.len()];
        self.series.push(Series {
            name: name.into(),
            color,
            style,
            points,
        });
        self
    }

    pub fn rule(mut self, rule: Rule) -> Chart {
        self.rules.push(rule);
        self
    }
}

/// Renders `charts` stacked top to bottom, `width` pixels wide.
pub fn render(charts: &[Chart], width: f64) -> String {
    let height: f64 = charts.iter().map(|c| c.height).sum();
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let mut top = 0.0;
    for chart in charts {
        draw(&mut svg, chart, top, width);
        top += chart.height;
    }
    svg.push_str("</svg>\n");
    svg
}

/// The plot area of a chart in figure coordinates.
struct Area {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

fn draw(svg: &mut String, chart: &Chart, top: f64, width: f64) {
    let area = Area {
        left: 72.0,
        right: width - 20.0,
        top: top + 52.0,
        bottom: top + chart.height - 44.0,
    };
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
        area.left,
        top + 20.0,
        escape(&chart.title)
    );
    legend(svg, chart, area.left, top + 38.0);

    // Y: from 0 to a round number above every value and horizontal rule.
    let y_max = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(chart.rules.iter().filter_map(|r| match r {
            Rule::Horizontal { y, .. } => Some(*y),
            Rule::Vertical { .. } => None,
        }))
        .fold(0.0, f64::max);
    let y_min_positive = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|&v| v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let scale = match chart.y_log {
        true => YScale::log(y_min_positive, y_max),
        false => YScale::linear(y_max),
    };
    let y_ticks = scale.ticks();
    let sy = |v: f64| area.bottom - scale.fraction(v) * (area.bottom - area.top);

    // X: by the axis kind.
    let (x_min, x_max, x_ticks): (f64, f64, Vec<(f64, String)>) = match &chart.x_axis {
        XAxis::Linear => {
            let most = chart
                .series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.0))
                .fold(0.0, f64::max);
            let (x_top, ticks) = nice_ticks(most, 8);
            (
                0.0,
                x_top,
                ticks.into_iter().map(|t| (t, compact(t))).collect(),
            )
        }
        XAxis::Percentile { decades } => {
            let ticks = (0..=*decades)
                .map(|d| (f64::from(d), percentile_label(d)))
                .collect();
            (0.0, f64::from(*decades), ticks)
        }
        XAxis::Categories(names) => {
            let ticks = names
                .iter()
                .enumerate()
                .map(|(i, n)| (i as f64 + 0.5, n.clone()))
                .collect();
            (0.0, names.len().max(1) as f64, ticks)
        }
    };
    let position = |x: f64| match chart.x_axis {
        XAxis::Percentile { .. } => percentile_position(x),
        _ => x,
    };
    let sx =
        |x: f64| area.left + (position(x) - x_min) / (x_max - x_min) * (area.right - area.left);
    let sx_tick = |x: f64| area.left + (x - x_min) / (x_max - x_min) * (area.right - area.left);

    // Grid and axes.
    for &tick in &y_ticks {
        let y = sy(tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/>"##,
            area.left, area.right
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            area.left - 6.0,
            y + 4.0,
            compact(tick)
        );
    }
    for (tick, label) in &x_ticks {
        let x = sx_tick(*tick);
        if !matches!(chart.x_axis, XAxis::Categories(_)) {
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#f0f0f0"/>"##,
                area.top, area.bottom
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            area.bottom + 16.0,
            escape(label)
        );
    }
    let _ = writeln!(
        svg,
        r##"<path d="M{l:.1},{t:.1} V{b:.1} H{r:.1}" fill="none" stroke="#333"/>"##,
        l = area.left,
        t = area.top,
        b = area.bottom,
        r = area.right
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        (area.left + area.right) / 2.0,
        area.bottom + 34.0,
        escape(&chart.x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        area.left - 54.0,
        (area.top + area.bottom) / 2.0,
        escape(&chart.y_label)
    );

    // Series.
    let bar_series: Vec<&Series> = chart
        .series
        .iter()
        .filter(|s| s.style == Style::Bars)
        .collect();
    for series in &chart.series {
        match series.style {
            Style::Line | Style::Dashed => {
                let points: Vec<String> = series
                    .points
                    .iter()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                    .collect();
                let dash = match series.style {
                    Style::Dashed => r#" stroke-dasharray="6,4""#,
                    _ => "",
                };
                let _ = writeln!(
                    svg,
                    r#"<polyline fill="none" stroke="{}" stroke-width="1.8"{dash} points="{}"/>"#,
                    series.color,
                    points.join(" ")
                );
            }
            Style::Bars => {
                let index = bar_series
                    .iter()
                    .position(|s| std::ptr::eq(*s, series))
                    .unwrap_or(0);
                let band = (area.right - area.left) / (x_max - x_min);
                let bar = band * 0.8 / bar_series.len().max(1) as f64;
                for &(x, y) in &series.points {
                    let left = area.left + (x - x_min) * band + band * 0.1 + bar * index as f64;
                    let _ = writeln!(
                        svg,
                        r#"<rect x="{left:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                        sy(y),
                        bar * 0.92,
                        (area.bottom - sy(y)).max(0.0),
                        series.color,
                        escape(&series.name),
                        compact(y)
                    );
                    let _ = writeln!(
                        svg,
                        r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#333" text-anchor="middle">{}</text>"##,
                        left + bar * 0.46,
                        sy(y) - 3.0,
                        compact(y)
                    );
                }
            }
        }
    }

    // Reference lines.
    for rule in &chart.rules {
        match rule {
            Rule::Vertical { x, label } => {
                let x = sx(*x);
                let _ = writeln!(
                    svg,
                    r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#555" stroke-dasharray="3,3"/>"##,
                    area.top, area.bottom
                );
                // Near the right edge the label goes on the line's left.
                let (label_x, anchor) = match x > area.right - 80.0 {
                    true => (x - 3.0, "end"),
                    false => (x + 3.0, "start"),
                };
                let _ = writeln!(
                    svg,
                    r##"<text x="{label_x:.1}" y="{:.1}" font-size="10" fill="#555" text-anchor="{anchor}">{}</text>"##,
                    area.bottom - 4.0,
                    escape(label)
                );
            }
            Rule::Horizontal { y, label } => {
                let y = sy(*y);
                let _ = writeln!(
                    svg,
                    r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#555" stroke-dasharray="3,3"/>"##,
                    area.left, area.right
                );
                let _ = writeln!(
                    svg,
                    r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#555" text-anchor="end">{}</text>"##,
                    area.right - 4.0,
                    y - 4.0,
                    escape(label)
                );
            }
        }
    }
}

fn legend(svg: &mut String, chart: &Chart, left: f64, y: f64) {
    let mut x = left;
    for series in &chart.series {
        let dash = match series.style {
            Style::Dashed => r#" stroke-dasharray="4,3""#,
            _ => "",
        };
        match series.style {
            Style::Bars => {
                let _ = writeln!(
                    svg,
                    r#"<rect x="{x:.1}" y="{:.1}" width="14" height="10" fill="{}"/>"#,
                    y - 9.0,
                    series.color
                );
            }
            _ => {
                let _ = writeln!(
                    svg,
                    r#"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"{dash}/>"#,
                    y - 4.0,
                    x + 14.0,
                    y - 4.0,
                    series.color
                );
            }
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{y:.1}">{}</text>"#,
            x + 19.0,
            escape(&series.name)
        );
        x += 32.0 + 6.5 * series.name.chars().count() as f64;
    }
}

/// How y values map onto the plot's height.
#[derive(Clone, Copy, Debug)]
enum YScale {
    /// From 0 to `top`.
    Linear { top: f64 },
    /// From 10^`low` to 10^`high`, whole decades.
    Log { low: i32, high: i32 },
}

impl YScale {
    fn linear(max: f64) -> YScale {
        YScale::Linear {
            top: nice_ticks(max, 5).0,
        }
    }

    fn log(min_positive: f64, max: f64) -> YScale {
        let low = match min_positive.is_finite() {
            true => min_positive.log10().floor() as i32,
            false => 0,
        };
        let high = match max > 0.0 {
            true => (max.log10().ceil() as i32).max(low + 1),
            false => low + 1,
        };
        YScale::Log { low, high }
    }

    fn ticks(self) -> Vec<f64> {
        match self {
            YScale::Linear { top } => nice_ticks(top, 5).1,
            YScale::Log { low, high } => (low..=high).map(|d| 10f64.powi(d)).collect(),
        }
    }

    /// Where `value` sits, from 0 (bottom) to 1 (top); values below a log
    /// axis sit on its bottom.
    fn fraction(self, value: f64) -> f64 {
        match self {
            YScale::Linear { top } => value / top,
            YScale::Log { low, high } => {
                let at = value.max(10f64.powi(low)).log10();
                (at - f64::from(low)) / f64::from(high - low)
            }
        }
    }
}

/// A round top at or above `max` and ticks from 0 to it, about `target` of
/// them, stepping by 1, 2 or 5 × 10ⁿ.
pub fn nice_ticks(max: f64, target: usize) -> (f64, Vec<f64>) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = match raw / magnitude {
        n if n <= 1.0 + 1e-9 => 1.0,
        n if n <= 2.0 + 1e-9 => 2.0,
        n if n <= 5.0 + 1e-9 => 5.0,
        _ => 10.0,
    } * magnitude;
    let steps = (max / step - 1e-9).ceil().max(1.0) as usize;
    let ticks = (0..=steps).map(|i| i as f64 * step).collect();
    (steps as f64 * step, ticks)
}

/// A number in a few characters: `0.25`, `12`, `3.5k`, `1.2M`.
pub fn compact(value: f64) -> String {
    let (scaled, suffix) = match value.abs() {
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    let decimals = match scaled.abs() {
        v if v > 0.0 && v < 0.01 => 3,
        _ => 2,
    };
    let text = format!("{scaled:.decimals$}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{suffix}")
}

/// `log10(1 / (1 − q))`: 0 for 0%, 1 for 90%, 2 for 99%, ...
pub fn percentile_position(quantile: f64) -> f64 {
    -(1.0 - quantile.clamp(0.0, 1.0 - 1e-12)).log10()
}

/// The label of `decades` nines: `0%`, `90%`, `99%`, `99.9%`, ...
fn percentile_label(decades: u32) -> String {
    match decades {
        0 => "0%".to_string(),
        1 => "90%".to_string(),
        2 => "99%".to_string(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)),
    }
}

/// Escapes text for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(
            nice_ticks(9.3, 5),
            (10.0, vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0])
        );
        assert_eq!(nice_ticks(31_500.0, 5).0, 40_000.0);
        assert_eq!(nice_ticks(800.0, 5).0, 800.0);
        assert_eq!(nice_ticks(1.0, 5).1.len(), 6);
        assert_eq!(nice_ticks(0.0, 5).0, 1.0);
        assert_eq!(nice_ticks(f64::NAN, 5).0, 1.0);
    }

    #[test]
    fn a_log_axis_spans_whole_decades() {
        let scale = YScale::log(0.004, 75.0);
        assert_eq!(scale.ticks(), vec![0.001, 0.01, 0.1, 1.0, 10.0, 100.0]);
        assert!((scale.fraction(1.0) - 0.6).abs() < 1e-9);
        assert_eq!(scale.fraction(0.0), 0.0);
        assert!((YScale::linear(9.3).fraction(5.0) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn numbers_are_compact() {
        assert_eq!(compact(0.25), "0.25");
        assert_eq!(compact(12.0), "12");
        assert_eq!(compact(3500.0), "3.5k");
        assert_eq!(compact(1_200_000.0), "1.2M");
        assert_eq!(compact(0.0), "0");
        assert_eq!(compact(0.001), "0.001");
    }

    #[test]
    fn the_percentile_axis_spaces_the_nines_evenly() {
        assert!((percentile_position(0.0)).abs() < 1e-12);
        assert!((percentile_position(0.9) - 1.0).abs() < 1e-9);
        assert!((percentile_position(0.999) - 3.0).abs() < 1e-9);
        assert!(percentile_position(1.0).is_finite());
        assert_eq!(percentile_label(4), "99.99%");
    }

    #[test]
    fn a_figure_is_well_formed_svg_text() {
        let chart = Chart::new("T <&>", "x", "y", XAxis::Linear)
            .series("a", Style::Line, vec![(0.0, 1.0), (1.0, 2.0)])
            .series("b", Style::Dashed, vec![(0.0, 2.0)])
            .rule(Rule::Horizontal {
                y: 3.0,
                label: "cap".into(),
            });
        let bars = Chart::new(
            "bars",
            "cell",
            "n",
            XAxis::Categories(vec!["1x1".into(), "2x4".into()]),
        )
        .series("m", Style::Bars, vec![(0.0, 5.0), (1.0, 7.0)]);
        let svg = render(&[chart, bars], 800.0);
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("T &lt;&amp;&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<rect ").count(), 1 + 2 + 1); // background, bars, legend
        assert!(!svg.contains("NaN"));
    }
}
