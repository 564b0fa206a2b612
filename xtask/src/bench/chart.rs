//! The SVG chart of a report, drawn with plotters: one panel of throughput
//! bars per comparison group, side by side, one panel of CPU time per append
//! (each process of each case) per group that reports it, and one panel of
//! latency percentile curves.

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::markdown::number;
use super::schema::{Case, Report};

/// Width of the chart, pixels.
const WIDTH: u32 = 1100;
/// Height of one panel, pixels.
const PANEL_HEIGHT: u32 = 360;
/// Colours of the bars and curves, in turn.
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];
/// Percentiles above this are left off the curves (the maximum has no place on a nines axis).
const CURVE_PERCENTILE_MAX: f64 = 99.99;

/// A panel of bars: the cases of one group that report a rate, or the CPU
/// time per append of their processes.
struct BarPanel {
    group: String,
    unit: &'static str,
    bars: Vec<(String, f64)>,
}

/// Draws the chart; an SVG document.
pub(crate) fn render(report: &Report) -> Result<String> {
    let mut panels = bar_panels(report);
    panels.extend(cpu_panels(report));
    let curves: Vec<&Case> = report
        .cases
        .iter()
        .filter(|c| c.latency.as_ref().is_some_and(|l| l.curve.len() >= 2))
        .filter(|c| c.workload == "w3" || c.workload == "disk" || c.id.ends_with("/live"))
        .collect();
    let count = panels.len() + usize::from(!curves.is_empty());
    let mut svg = String::new();
    {
        let height = PANEL_HEIGHT * count.max(1) as u32;
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot)?;
        let areas = root.split_evenly((count.max(1), 1));
        for (area, panel) in areas.iter().zip(&panels) {
            draw_bars(area, panel)?;
        }
        if let Some(area) = areas.get(panels.len()).filter(|_| !curves.is_empty()) {
            draw_curves(area, &curves)?;
        }
        root.present().map_err(plot)?;
    }
    Ok(svg)
}

fn plot<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("cannot draw the chart: {e:?}")
}

/// A bar's label naming its own unit, when it differs from its panel's.
fn label(id: &str, unit: &str) -> String {
    format!("{id} ({unit})")
}

/// Groups (in report order) with at least two cases reporting a rate.
fn bar_panels(report: &Report) -> Vec<BarPanel> {
    let mut panels: Vec<BarPanel> = Vec::new();
    for case in &report.cases {
        // A live case's rate is the configured write rate, not a measurement.
        let Some((unit, rate)) = case.rate().filter(|_| !case.id.ends_with("/live")) else {
            continue;
        };
        match panels.iter_mut().find(|p| p.group == case.group) {
            Some(panel) if panel.unit != unit => {
                panel.bars.push((label(&case.id, unit), rate));
            }
            Some(panel) => panel.bars.push((case.id.clone(), rate)),
            None => panels.push(BarPanel {
                group: case.group.clone(),
                unit,
                bars: vec![(case.id.clone(), rate)],
            }),
        }
    }
    panels.retain(|p| p.bars.len() >= 2);
    panels
}

/// Groups (in report order) whose cases report CPU time per append: one bar
/// per process of each case, labelled with the case's target and the process's role.
fn cpu_panels(report: &Report) -> Vec<BarPanel> {
    let mut panels: Vec<BarPanel> = Vec::new();
    for case in &report.cases {
        let group = format!("{} CPU per append", case.group);
        let bars = case
            .cpu_per_append()
            .into_iter()
            .map(|(role, v)| (format!("{} {role}", case.target), v));
        match panels.iter_mut().find(|p| p.group == group) {
            Some(panel) => panel.bars.extend(bars),
            None => panels.push(BarPanel {
                group,
                unit: "µs",
                bars: bars.collect(),
            }),
        }
    }
    panels.retain(|p| !p.bars.is_empty());
    panels
}

fn draw_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &BarPanel,
) -> Result<()> {
    let top = panel.bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{} ({})", panel.group, panel.unit),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        // A segmented `0..n` holds n + 1 segments; one per bar is wanted.
        .build_cartesian_2d((0..panel.bars.len() - 1).into_segmented(), 0.0..top)
        .map_err(plot)?;
    let names: Vec<&str> = panel.bars.iter().map(|b| b.0.as_str()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(names.len())
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => names.get(*i).map_or(String::new(), |n| n.to_string()),
            _ => String::new(),
        })
        .y_label_formatter(&|v| number(*v))
        .draw()
        .map_err(plot)?;
    chart
        .draw_series(panel.bars.iter().enumerate().map(|(i, (_, v))| {
            let colour = PALETTE[i % PALETTE.len()];
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), *v),
                ],
                colour.filled(),
            );
            bar.set_margin(0, 0, 12, 12);
            bar
        }))
        .map_err(plot)?;
    chart
        .draw_series(panel.bars.iter().enumerate().map(|(i, (_, v))| {
            let style = TextStyle::from(("sans-serif", 14).into_font())
                .pos(Pos::new(HPos::Center, VPos::Bottom));
            Text::new(number(*v), (SegmentValue::CenterOf(i), *v), style)
        }))
        .map_err(plot)?;
    Ok(())
}

/// Position of a percentile on a "nines" axis: 90 → 1, 99 → 2, 99.9 → 3.
fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile.min(CURVE_PERCENTILE_MAX) / 100.0).log10()
}

fn draw_curves<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    cases: &[&Case],
) -> Result<()> {
    let points = |c: &Case| -> Vec<(f64, f64)> {
        c.latency
            .iter()
            .flat_map(|l| l.curve.iter())
            .filter(|[p, _]| *p <= CURVE_PERCENTILE_MAX)
            .map(|[p, us]| (nines(*p), us.max(1.0)))
            .collect()
    };
    let all: Vec<(f64, f64)> = cases.iter().flat_map(|c| points(c)).collect();
    let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max).ceil();
    let y_min = all.iter().map(|p| p.1).fold(f64::MAX, f64::min).max(1.0) / 1.5;
    let y_max = all.iter().map(|p| p.1).fold(1.0, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption("latency by percentile", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
        .map_err(plot)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_labels(x_max as usize + 1)
        .x_desc("percentile")
        .y_desc("µs")
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            format!("{}", (p * 100.0).round() / 100.0)
        })
        .y_label_formatter(&|v| number(*v))
        .draw()
        .map_err(plot)?;
    for (i, case) in cases.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(points(case), colour.stroke_width(2)))
            .map_err(plot)?
            .label(case.id.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::schema::tests::sample;
    use super::*;

    #[test]
    fn svg_chart_draws_bars_and_curves() {
        let mut report = sample();
        report.cases[1].workload = "w3".into();
        let svg = render(&report).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("transport-w1 (events_per_s)"));
        assert!(svg.contains("w1/embedded/c64/e1"));
        assert!(svg.contains("latency by percentile"));
        assert!(svg.contains("transport-w1 CPU per append (µs)"));
        assert!(svg.contains("quic proxy"));
        assert!(svg.contains("<rect"));
        assert!(svg.contains("<polyline"));
    }

    #[test]
    fn svg_chart_of_a_report_without_rates_is_still_a_document() {
        let mut report = sample();
        report.cases.retain(|c| c.rate().is_none());
        let svg = render(&report).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn nines_axis_spreads_the_tail() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(0.0), 0.0);
    }
}
