//! PNG plots of a comparison with `plotters`: latency percentile curves (HdrHistogram's
//! classic plot: latency against 1/(1-percentile) on a log axis) and throughput over
//! time.
//!
//! Text needs a font: plotters' `ab_glyph` renderer takes one from memory, read from
//! the first of [`FONT_PATHS`] that exists (Debian's `fonts-dejavu-core`).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::Path;
use std::sync::OnceLock;

use hdrhistogram::Histogram;
use plotters::prelude::*;

pub const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];
const SIZE: (u32, u32) = (1000, 600);
/// The deepest percentile plotted: 99.9999 % (x = 6).
const NINES_MAX: f64 = 6.0;

/// Registers the font once; the error names the paths tried.
fn font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = FONT_PATHS
                .iter()
                .find_map(|path| std::fs::read(path).ok())
                .ok_or_else(|| {
                    format!("no font for the plots at {FONT_PATHS:?} (install fonts-dejavu-core)")
                })?;
            // The font lives as long as the process: plotters keeps a reference.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| "the plot font is not a valid TrueType font".to_string())
        })
        .clone()
}

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
];

fn draw_error(path: &Path, error: impl std::fmt::Display) -> String {
    format!("cannot draw {}: {error}", path.display())
}

/// Latency (ms) against percentile, one curve per system.
pub fn percentile_curves(
    path: &Path,
    title: &str,
    series: &[(&str, &Histogram<u64>)],
) -> Result<(), String> {
    font()?;
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, histogram)| {
            let points = histogram
                .iter_quantiles(5)
                .map(|step| {
                    let q = step.quantile_iterated_to();
                    let nines = if q >= 1.0 {
                        NINES_MAX
                    } else {
                        (-(1.0 - q).log10()).min(NINES_MAX)
                    };
                    (nines, step.value_iterated_to() as f64 / 1e6)
                })
                .collect();
            (*name, points)
        })
        .collect();
    let y_max = curves
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(0.001)
        * 1.05;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_error(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..NINES_MAX, 0.0..y_max)
        .map_err(|e| draw_error(path, e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(7)
        .x_label_formatter(&|nines| {
            let percent = format!("{:.4}", 100.0 * (1.0 - 10f64.powf(-nines)));
            format!("{}%", percent.trim_end_matches('0').trim_end_matches('.'))
        })
        .draw()
        .map_err(|e| draw_error(path, e))?;
    draw_lines(path, &mut chart, curves, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(|e| draw_error(path, e))
}

type Chart<'a> = ChartContext<
    'a,
    BitMapBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// One line per system, each in its colour, and the legend.
fn draw_lines(
    path: &Path,
    chart: &mut Chart<'_>,
    lines: Vec<(&str, Vec<(f64, f64)>)>,
    legend: SeriesLabelPosition,
) -> Result<(), String> {
    for (index, (name, points)) in lines.into_iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| draw_error(path, e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| draw_error(path, e))
}

/// Samples acknowledged per second against seconds of ingest, one line per system.
pub fn throughput(path: &Path, timelines: &[(&str, &[u64])]) -> Result<(), String> {
    font()?;
    let x_max = timelines
        .iter()
        .map(|(_, t)| t.len())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let y_max = timelines
        .iter()
        .flat_map(|(_, t)| t.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.05;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_error(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("remote-write throughput", ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| draw_error(path, e))?;
    chart
        .configure_mesh()
        .x_desc("seconds of ingest (each system's own rounds, back to back)")
        .y_desc("samples/s acknowledged")
        .draw()
        .map_err(|e| draw_error(path, e))?;
    let lines = timelines
        .iter()
        .map(|(name, timeline)| {
            let points = timeline
                .iter()
                .enumerate()
                .map(|(second, &samples)| (second as f64 + 0.5, samples as f64))
                .collect();
            (*name, points)
        })
        .collect();
    draw_lines(path, &mut chart, lines, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(|e| draw_error(path, e))
}
