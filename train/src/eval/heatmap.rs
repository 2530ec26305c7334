//! A square matrix (the layer similarity of eval/layers.rs) drawn as a PNG heatmap: one cell of
//! `cell` pixels per entry in viridis (perceptually uniform, readable in grey and by colour-
//! blind readers), layer indices along the top and left, and a colour bar on the right with
//! the values at its ends. The scale runs from the matrix's smallest to its largest value, so
//! the contrast goes where the data is; the bar's labels say what the colours mean. Text uses a
//! built-in 3x5 pixel font (digits, '.', '-'), so no font file is needed.

use crate::error::{Result, TrainError};
use std::path::Path;

/// viridis sampled at 9 even stops (matplotlib's map; R's viridis(9)).
const VIRIDIS: [[u8; 3]; 9] = [
    [0x44, 0x01, 0x54],
    [0x47, 0x2d, 0x7b],
    [0x3b, 0x52, 0x8b],
    [0x2c, 0x72, 0x8e],
    [0x21, 0x90, 0x8c],
    [0x27, 0xad, 0x81],
    [0x5d, 0xc8, 0x63],
    [0xaa, 0xdc, 0x32],
    [0xfd, 0xe7, 0x25],
];

/// The colour of `t` in [0, 1] (clamped), interpolated between the stops.
pub fn viridis(t: f64) -> [u8; 3] {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let x = t * (VIRIDIS.len() - 1) as f64;
    let k = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - k as f64;
    let mix = |c: usize| (VIRIDIS[k][c] as f64 * (1.0 - f) + VIRIDIS[k + 1][c] as f64 * f).round() as u8;
    [mix(0), mix(1), mix(2)]
}

/// 3x5 glyphs, one row per byte, bit 2 = left column.
fn glyph(ch: char) -> [u8; 5] {
    match ch {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        _ => [0; 5],
    }
}

/// Pixels of one glyph scaled by `SCALE`, and the advance between glyphs.
const SCALE: usize = 2;
const GLYPH_W: usize = 3 * SCALE;
const GLYPH_H: usize = 5 * SCALE;
const ADVANCE: usize = GLYPH_W + SCALE;
const INK: [u8; 3] = [40, 40, 40];
const PAPER: [u8; 3] = [255, 255, 255];

/// An RGB image, row-major, 3 bytes a pixel.
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Image {
    fn new(width: usize, height: usize) -> Image {
        Image { width, height, rgb: PAPER.repeat(width * height) }
    }

    fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, color: [u8; 3]) {
        for yy in y..(y + h).min(self.height) {
            for xx in x..(x + w).min(self.width) {
                let at = (yy * self.width + xx) * 3;
                self.rgb[at..at + 3].copy_from_slice(&color);
            }
        }
    }

    /// The pixel at (x, y).
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let at = (y * self.width + x) * 3;
        [self.rgb[at], self.rgb[at + 1], self.rgb[at + 2]]
    }

    fn text(&mut self, x: usize, y: usize, s: &str) {
        for (n, ch) in s.chars().enumerate() {
            for (r, bits) in glyph(ch).iter().enumerate() {
                for col in 0..3 {
                    if bits >> (2 - col) & 1 == 1 {
                        self.fill(x + n * ADVANCE + col * SCALE, y + r * SCALE, SCALE, SCALE, INK);
                    }
                }
            }
        }
    }
}

fn text_width(s: &str) -> usize {
    (s.chars().count() * ADVANCE).saturating_sub(SCALE)
}

/// Where the heatmap's parts lie, so tests can find a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Top-left pixel of cell (0, 0).
    pub left: usize,
    pub top: usize,
    pub cell: usize,
}

/// The heatmap of `m` (square, n x n) with `cell` pixels per entry, and where its grid lies.
pub fn render_heatmap(m: &[Vec<f64>], cell: usize) -> Result<(Image, Layout)> {
    let n = m.len();
    if n == 0 || m.iter().any(|r| r.len() != n) || cell == 0 {
        return Err(TrainError::Msg(
            "a heatmap needs a non-empty square matrix and cells of 1 px or more".into(),
        ));
    }
    let values = m.iter().flatten().copied().filter(|v| v.is_finite());
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (hi.min(0.0) - 1.0, hi.max(1.0)) };
    let label_w = text_width(&(n - 1).to_string());
    // Label every `step`th layer, as often as labels fit without touching.
    let step = (label_w + 2 * SCALE).div_ceil(cell).max(1);
    let (lo_text, hi_text) = (format!("{lo:.2}"), format!("{hi:.2}"));
    let bar_label_w = text_width(&lo_text).max(text_width(&hi_text));
    let pad = 8;
    let grid = n * cell;
    let layout = Layout { left: pad + label_w + pad, top: pad + GLYPH_H + pad, cell };
    let bar_x = layout.left + grid + 2 * pad;
    let bar_w = 16;
    let width = bar_x + bar_w + pad + bar_label_w + pad;
    let height = layout.top + grid + pad.max(GLYPH_H / 2 + 2);
    let mut img = Image::new(width, height);
    for (i, row) in m.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let x = layout.left + j * cell;
            img.fill(x, layout.top + i * cell, cell, cell, viridis((v - lo) / (hi - lo)));
        }
    }
    for k in (0..n).step_by(step) {
        let label = k.to_string();
        let centre = k * cell + cell / 2;
        let x = (layout.left + centre).saturating_sub(text_width(&label) / 2);
        img.text(x, pad, &label);
        let y = (layout.top + centre).saturating_sub(GLYPH_H / 2);
        img.text(layout.left - pad - text_width(&label), y, &label);
    }
    // The colour bar: hi at the top, lo at the bottom, as the labels say.
    for y in 0..grid {
        let t = 1.0 - y as f64 / (grid.max(2) - 1) as f64;
        img.fill(bar_x, layout.top + y, bar_w, 1, viridis(t));
    }
    img.text(bar_x + bar_w + pad, layout.top, &hi_text);
    img.text(bar_x + bar_w + pad, (layout.top + grid).saturating_sub(GLYPH_H), &lo_text);
    Ok((img, layout))
}

/// Encodes `img` as an 8-bit RGB PNG.
pub fn encode_png(img: &Image) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let err = |e: png::EncodingError| TrainError::Msg(format!("cannot encode the heatmap as PNG: {e}"));
    let mut enc = png::Encoder::new(&mut out, img.width as u32, img.height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(err)?;
    writer.write_image_data(&img.rgb).map_err(err)?;
    writer.finish().map_err(err)?;
    Ok(out)
}

/// Draws `m` and writes it to `path` as a PNG, atomically (an existing file only with
/// `overwrite`).
pub fn write_heatmap(path: &Path, m: &[Vec<f64>], cell: usize, overwrite: bool) -> Result<()> {
    let (img, _) = render_heatmap(m, cell)?;
    let bytes = encode_png(&img)?;
    Ok(solar_model::output::write_file(path, &bytes, overwrite)?)
}

/// Cell size for an n x n heatmap: 16 px, smaller for big matrices so the image stays near
/// 1000 px wide, never under 4.
pub fn default_cell(n: usize) -> usize {
    (1024 / n.max(1)).clamp(4, 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_ends_and_middle() {
        assert_eq!(viridis(0.0), [0x44, 0x01, 0x54]);
        assert_eq!(viridis(1.0), [0xfd, 0xe7, 0x25]);
        assert_eq!(viridis(0.5), [0x21, 0x90, 0x8c]);
        assert_eq!(viridis(-3.0), viridis(0.0));
        assert_eq!(viridis(f64::NAN), viridis(0.0));
    }

    #[test]
    fn cells_take_their_colour() {
        let m = vec![vec![1.0, 0.5], vec![0.5, 1.0]];
        let (img, at) = render_heatmap(&m, 10).unwrap();
        let centre = |i: usize, j: usize| img.pixel(at.left + j * 10 + 5, at.top + i * 10 + 5);
        assert_eq!(centre(0, 0), viridis(1.0));
        assert_eq!(centre(0, 1), viridis(0.0));
        assert!(render_heatmap(&[vec![1.0, 2.0]], 4).is_err());
    }
}
