//! `eval --task layers` against cosines computed here from `Llama::layer_hiddens`, token by
//! token; the matrix's shape (unit diagonal, symmetric); long sequences cut into pieces; an
//! up-scaled model whose first blocks are the base's (same weights, same inputs) reproduces
//! the base's corner of the matrix exactly; and the heatmap PNG decodes to the right colours.

use solar_model::checkpoint::WriteOptions;
use solar_model::dus::{upscale, LayerSpec};
use solar_model::presets::preset;
use solar_model::{Llama, LlamaConfig, ModelInput};
use solar_train::eval::heatmap::{render_heatmap, viridis, write_heatmap};
use solar_train::eval::layers::{layer_similarity, LayerSimilarity};

fn four_layers() -> LlamaConfig {
    LlamaConfig { num_hidden_layers: 4, ..preset("tiny").unwrap() }
}

fn sequences() -> Vec<Vec<u32>> {
    vec![(0..10).map(|i| (i * 37 + 5) % 300).collect(), vec![1, 77, 120, 3], vec![9]]
}

/// Mean over tokens of cos(h_i, h_j), from the model's own per-layer hidden states.
fn reference(model: &Llama, pieces: &[Vec<u32>]) -> (Vec<Vec<f64>>, usize) {
    let l = model.config.num_hidden_layers;
    let c = model.config.hidden_size;
    let mut sum = vec![vec![0.0; l]; l];
    let mut tokens = 0;
    for p in pieces {
        let hs = model.layer_hiddens(&ModelInput::rows(p, 1, p.len()).unwrap()).unwrap();
        assert_eq!(hs.len(), l + 1);
        let hs: Vec<Vec<f32>> = hs.iter().map(|h| h.to_vec::<f32>().unwrap()).collect();
        for t in 0..p.len() {
            let v =
                |i: usize| -> Vec<f64> { hs[i + 1][t * c..(t + 1) * c].iter().map(|&x| x as f64).collect() };
            for (i, row) in sum.iter_mut().enumerate() {
                for (j, acc) in row.iter_mut().enumerate() {
                    let (a, b) = (v(i), v(j));
                    let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
                    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
                    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
                    *acc += dot / (na * nb);
                }
            }
            tokens += 1;
        }
    }
    let m = sum.iter().map(|r| r.iter().map(|x| x / tokens as f64).collect()).collect();
    (m, tokens)
}

fn assert_close(got: &LayerSimilarity, want: &[Vec<f64>]) {
    for (i, (g, w)) in got.similarity.iter().zip(want).enumerate() {
        for j in 0..g.len() {
            assert!((g[j] - w[j]).abs() < 1e-9, "[{i}][{j}]: {} vs {}", g[j], w[j]);
        }
    }
}

#[test]
fn similarity_matches_cosines_of_layer_hiddens() {
    let model = Llama::init(four_layers(), 7).unwrap();
    let seqs = sequences();
    let seq_len = 4;
    let r = layer_similarity(&model, &seqs, seq_len).unwrap();
    // The 10-token sequence runs as 4 + 4 + 2, each piece from a fresh context.
    let pieces: Vec<Vec<u32>> = seqs.iter().flat_map(|s| s.chunks(seq_len).map(|c| c.to_vec())).collect();
    assert_eq!(pieces.len(), 5);
    let (want, tokens) = reference(&model, &pieces);
    assert_eq!((r.layers, r.tokens), (4, tokens));
    assert_eq!(tokens, 15);
    assert_close(&r, &want);
    for i in 0..4 {
        assert_eq!(r.similarity[i][i], 1.0);
        for j in 0..4 {
            assert_eq!(r.similarity[i][j], r.similarity[j][i]);
            assert!(r.similarity[i][j] <= 1.0 + 1e-12 && r.similarity[i][j] >= -1.0 - 1e-12);
        }
    }
    // Chunking matters: whole sequences give another answer.
    let whole = layer_similarity(&model, &seqs, 512).unwrap();
    assert_eq!(whole.tokens, 15);
    assert_close(&whole, &reference(&model, &seqs).0);
    assert!(layer_similarity(&model, &[vec![]], 4).is_err());
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["layers"], 4);
    assert_eq!(json["similarity"].as_array().unwrap().len(), 4);
}

#[test]
fn upscaled_model_keeps_the_base_corner() {
    let tmp = tempfile::tempdir().unwrap();
    let (base_dir, up_dir) = (tmp.path().join("base"), tmp.path().join("up"));
    let base = Llama::init(four_layers(), 3).unwrap();
    base.save(&base_dir, &WriteOptions::default(), None).unwrap();
    // Remove 1: base blocks 0, 1, 2 then 1, 2, 3.
    upscale(&base_dir, &up_dir, &LayerSpec::Remove(1), &WriteOptions::default()).unwrap();
    let up = Llama::load(&up_dir).unwrap();
    assert_eq!(up.config.num_hidden_layers, 6);
    let seqs = sequences();
    let b = layer_similarity(&base, &seqs, 512).unwrap();
    let u = layer_similarity(&up, &seqs, 512).unwrap();
    for i in 0..3 {
        for j in 0..3 {
            assert!((u.similarity[i][j] - b.similarity[i][j]).abs() < 1e-12, "[{i}][{j}]");
        }
    }
    assert_close(&u, &reference(&up, &seqs).0);
}

#[test]
fn heatmap_png_decodes_to_the_rendered_image() {
    let m = vec![vec![1.0, 0.2, 0.6], vec![0.2, 1.0, 0.4], vec![0.6, 0.4, 1.0]];
    let (img, at) = render_heatmap(&m, 16).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("h.png");
    write_heatmap(&path, &m, 16, false).unwrap();
    // Written once: a second write without overwrite keeps it.
    assert!(write_heatmap(&path, &m, 8, false).unwrap_err().to_string().contains("already exists"));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width as usize, info.height as usize), (img.width, img.height));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(&buf[..info.buffer_size()], &img.rgb[..]);
    // The scale runs from the smallest value (0.2) to the largest (1.0).
    let cell = |i: usize, j: usize| img.pixel(at.left + j * 16 + 8, at.top + i * 16 + 8);
    assert_eq!(cell(0, 0), viridis(1.0));
    assert_eq!(cell(1, 0), viridis(0.0));
    assert_eq!(cell(2, 0), viridis(0.5));
    assert_eq!(cell(1, 2), viridis(0.25));
    let e = write_heatmap(&tmp.path().join("no/such/dir/h.png"), &m, 16, true).unwrap_err().to_string();
    assert!(e.contains("h.png") && e.contains("cannot write"), "{e}");
}
