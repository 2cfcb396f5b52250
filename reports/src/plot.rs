//! SVG plots of a run, drawn with plotters (its SVG backend needs no font library).

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Plot size in pixels.
const SIZE: (u32, u32) = (900, 520);

/// Colours of the series, in order (the "tab10" palette: told apart by most readers).
const SERIES: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A plot's x and y axes: seconds, milliseconds, counts.
type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Draw the legend at `position` and write the SVG out.
fn finish<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    root: &DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    position: SeriesLabelPosition,
) {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .expect("an SVG in memory");
    root.present().expect("an SVG in memory");
}

/// Draw a plot of `title` on axes `x` and `y`: `body` draws the mesh and the series, then
/// the legend goes at `legend`; returns the SVG document.
fn plot(
    title: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    legend: SeriesLabelPosition,
    body: impl FnOnce(&mut Chart<'_, '_>),
) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).expect("an SVG in memory");
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(x, y)
            .expect("an SVG in memory");
        body(&mut chart);
        finish(&mut chart, &root, legend);
    }
    svg
}

/// The latency distribution of `h` (µs) as a CDF: the share of samples at or below each
/// latency, in ms, with the SLO's threshold drawn as a vertical line.
pub fn latency_cdf_svg(title: &str, metric: &str, h: &Histogram<u64>, slo_ms: f64) -> String {
    let mut points: Vec<(f64, f64)> = Vec::new();
    if !h.is_empty() {
        points.push((0.0, 0.0));
        for v in h.iter_quantiles(4) {
            points.push((v.value_iterated_to() as f64 / 1e3, v.quantile_iterated_to()));
        }
    }
    let x_max = points.iter().map(|p| p.0).fold(slo_ms * 1.2, f64::max).max(1.0);
    plot(title, 0.0..x_max, 0.0..1.0, SeriesLabelPosition::LowerRight, |chart| {
        chart
            .configure_mesh()
            .x_desc(format!("{metric} latency (ms)"))
            .y_desc("share of samples at or below")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()
            .expect("an SVG in memory");
        chart
            .draw_series(LineSeries::new(points.iter().copied(), SERIES[0].stroke_width(2)))
            .expect("an SVG in memory")
            .label(format!("{metric} ({} samples)", h.len()))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], SERIES[0].stroke_width(2)));
        chart
            .draw_series(LineSeries::new(vec![(slo_ms, 0.0), (slo_ms, 1.0)], SERIES[3].stroke_width(2)))
            .expect("an SVG in memory")
            .label(format!("SLO: p99 < {slo_ms} ms"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], SERIES[3].stroke_width(2)));
    })
}

/// A histogram of `h` (µs) in `bins` equal bins up to its maximum, in seconds: how many
/// samples fell in each.
pub fn histogram_svg(title: &str, x_desc: &str, h: &Histogram<u64>, bins: u32) -> String {
    let max_s = (h.max() as f64 / 1e6).max(1e-3);
    let width = max_s / f64::from(bins);
    let mut counts = vec![0u64; bins as usize];
    for v in h.iter_recorded() {
        let s = h.median_equivalent(v.value_iterated_to()) as f64 / 1e6;
        let bin = ((s / width) as usize).min(bins as usize - 1);
        counts[bin] += v.count_at_value();
    }
    // Whole counts on the axis: a label per count while they are few.
    let y_max = (counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.1).ceil();
    let y_labels = if y_max <= 10.0 { y_max as usize + 1 } else { 10 };
    plot(title, 0.0..max_s * 1.05, 0.0..y_max, SeriesLabelPosition::UpperRight, |chart| {
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("samples")
            .y_labels(y_labels)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .expect("an SVG in memory");
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                let from = i as f64 * width;
                Rectangle::new([(from, 0.0), (from + width, c as f64)], SERIES[0].mix(0.7).filled())
            }))
            .expect("an SVG in memory")
            .label(format!("{} samples", h.len()))
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], SERIES[0].filled()));
    })
}

/// Per-second series over the run (`series`: a name and a value per second; a second
/// without a value is NaN, and the line joins its neighbours), with the fault windows
/// (`[from, until)` in s) shaded.
pub fn over_time_svg(title: &str, y_desc: &str, series: &[(String, Vec<f64>)], faults: &[(f64, f64)]) -> String {
    let seconds = series.iter().map(|s| s.1.len()).max().unwrap_or(0).max(1) as f64;
    let y_max = series.iter().flat_map(|s| s.1.iter().copied()).filter(|v| v.is_finite()).fold(1.0, f64::max) * 1.1;
    plot(title, 0.0..seconds, 0.0..y_max, SeriesLabelPosition::UpperRight, |chart| {
        chart
            .configure_mesh()
            .x_desc("simulated time (s)")
            .y_desc(y_desc)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .expect("an SVG in memory");
        if !faults.is_empty() {
            chart
                .draw_series(faults.iter().map(|&(from, until)| {
                    Rectangle::new(
                        [(from, 0.0), (until.min(seconds), y_max)],
                        RGBColor(200, 200, 200).mix(0.4).filled(),
                    )
                }))
                .expect("an SVG in memory")
                .label("fault windows")
                .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], RGBColor(200, 200, 200).filled()));
        }
        for (k, (name, values)) in series.iter().enumerate() {
            let colour = SERIES[k % SERIES.len()];
            chart
                .draw_series(LineSeries::new(
                    values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| (i as f64 + 0.5, v)),
                    colour.stroke_width(2),
                ))
                .expect("an SVG in memory")
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
    })
}

/// One SLO metric's p99 at each offered load tried: (offered msg/s, p99 ms, within its
/// objective).
pub struct KneeSeries {
    pub name: String,
    pub points: Vec<(f64, f64, bool)>,
}

/// An objective's line on a knee plot, in the colour of the series `colour_of`.
pub struct KneeObjective {
    pub label: String,
    pub ms: f64,
    pub colour_of: usize,
}

/// The knee plot's y values: log10 of milliseconds, on a linear axis whose labels read in ms.
fn knee_log(ms: f64) -> f64 {
    ms.max(0.1).log10()
}

/// The knee plot's axes: x over the loads tried with a margin, y (log10 ms) over the points
/// and objectives in whole half-decades (where the labels fall), with room above the highest
/// for the legend.
fn knee_axes(series: &[KneeSeries], objectives: &[KneeObjective]) -> ((f64, f64), (f64, f64)) {
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).chain(objectives.iter().map(|o| o.ms));
    let (lo, hi) =
        ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(knee_log(y)), hi.max(knee_log(y))));
    let y = if lo.is_finite() { ((lo * 2.0).floor() / 2.0, ((hi + 0.45) * 2.0).ceil() / 2.0) } else { (0.0, 3.0) };
    let xs = || series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x_lo, x_hi) = (xs().fold(f64::INFINITY, f64::min), xs().fold(1.0, f64::max));
    let margin = (x_hi - x_lo.min(x_hi)).max(x_hi * 0.1) * 0.08;
    (((x_lo.min(x_hi) - margin).max(0.0), x_hi + margin), y)
}

/// Latency against load: each series' p99 (ms, on a log scale: it grows by orders of
/// magnitude past the knee) against the offered load (msg/s), a dashed line at each
/// objective in its series' colour, and the knee as a vertical line. A point within its
/// objective is a dot, one past it a cross.
pub fn knee_svg(
    title: &str,
    series: &[KneeSeries],
    objectives: &[KneeObjective],
    knee: Option<(f64, String)>,
) -> String {
    let log = knee_log;
    let ((x_min, x_max), (y_min, y_max)) = knee_axes(series, objectives);
    plot(title, x_min..x_max, y_min..y_max, SeriesLabelPosition::UpperLeft, |chart| {
        chart
            .configure_mesh()
            .x_desc("offered load (msg/s)")
            .y_desc("p99 latency (ms, log scale)")
            .x_label_formatter(&|x| wasim_sim::thousands(x.max(0.0).round() as u64))
            .y_labels(((y_max - y_min) * 2.0).round() as usize + 1)
            .y_label_formatter(&|y| {
                let ms = 10f64.powf(*y);
                if ms >= 1.0 {
                    wasim_sim::thousands(ms.round() as u64)
                } else {
                    format!("{ms:.1}")
                }
            })
            .draw()
            .expect("an SVG in memory");
        for o in objectives {
            let style = SERIES[o.colour_of % SERIES.len()].stroke_width(1);
            chart
                .draw_series(DashedLineSeries::new(vec![(x_min, log(o.ms)), (x_max, log(o.ms))], 8, 5, style))
                .expect("an SVG in memory")
                .label(o.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 8, y), (x + 12, y), (x + 20, y)], style));
        }
        if let Some((x, label)) = &knee {
            let style = BLACK.stroke_width(2);
            chart
                .draw_series(DashedLineSeries::new(vec![(*x, y_min), (*x, y_max)], 4, 4, style))
                .expect("an SVG in memory")
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        for (k, s) in series.iter().enumerate() {
            let colour = SERIES[k % SERIES.len()];
            let points: Vec<(f64, f64, bool)> = s.points.iter().map(|&(x, y, ok)| (x, log(y), ok)).collect();
            chart
                .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1)), colour.stroke_width(2)))
                .expect("an SVG in memory")
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
            chart
                .draw_series(points.iter().filter(|p| p.2).map(|p| Circle::new((p.0, p.1), 4, colour.filled())))
                .expect("an SVG in memory");
            chart
                .draw_series(points.iter().filter(|p| !p.2).map(|p| Cross::new((p.0, p.1), 5, colour.stroke_width(2))))
                .expect("an SVG in memory");
        }
        // The markers' meaning, in the legend only.
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .expect("an SVG in memory")
            .label("p99 within its SLO")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, BLACK.filled()));
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .expect("an SVG in memory")
            .label("p99 past its SLO")
            .legend(|(x, y)| Cross::new((x + 10, y), 5, BLACK.stroke_width(2)));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cdf_holds_its_title_its_axes_and_its_slo_line() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for us in [10_000u64, 20_000, 30_000, 40_000, 450_000] {
            h.record(us).unwrap();
        }
        let svg = latency_cdf_svg("delivery, baseline seed 1", "delivery", &h, 500.0);
        assert!(svg.starts_with("<svg"), "{}", &svg[..60.min(svg.len())]);
        assert!(svg.contains("baseline seed 1") && svg.contains("delivery latency (ms)"));
        assert!(svg.contains("SLO: p99 &lt; 500 ms") || svg.contains("SLO: p99 < 500 ms"));
        assert!(svg.contains("5 samples"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn a_series_over_time_shades_its_faults() {
        let svg = over_time_svg("t", "messages/s", &[("sends".into(), vec![1.0, 2.0, 3.0])], &[(1.0, 2.0)]);
        assert!(svg.contains("fault windows") && svg.contains("sends") && svg.contains("simulated time (s)"));
        assert!(svg.contains("<rect"), "the fault window is a rectangle");
    }

    #[test]
    fn a_knee_plot_names_its_axes_its_objectives_and_its_knee() {
        let series = [KneeSeries {
            name: "delivery latency p99".into(),
            points: vec![(1_000.0, 120.0, true), (2_000.0, 180.0, true), (4_000.0, 9_000.0, false)],
        }];
        let svg = knee_svg(
            "s, seed 1",
            &series,
            &[KneeObjective { label: "SLO delivery: p99 < 500 ms".into(), ms: 500.0, colour_of: 0 }],
            Some((2_000.0, "knee: 2,000 msg/s".into())),
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for text in
            ["s, seed 1", "offered load (msg/s)", "p99 latency (ms, log scale)", "SLO delivery", "knee: 2,000 msg/s"]
        {
            assert!(svg.contains(text), "{text}");
        }
        assert!(svg.contains("<circle"), "passing runs are dots");
    }
}
