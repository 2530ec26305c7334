//! Loss curves as PNG line charts, drawn by hand (a few series on a white canvas with light
//! grid lines; the legend and axis ranges live in report.md, which shows the image). Enough
//! for a reader to see a curve fall, with no plotting stack behind it.

use crate::error::{Result, TrainError};
use crate::eval::heatmap::{encode_png, Image};
use std::path::Path;

/// Distinct, colour-blind-safe line colours (Okabe-Ito).
pub const COLORS: [[u8; 3]; 6] =
    [[0, 114, 178], [213, 94, 0], [0, 158, 115], [204, 121, 167], [230, 159, 0], [86, 180, 233]];

const W: usize = 640;
const H: usize = 360;
const MARGIN: usize = 24;

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Canvas {
        Canvas { px: vec![255; W * H * 3] }
    }
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }
    /// A 2-pixel-thick line (Bresenham).
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            for (ox, oy) in [(0, 0), (1, 0), (0, 1)] {
                self.set(x + ox, y + oy, c);
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }
}

/// Draws `series` (each a list of (x, y)) on shared axes into a PNG at `path`; returns the
/// axis ranges ((x min, x max), (y min, y max)) for the caption.
pub fn line_chart(path: &Path, series: &[Vec<(f64, f64)>]) -> Result<((f64, f64), (f64, f64))> {
    let pts = series.iter().flatten().filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let (xs, ys) = ((x1 - x0).max(1e-12), (y1 - y0).max(1e-12));
    let to_px = |(x, y): (f64, f64)| {
        let px = MARGIN as f64 + (x - x0) / xs * (W - 2 * MARGIN) as f64;
        let py = (H - MARGIN) as f64 - (y - y0) / ys * (H - 2 * MARGIN) as f64;
        (px.round() as i64, py.round() as i64)
    };
    let mut c = Canvas::new();
    for k in 0..=4 {
        let gy = MARGIN + k * (H - 2 * MARGIN) / 4;
        for x in MARGIN..W - MARGIN {
            c.set(x as i64, gy as i64, [225, 225, 225]);
        }
    }
    c.line(to_px((x0, y0)), to_px((x1, y0)), [80, 80, 80]);
    c.line(to_px((x0, y0)), to_px((x0, y1)), [80, 80, 80]);
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let finite: Vec<(f64, f64)> =
            s.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        for w in finite.windows(2) {
            c.line(to_px(w[0]), to_px(w[1]), color);
        }
    }
    write_png(path, W, H, &c.px)?;
    Ok(((x0, x1), (y0, y1)))
}

/// Writes an RGB8 image with the heatmap's PNG encoder.
fn write_png(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<()> {
    let img = Image { width, height, rgb: rgb.to_vec() };
    let bytes = encode_png(&img)?;
    std::fs::write(path, bytes).map_err(|e| TrainError::file(path, format!("cannot write: {e}")))
}
