//! The demo's SVG charts read as charts: parsed back from the SVG text, a loss chart has its
//! title, both axis labels, numeric tick labels spanning the data, a legend entry per run,
//! a dot per raw step and a smoothed line per run, and a labelled marker per stage start;
//! the heatmap has every layer number on both axes, a colour bar with its scale, a cell per
//! layer pair in viridis and the seam.

use solar_train::demo::plot::{loss_chart_svg, write_loss_chart, Marker, Series};
use solar_train::eval::heatmap::viridis;
use solar_train::eval::heatmap_svg::heatmap_svg;

/// The text of every <text> element, in document order.
fn texts(svg: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = svg;
    while let Some(at) = rest.find("<text") {
        rest = &rest[at..];
        let open_end = rest.find('>').expect("a <text> tag closes");
        let close = rest.find("</text>").expect("a <text> element ends");
        out.push(rest[open_end + 1..close].trim().to_string());
        rest = &rest[close..];
    }
    out
}

fn count(svg: &str, needle: &str) -> usize {
    svg.matches(needle).count()
}

fn series() -> Vec<Series> {
    let falling = |k: f64| (1..=50).map(|s| (s as f64, 4.0 / (1.0 + 0.1 * s as f64) + k)).collect();
    vec![
        Series { label: "up-scaled, continued".into(), points: falling(0.0), color: 0 },
        Series { label: "base, continued".into(), points: falling(0.3), color: 1 },
    ]
}

#[test]
fn loss_chart_has_axes_labels_legend_points_and_markers() {
    let markers =
        [Marker { step: 0.0, label: "pretrain".into() }, Marker { step: 25.0, label: "up-scale".into() }];
    let (svg, ranges) = loss_chart_svg("Pretraining loss", &series(), &markers).unwrap();
    assert!(svg.starts_with("<svg") || svg.contains("<svg "), "not an SVG");
    let t = texts(&svg);
    for want in
        ["Pretraining loss", "optimizer step", "training loss", "up-scaled, continued", "base, continued"]
    {
        assert!(t.iter().any(|s| s == want), "no text {want:?} in {t:?}");
    }
    for m in ["pretrain", "up-scale"] {
        assert!(t.iter().any(|s| s.trim() == m), "no marker label {m:?} in {t:?}");
    }
    // Tick labels: numbers, on both axes, within the ranges drawn.
    let numbers: Vec<f64> = t.iter().filter_map(|s| s.parse::<f64>().ok()).collect();
    // Steps are whole numbers, so their ticks read "10", not "10.0".
    assert!(t.iter().any(|s| s == "10") && !t.iter().any(|s| s == "10.0"), "{t:?}");
    let steps = numbers.iter().filter(|&&v| (10.0..=50.0).contains(&v)).count();
    let losses = numbers.iter().filter(|&&v| v > 0.5 && v < 4.0 && v.fract() != 0.0).count();
    assert!(steps >= 3, "too few step ticks: {numbers:?}");
    assert!(losses >= 3, "too few loss ticks: {numbers:?}");
    assert_eq!(ranges.steps, (0.0, 50.0));
    // A faint dot per raw step of each run; a smoothed line per run plus its legend swatch.
    assert_eq!(count(&svg, "<circle"), 100);
    assert!(count(&svg, "<polyline") >= 4, "lines: {}", count(&svg, "<polyline"));
}

#[test]
fn loss_chart_of_nothing_still_draws_and_bad_paths_are_named() {
    let (svg, _) = loss_chart_svg("empty", &[], &[]).unwrap();
    assert!(texts(&svg).iter().any(|s| s == "optimizer step"));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("no/such/dir/c.svg");
    let e = write_loss_chart(&bad, "t", &series(), &[]).unwrap_err().to_string();
    assert!(e.contains("no/such/dir/c.svg"), "{e}");
}

fn hex(c: [u8; 3]) -> String {
    format!("#{:02X}{:02X}{:02X}", c[0], c[1], c[2])
}

#[test]
fn heatmap_has_layer_numbers_colour_bar_and_seam() {
    let n = 6;
    let m: Vec<Vec<f64>> =
        (0..n).map(|i| (0..n).map(|j| 1.0 - 0.1 * (i as f64 - j as f64).abs()).collect()).collect();
    let svg = heatmap_svg(&m, "Layer similarity", Some(3)).unwrap();
    let t = texts(&svg);
    for want in [
        "Layer similarity",
        "layer",
        "cosine similarity",
        "layer (red lines: the seam, layer 3 starts the second copy)",
    ] {
        assert!(t.iter().any(|s| s == want), "no text {want:?} in {t:?}");
    }
    for k in 0..n {
        let label = k.to_string();
        assert!(t.iter().filter(|s| **s == label).count() >= 2, "layer {k} not on both axes: {t:?}");
    }
    // No label beyond the layers (a segmented axis has one segment more than it is told).
    for outside in ["-1", "6"] {
        assert!(!t.iter().any(|s| s == outside), "label {outside} outside the layers: {t:?}");
    }
    // The colour bar's scale reads the matrix's range, 0.50 to 1.00.
    assert!(t.iter().any(|s| s == "1.00") && t.iter().any(|s| s == "0.50"), "{t:?}");
    // Both ends of viridis appear: the diagonal is the brightest, the far corners the darkest.
    let svg_upper = svg.to_uppercase();
    assert!(svg_upper.contains(&hex(viridis(1.0))), "no brightest cell");
    assert!(svg_upper.contains(&hex(viridis(0.0))), "no darkest cell");
    assert!(svg_upper.contains("#E61E1E"), "no seam line");
    assert!(heatmap_svg(&[vec![1.0, 2.0]], "x", None).is_err());
}
