//! Loss curves as SVG charts drawn with plotters: axes with ticks, axis labels, a title, a
//! legend, each run's raw per-step losses as faint dots under a smoothed line, and a dashed
//! vertical marker with a label where each stage began. SVG because it needs no font files
//! (the viewer renders the text) and shows sharp in a browser and on a code-hosting site.

use crate::error::{Result, TrainError};
use plotters::prelude::*;
use std::path::Path;

/// Distinct, colour-blind-safe line colours (Okabe-Ito).
pub const COLORS: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];

const SIZE: (u32, u32) = (760, 420);
const FONT: &str = "sans-serif";

/// One run's losses: (step, loss) in the chart's step numbering.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Index into COLORS, so one run keeps its colour across charts.
    pub color: usize,
}

/// Where a stage began, on the chart's step axis.
#[derive(Clone, Debug)]
pub struct Marker {
    pub step: f64,
    pub label: String,
}

/// The ranges a chart shows, for the caption under it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranges {
    pub steps: (f64, f64),
    pub loss: (f64, f64),
}

/// A centred moving average over `2 * half + 1` points (fewer at the ends), so the smoothed
/// line neither lags the raw points as an exponential average does nor invents any past the
/// ends. `half` = 0 returns the points unchanged.
pub fn smooth(points: &[(f64, f64)], half: usize) -> Vec<(f64, f64)> {
    (0..points.len())
        .map(|i| {
            let (a, b) = (i.saturating_sub(half), (i + half + 1).min(points.len()));
            let mean = points[a..b].iter().map(|p| p.1).sum::<f64>() / (b - a) as f64;
            (points[i].0, mean)
        })
        .collect()
}

/// The smoothing window's half width for `n` points: about a twentieth of the run.
pub fn smoothing_half_width(n: usize) -> usize {
    n / 40
}

fn finite(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect()
}

fn ranges(series: &[Series], markers: &[Marker]) -> Ranges {
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|s| finite(&s.points)).collect();
    let fold =
        |f: fn(&(f64, f64)) -> f64, init: f64, pick: fn(f64, f64) -> f64| pts.iter().map(f).fold(init, pick);
    let (mut x0, mut x1) =
        (fold(|p| p.0, f64::INFINITY, f64::min), fold(|p| p.0, f64::NEG_INFINITY, f64::max));
    let (mut y0, mut y1) =
        (fold(|p| p.1, f64::INFINITY, f64::min), fold(|p| p.1, f64::NEG_INFINITY, f64::max));
    for m in markers.iter().filter(|m| m.step.is_finite()) {
        (x0, x1) = (x0.min(m.step), x1.max(m.step));
    }
    if !(x0 < x1) {
        (x0, x1) = if x0.is_finite() { (x0 - 1.0, x0 + 1.0) } else { (0.0, 1.0) };
    }
    if !(y0 < y1) {
        (y0, y1) = if y0.is_finite() { (y0 - 0.5, y0 + 0.5) } else { (0.0, 1.0) };
    }
    Ranges { steps: (x0, x1), loss: (y0, y1) }
}

fn draw_error<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> TrainError + '_ {
    move |e| TrainError::Msg(format!("cannot draw the chart {what}: {e}"))
}

/// The chart as SVG text, and the ranges it shows.
pub fn loss_chart_svg(title: &str, series: &[Series], markers: &[Marker]) -> Result<(String, Ranges)> {
    let r = ranges(series, markers);
    // Room above the highest loss for the legend, and below the lowest for the stage labels
    // (there they stay clear of the legend wherever a stage begins).
    let span = r.loss.1 - r.loss.0;
    let (y0, y1) = (r.loss.0 - 0.12 * span, r.loss.1 + 0.25 * span);
    let err = draw_error(title);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(r.steps.0..r.steps.1, y0..y1)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc("optimizer step")
            .x_label_formatter(&|x: &f64| format!("{x:.0}"))
            .y_desc("training loss")
            .axis_desc_style((FONT, 15))
            .label_style((FONT, 13))
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(&err)?;
        for m in markers {
            let grey = RGBColor(90, 90, 90);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(m.step, y0), (m.step, y1)],
                    6,
                    4,
                    grey.stroke_width(1),
                ))
                .map_err(&err)?;
            let at = (m.step, y0 + 0.07 * span);
            let style = (FONT, 13).into_font().color(&grey);
            chart
                .draw_series(std::iter::once(Text::new(format!(" {}", m.label), at, style)))
                .map_err(&err)?;
        }
        for s in series {
            let color = COLORS[s.color % COLORS.len()];
            let raw = finite(&s.points);
            let faint = color.mix(0.4).filled();
            chart.draw_series(raw.iter().map(|&p| Circle::new(p, 2, faint))).map_err(&err)?;
            let line = smooth(&raw, smoothing_half_width(raw.len()));
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))
                .map_err(&err)?
                .label(s.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok((svg, r))
}

/// Draws the chart into `path` (SVG).
pub fn write_loss_chart(path: &Path, title: &str, series: &[Series], markers: &[Marker]) -> Result<Ranges> {
    let (svg, r) = loss_chart_svg(title, series, markers)?;
    solar_model::output::write_file(path, svg.as_bytes(), true)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_is_a_centred_mean() {
        let p = [(1.0, 1.0), (2.0, 3.0), (3.0, 5.0), (4.0, 7.0)];
        assert_eq!(smooth(&p, 0), p.to_vec());
        assert_eq!(smooth(&p, 1), vec![(1.0, 2.0), (2.0, 3.0), (3.0, 5.0), (4.0, 6.0)]);
    }

    #[test]
    fn ranges_cover_points_and_markers_and_survive_no_data() {
        let s =
            [Series { label: "a".into(), points: vec![(1.0, 2.0), (5.0, f64::NAN), (3.0, 1.0)], color: 0 }];
        let r = ranges(&s, &[Marker { step: 9.0, label: "m".into() }]);
        assert_eq!(r, Ranges { steps: (1.0, 9.0), loss: (1.0, 2.0) });
        let empty = ranges(&[], &[]);
        assert_eq!(empty, Ranges { steps: (0.0, 1.0), loss: (0.0, 1.0) });
    }
}
