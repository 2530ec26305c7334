//! Training rows, the shared currency between data formats and trainers. An `LmRow` holds at
//! most seq_len tokens (one example, or several packed) with, per position, the target it must
//! predict (already shifted: labels[t] is the token after ids[t], -100 where nothing is
//! scored: prompts, padding, the last token of a packed document), its position (restarting
//! at 0 per document) and its document id (attention never crosses documents).
//! `collate` pads rows into a batch [B, T] for the model.

use crate::error::Result;
use solar_engine::ops::IGNORE_INDEX;
use solar_engine::Tensor;
use solar_model::ModelInput;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LmRow {
    pub ids: Vec<u32>,
    pub labels: Vec<i32>,
    pub positions: Vec<u32>,
    pub doc_ids: Vec<u32>,
}

impl LmRow {
    /// One document: every next token scored where `score[t]` (so a prompt can be left out);
    /// the last token predicts nothing.
    pub fn single(ids: Vec<u32>, score: impl Fn(usize) -> bool) -> LmRow {
        let n = ids.len();
        let labels = (0..n)
            .map(|t| if t + 1 < n && score(t + 1) { ids[t + 1] as i32 } else { IGNORE_INDEX as i32 })
            .collect();
        LmRow { positions: (0..n as u32).collect(), doc_ids: vec![0; n], ids, labels }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    /// Tokens whose loss counts.
    pub fn scored(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE_INDEX as i32).count()
    }

    /// Appends `other` as a new document of this row (packing).
    pub fn append_document(&mut self, other: &LmRow) {
        let doc = self.doc_ids.last().map_or(0, |d| d + 1);
        self.ids.extend(&other.ids);
        self.labels.extend(&other.labels);
        self.positions.extend(&other.positions);
        self.doc_ids.extend(std::iter::repeat_n(doc, other.len()));
    }
}

/// A preference pair: the same prompt with a chosen and a rejected completion; labels score
/// the completion tokens only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairRow {
    pub chosen: LmRow,
    pub rejected: LmRow,
}

/// A padded batch: model input [B, T] and targets [B, T] (-100 on padding).
pub struct Batch {
    pub input: ModelInput,
    pub targets: Tensor,
    /// Scored tokens in the batch.
    pub scored: usize,
}

/// Pads `rows` to the longest among them. Padding is token 0 at position 0 in a document of its
/// own, scored nowhere, so it changes nothing the real tokens see.
pub fn collate(rows: &[&LmRow]) -> Result<Batch> {
    let b = rows.len();
    let t = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
    let (mut ids, mut labels, mut pos, mut docs) = (
        Vec::with_capacity(b * t),
        Vec::with_capacity(b * t),
        Vec::with_capacity(b * t),
        Vec::with_capacity(b * t),
    );
    for r in rows {
        let pad = t - r.len();
        let pad_doc = r.doc_ids.last().map_or(0, |d| d + 1);
        ids.extend(r.ids.iter().copied().chain(std::iter::repeat_n(0, pad)));
        labels.extend(r.labels.iter().copied().chain(std::iter::repeat_n(IGNORE_INDEX as i32, pad)));
        pos.extend(r.positions.iter().copied().chain(std::iter::repeat_n(0, pad)));
        docs.extend(r.doc_ids.iter().copied().chain(std::iter::repeat_n(pad_doc, pad)));
    }
    let scored = rows.iter().map(|r| r.scored()).sum();
    Ok(Batch {
        input: ModelInput {
            ids: Tensor::from_vec(ids, [b, t])?,
            positions: Tensor::from_vec(pos, [b, t])?,
            doc_ids: Some(Tensor::from_vec(docs, [b, t])?),
        },
        targets: Tensor::from_vec(labels, [b, t])?,
        scored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_rows_shift_labels_and_respect_the_score_mask() {
        let r = LmRow::single(vec![1, 10, 11, 12], |t| t >= 2);
        assert_eq!(r.labels, vec![-100, 11, 12, -100]);
        assert_eq!(r.scored(), 2);
    }

    #[test]
    fn packing_restarts_positions_and_numbers_documents() {
        let mut r = LmRow::single(vec![1, 5, 6], |_| true);
        r.append_document(&LmRow::single(vec![1, 7], |_| true));
        assert_eq!(r.positions, vec![0, 1, 2, 0, 1]);
        assert_eq!(r.doc_ids, vec![0, 0, 0, 1, 1]);
        assert_eq!(r.labels, vec![5, 6, -100, 7, -100]);
        let b = collate(&[&r, &LmRow::single(vec![1, 2], |_| true)]).unwrap();
        assert_eq!(b.input.ids.dims(), &[2, 5]);
        assert_eq!(b.targets.to_vec::<i32>().unwrap()[5..], [2, -100, -100, -100, -100]);
        assert_eq!(b.input.doc_ids.unwrap().to_vec::<u32>().unwrap()[5..], [0, 0, 1, 1, 1]);
        assert_eq!(b.scored, 4);
    }
}
