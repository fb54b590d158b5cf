//! The sweep's chart: one column per varied dimension, throughput on top and
//! p50/p99 latency below, both on log scales so backends a thousand times
//! apart share a chart; one colour per backend. SVG, so no font or image
//! library is needed and the README shows it as is.

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::bench::Point;
use crate::measured::{Dimension, Row};
use crate::target::{CliError, CliResult};

const FONT: &str = "sans-serif";

pub fn draw(path: &Path, rows: &[Row]) -> CliResult {
    let fail = |e: &dyn std::fmt::Display| CliError::new(format!("drawing {}: {e}", path.display()));
    let mut backends: Vec<&str> = Vec::new();
    for r in rows {
        if !backends.contains(&r.backend.as_str()) {
            backends.push(&r.backend);
        }
    }
    let root = SVGBackend::new(path, (1800, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let title = match baseline(rows) {
        Some(p) => format!(
            "publish -> receive -> ack, one dimension varied at a time around {} B, {} publisher(s), batch {}, {} consumer(s), {} key(s)",
            p.size, p.publishers, p.batch, p.consumers, p.keys
        ),
        None => "no measurements".into(),
    };
    let root = root.titled(&title, (FONT, 20)).map_err(|e| fail(&e))?;
    let panels = root.split_evenly((2, Dimension::ALL.len()));
    for (column, dimension) in Dimension::ALL.into_iter().enumerate() {
        let of = |b: &str| {
            rows.iter()
                .filter(move |r| r.dimension == dimension && r.backend == b)
                .collect::<Vec<_>>()
        };
        let mut throughput = Vec::new();
        let mut latency = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            let color = Palette99::pick(i).mix(1.0);
            let line = |label: String, width: u32, markers: bool, y: fn(&Row) -> f64| Line {
                label,
                color,
                width,
                markers,
                points: of(b).iter().map(|r| (r.value, y(r))).collect(),
            };
            throughput.push(line(b.to_string(), 2, true, |r| r.measured.rate()));
            latency.push(line(format!("{b} p50"), 1, false, |r| r.measured.p50_ms.max(0.001)));
            latency.push(line(format!("{b} p99"), 3, false, |r| r.measured.p99_ms.max(0.001)));
        }
        let name = dimension.name();
        let legend = column == 0;
        panel(
            &panels[column],
            &format!("throughput by {name}"),
            "messages/s",
            dimension,
            &throughput,
            legend,
        )
        .map_err(|e| fail(&e))?;
        let caption = format!("latency at half that rate, by {name} (p50 thin, p99 thick)");
        panel(
            &panels[Dimension::ALL.len() + column],
            &caption,
            "milliseconds",
            dimension,
            &latency,
            legend,
        )
        .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

/// One line of a panel: (dimension value, y) points.
struct Line {
    label: String,
    color: RGBAColor,
    width: u32,
    markers: bool,
    points: Vec<(usize, f64)>,
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type PanelResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// A chart of `lines` over the values of `dimension` (evenly spaced, since
/// they grow geometrically or include 0), y on a log scale.
fn panel(
    area: &Area<'_>,
    caption: &str,
    y_desc: &str,
    dimension: Dimension,
    lines: &[Line],
    legend: bool,
) -> PanelResult {
    let mut values: Vec<usize> = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)).collect();
    values.sort_unstable();
    values.dedup();
    if values.is_empty() {
        return Ok(());
    }
    let at = |v: usize| SegmentValue::CenterOf(values.iter().position(|x| *x == v).unwrap_or(0) as i32);
    let label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) => values.get(*i as usize).map_or(String::new(), |v| short(*v as f64)),
        _ => String::new(),
    };
    let ys: Vec<f64> = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)).collect();
    // A segmented range of a..b has a segment for b as well.
    let x = (0..values.len() as i32 - 1).into_segmented();
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .caption(caption, (FONT, 16))
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x, span(&ys).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc(dimension.title())
        .y_desc(y_desc)
        .x_label_formatter(&label)
        .y_label_formatter(&|y| short(*y))
        .draw()?;
    for line in lines {
        let points: Vec<_> = line.points.iter().map(|(v, y)| (at(*v), *y)).collect();
        let style = line.color.stroke_width(line.width);
        chart
            .draw_series(LineSeries::new(points.clone(), style))?
            .label(line.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        if line.markers {
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, line.color.filled())))?;
        }
    }
    if legend {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

/// The workload the sweep varied around: each dimension's value in the
/// rows that varied another one.
fn baseline(rows: &[Row]) -> Option<Point> {
    let other = |d: Dimension| rows.iter().find(|r| r.dimension != d).map(|r| r.point);
    Some(Point {
        size: other(Dimension::Size)?.size,
        publishers: rows.first()?.point.publishers,
        batch: other(Dimension::Batch)?.batch,
        consumers: other(Dimension::Consumers)?.consumers,
        keys: other(Dimension::Keys)?.keys,
    })
}

/// A log axis range around `values`, padded to whole decades' neighbours.
fn span(values: &[f64]) -> std::ops::Range<f64> {
    let lo = values
        .iter()
        .copied()
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    if !lo.is_finite() || hi <= 0.0 {
        return 0.1..10.0;
    }
    (lo / 2.0)..(hi * 2.0)
}

/// 1.5M, 250k, 12, 0.25: short tick labels.
fn short(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    match v {
        v if v >= 1e6 => format!("{}M", trim(format!("{:.1}", v / 1e6))),
        v if v >= 1e3 => format!("{}k", trim(format!("{:.1}", v / 1e3))),
        v if v >= 1.0 => trim(format!("{v:.1}")),
        v => trim(format!("{v:.3}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(short(1_048_576.0), "1M");
        assert_eq!(short(1_500_000.0), "1.5M");
        assert_eq!(short(10_240.0), "10.2k");
        assert_eq!(short(100.0), "100");
        assert_eq!(short(0.25), "0.25");
    }
}
