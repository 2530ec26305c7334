//! `eval --task layers`: the SOLAR paper's "layer distance", measured. For every pair of layers
//! (i, j), the cosine similarity between the hidden states after block i and after block j,
//! averaged over every token of a data file: an L x L matrix. Index i is the output of
//! `model.layers.{i}` (0-based, as HF names and PAPER.md's layer map count); the embedding
//! output is not a layer here, and there is no final norm. A depth up-scaled model shows its
//! seam as the place where a layer stops resembling its neighbours (a drop just off the
//! diagonal), which is what a user looks at to choose how many layers to remove.
//!
//! Tokens weigh the same wherever they are (not a mean of per-sequence means); the diagonal is
//! 1 by definition and the matrix is symmetric by construction (only i < j is computed). A
//! sequence longer than the context is cut into pieces of `seq_len` tokens, each run from a
//! fresh context.

use crate::error::{Result, TrainError};
use serde::Serialize;
use solar_model::{Llama, ModelInput};
use std::cmp::Ordering;
use std::fmt::Write;

/// What `eval --task layers --json` prints and `--out` writes.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LayerSimilarity {
    pub layers: usize,
    /// similarity[i][j]: mean cosine between the outputs of blocks i and j.
    pub similarity: Vec<Vec<f64>>,
    /// Tokens averaged over.
    pub tokens: usize,
}

/// Running sums of the cosines of every pair, over tokens.
struct CosineSums {
    layers: usize,
    /// [L, L], only i < j used.
    sums: Vec<f64>,
    tokens: usize,
}

impl CosineSums {
    fn new(layers: usize) -> CosineSums {
        CosineSums { layers, sums: vec![0.0; layers * layers], tokens: 0 }
    }

    /// Adds every token of `hiddens` (per layer, [T, C] flattened).
    fn add(&mut self, hiddens: &[Vec<f32>], c: usize) {
        let l = self.layers;
        let t = hiddens.first().map_or(0, |h| h.len() / c);
        for tok in 0..t {
            let row = |i: usize| &hiddens[i][tok * c..(tok + 1) * c];
            let norms: Vec<f64> = (0..l).map(|i| dot(row(i), row(i)).sqrt()).collect();
            for i in 0..l {
                for j in i + 1..l {
                    let denom = norms[i] * norms[j];
                    // A zero vector has no direction: count it as unrelated.
                    if denom > 0.0 {
                        self.sums[i * l + j] += dot(row(i), row(j)) / denom;
                    }
                }
            }
        }
        self.tokens += t;
    }

    fn finish(self) -> LayerSimilarity {
        let l = self.layers;
        let n = self.tokens as f64;
        let entry = |i: usize, j: usize| match i.cmp(&j) {
            Ordering::Equal => 1.0,
            Ordering::Less => self.sums[i * l + j] / n,
            Ordering::Greater => self.sums[j * l + i] / n,
        };
        let m = (0..l).map(|i| (0..l).map(|j| entry(i, j)).collect()).collect();
        LayerSimilarity { layers: l, similarity: m, tokens: self.tokens }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Mean cosine similarity between the outputs of every pair of blocks over `sequences`.
pub fn layer_similarity(model: &Llama, sequences: &[Vec<u32>], seq_len: usize) -> Result<LayerSimilarity> {
    if seq_len == 0 {
        return Err(TrainError::Msg("--seq-len must be at least 1".into()));
    }
    let (l, c) = (model.config.num_hidden_layers, model.config.hidden_size);
    let mut sums = CosineSums::new(l);
    for seq in sequences {
        for piece in seq.chunks(seq_len) {
            let hiddens = model.layer_hiddens(&ModelInput::rows(piece, 1, piece.len())?)?;
            // Index 0 is the embedding output; blocks follow. Each [1, T, C].
            let blocks =
                hiddens[1..].iter().map(|h| h.to_vec::<f32>()).collect::<std::result::Result<Vec<_>, _>>()?;
            sums.add(&blocks, c);
        }
    }
    if sums.tokens == 0 {
        return Err(TrainError::Msg("no token to run: every sequence is empty".into()));
    }
    Ok(sums.finish())
}

/// The matrix as a text table, two decimals, rows and columns labelled by layer index.
pub fn format_table(s: &LayerSimilarity) -> String {
    let width = s.layers.saturating_sub(1).to_string().len().max(4);
    let mut out = format!("{:>width$}", "");
    for j in 0..s.layers {
        let _ = write!(out, " {j:>width$}");
    }
    for (i, row) in s.similarity.iter().enumerate() {
        let _ = write!(out, "\n{i:>width$}");
        for v in row {
            let _ = write!(out, " {v:>width$.2}");
        }
    }
    out
}

/// Similarity between each layer and the next (the first off-diagonal): where it is lowest,
/// consecutive layers agree least, the place to look for a seam.
pub fn adjacent(s: &LayerSimilarity) -> Vec<f64> {
    (1..s.layers).map(|i| s.similarity[i - 1][i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosines_of_known_vectors() {
        // Two tokens, three layers, C = 2: layer 1 equals layer 0 scaled, layer 2 orthogonal
        // on token 0 and opposite on token 1.
        let h0 = vec![1.0, 0.0, 0.0, 2.0];
        let h1 = vec![3.0, 0.0, 0.0, 5.0];
        let h2 = vec![0.0, 1.0, 0.0, -1.0];
        let mut sums = CosineSums::new(3);
        sums.add(&[h0, h1, h2], 2);
        let s = sums.finish();
        assert_eq!(s.tokens, 2);
        assert_eq!(s.similarity[0][1], 1.0);
        assert_eq!(s.similarity[0][2], -0.5);
        assert_eq!(s.similarity[2][1], -0.5);
        assert_eq!(adjacent(&s), vec![1.0, -0.5]);
        let table = format_table(&s);
        assert_eq!(table.lines().count(), 4);
        assert!(table.lines().nth(3).unwrap().contains("-0.50"));
    }
}
