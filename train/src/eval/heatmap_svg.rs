//! The layer-similarity matrix (eval/layers.rs) as an SVG heatmap drawn with plotters: one
//! viridis cell per layer pair, layer 0 at the top left, layer numbers on both axes, a colour
//! bar with its value scale on the right, and, for an up-scaled model, the seam where the
//! second copy of the base's layers begins marked by lines across the matrix. heatmap.rs keeps
//! the dependency-free PNG for `eval --task layers --image X.png`.

use crate::error::{Result, TrainError};
use crate::eval::heatmap::viridis;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use std::path::Path;

const FONT: &str = "sans-serif";
const BAR_WIDTH: u32 = 130;
/// Stands out against every viridis colour.
const SEAM: RGBColor = RGBColor(230, 30, 30);

fn color(t: f64) -> RGBColor {
    let [r, g, b] = viridis(t);
    RGBColor(r, g, b)
}

fn draw_error<E: std::fmt::Display>(e: E) -> TrainError {
    TrainError::Msg(format!("cannot draw the heatmap: {e}"))
}

/// The value range the colours span: the matrix's finite extremes.
fn value_range(m: &[Vec<f64>]) -> (f64, f64) {
    let values = m.iter().flatten().copied().filter(|v| v.is_finite());
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() && hi > lo {
        (lo, hi)
    } else if lo.is_finite() {
        (lo - 0.5, lo + 0.5)
    } else {
        (0.0, 1.0)
    }
}

/// The heatmap of `m` (square) as SVG text. `seam`: the first layer of the second copy.
pub fn heatmap_svg(m: &[Vec<f64>], title: &str, seam: Option<usize>) -> Result<String> {
    let n = m.len();
    if n == 0 || m.iter().any(|r| r.len() != n) {
        return Err(TrainError::Msg("a heatmap needs a non-empty square matrix".into()));
    }
    let (lo, hi) = value_range(m);
    let side = (n as u32 * 40).clamp(360, 640);
    let size = (side + 90 + BAR_WIDTH, side + 110);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let root = root.titled(title, (FONT, 20)).map_err(draw_error)?;
        let (left, right) = root.split_horizontally(size.0 - BAR_WIDTH);
        // Rows run top to bottom: row i sits in segment n-1-i, labelled back as i. A segmented
        // range a..b has the segments a..=b, so 0..n-1 gives the n layers.
        let n_i = n as i32;
        let mut chart = ChartBuilder::on(&left)
            .margin(10)
            .x_label_area_size(44)
            .y_label_area_size(50)
            .build_cartesian_2d((0..n_i - 1).into_segmented(), (0..n_i - 1).into_segmented())
            .map_err(draw_error)?;
        let label = |flip: bool| {
            move |v: &SegmentValue<i32>| match v {
                SegmentValue::CenterOf(k) if flip => (n_i - 1 - k).to_string(),
                SegmentValue::CenterOf(k) => k.to_string(),
                _ => String::new(),
            }
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(n)
            .y_labels(n)
            .x_label_formatter(&label(false))
            .y_label_formatter(&label(true))
            .x_desc(match seam {
                Some(s) if s > 0 && s < n => {
                    format!("layer (red lines: the seam, layer {s} starts the second copy)")
                }
                _ => "layer".to_string(),
            })
            .y_desc("layer")
            .axis_desc_style((FONT, 15))
            .label_style((FONT, 12))
            .draw()
            .map_err(draw_error)?;
        let at = |v: i32| SegmentValue::Exact(v);
        chart
            .draw_series(m.iter().enumerate().flat_map(|(i, row)| {
                let y = n_i - 1 - i as i32;
                row.iter().enumerate().map(move |(j, &v)| {
                    let j = j as i32;
                    let fill = color((v - lo) / (hi - lo)).filled();
                    Rectangle::new([(at(j), at(y)), (at(j + 1), at(y + 1))], fill)
                })
            }))
            .map_err(draw_error)?;
        if let Some(s) = seam.filter(|&s| s > 0 && s < n) {
            let (s, flip) = (s as i32, n_i - s as i32);
            let style = SEAM.stroke_width(2);
            chart
                .draw_series(LineSeries::new(vec![(at(s), at(0)), (at(s), at(n_i))], style))
                .map_err(draw_error)?;
            chart
                .draw_series(LineSeries::new(vec![(at(0), at(flip)), (at(n_i), at(flip))], style))
                .map_err(draw_error)?;
        }
        colour_bar(&right, lo, hi)?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// The colour bar: the value scale from `lo` (bottom) to `hi` (top), ticks on its right.
fn colour_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    lo: f64,
    hi: f64,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let mut bar = ChartBuilder::on(area)
        .margin_top(10)
        .margin_bottom(54)
        .margin_right(10)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0.0..1.0, lo..hi)
        .map_err(draw_error)?;
    bar.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc("cosine similarity")
        .axis_desc_style((FONT, 14))
        .label_style((FONT, 12))
        .y_label_formatter(&|v: &f64| format!("{v:.2}"))
        .draw()
        .map_err(draw_error)?;
    let steps = 100;
    let dv = (hi - lo) / steps as f64;
    bar.draw_series((0..steps).map(|k| {
        let v = lo + k as f64 * dv;
        Rectangle::new([(0.0, v), (1.0, v + dv)], color((v + dv / 2.0 - lo) / (hi - lo)).filled())
    }))
    .map_err(draw_error)?;
    Ok(())
}

/// Draws the heatmap into `path` (SVG), replacing it atomically (the demo's own output).
pub fn write_heatmap_svg(path: &Path, m: &[Vec<f64>], title: &str, seam: Option<usize>) -> Result<()> {
    let svg = heatmap_svg(m, title, seam)?;
    Ok(solar_model::output::write_file(path, svg.as_bytes(), true)?)
}
