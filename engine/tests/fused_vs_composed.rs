//! Layer 2: each fused op equals the same math built from simpler ops (matmul, softmax,
//! permute, index_select, broadcast add/mul, reductions), forward and gradients, in f64.

mod common;
use common::{assert_tensor_close, ids_i32, randn, value_and_grads};
use solar_engine::ops::{self, AttentionMask};
use solar_engine::{DType, Result, Tensor};

fn assert_same(
    name: &str,
    inputs: &[Tensor],
    fused: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    composed: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) {
    let (yf, gf, _) = value_and_grads(inputs, fused);
    let (yc, gc, _) = value_and_grads(inputs, composed);
    assert_tensor_close(&format!("{name} forward"), &yf, &yc, 1e-12, 1e-10);
    for (i, (a, b)) in gf.iter().zip(&gc).enumerate() {
        assert_tensor_close(&format!("{name} grad {i}"), a, b, 1e-12, 1e-10);
    }
}

/// softmax(Q K^T / sqrt(D) + mask) V with GQA by index_select on the kv heads.
fn composed_attention(x: &[Tensor], mask_add: &Tensor, h: usize, hkv: usize) -> Result<Tensor> {
    let d = x[0].dims()[3];
    let kv_of_head: Vec<usize> = (0..h).map(|i| i / (h / hkv)).collect();
    let q = ops::permute(&x[0], &[0, 2, 1, 3])?; // [B, H, T, D]
    let k = ops::index_select(&ops::permute(&x[1], &[0, 2, 1, 3])?, 1, &kv_of_head)?;
    let v = ops::index_select(&ops::permute(&x[2], &[0, 2, 1, 3])?, 1, &kv_of_head)?;
    let s = ops::scale(&ops::matmul_t(&q, &k, false, true)?, 1.0 / (d as f64).sqrt())?; // [B, H, T, T]
    let p = ops::softmax(&ops::add(&s, mask_add)?)?;
    ops::permute(&ops::matmul(&p, &v)?, &[0, 2, 1, 3])
}

/// Additive mask [B, 1, T, T]: 0 where visible, -1e30 elsewhere.
fn mask_tensor(b: usize, t: usize, doc: Option<&[i32]>, window: Option<usize>) -> Tensor {
    let mut m = vec![0.0; b * t * t];
    for bi in 0..b {
        for i in 0..t {
            for j in 0..t {
                let same_doc = doc.is_none_or(|d| d[bi * t + i] == d[bi * t + j]);
                let in_window = window.is_none_or(|w| i < j + w);
                if !(j <= i && same_doc && in_window) {
                    m[(bi * t + i) * t + j] = -1e30;
                }
            }
        }
    }
    Tensor::from_vec(m, [b, 1, t, t]).unwrap()
}

#[test]
fn attention_equals_softmax_qk_v_causal_gqa() {
    let (b, t, h, hkv, d) = (2, 7, 6, 2, 4);
    let ins = [randn(&[b, t, h, d], 1), randn(&[b, t, hkv, d], 2), randn(&[b, t, hkv, d], 3)];
    let mask = mask_tensor(b, t, None, None);
    assert_same(
        "attention causal",
        &ins,
        &|x| ops::attention(&x[0], &x[1], &x[2], &AttentionMask::default()),
        &|x| composed_attention(x, &mask, h, hkv),
    );
}

#[test]
fn attention_equals_composed_with_documents_and_window() {
    let (b, t, h, hkv, d) = (2, 9, 3, 1, 4);
    let ins = [randn(&[b, t, h, d], 4), randn(&[b, t, hkv, d], 5), randn(&[b, t, hkv, d], 6)];
    let doc: Vec<i32> = vec![0, 0, 0, 0, 1, 1, 1, 1, 1, 3, 3, 4, 4, 4, 4, 4, 4, 9];
    let m = AttentionMask { doc_ids: Some(ids_i32(&doc, &[b, t])), window: Some(3) };
    let mask = mask_tensor(b, t, Some(&doc), Some(3));
    assert_same("attention documents+window", &ins, &|x| ops::attention(&x[0], &x[1], &x[2], &m), &|x| {
        composed_attention(x, &mask, h, hkv)
    });
}

#[test]
fn cross_entropy_equals_log_softmax_and_gather() {
    let logits = randn(&[6, 9], 7);
    let t: Vec<i32> = vec![1, -100, 8, 0, 4, -100];
    let targets = ids_i32(&t, &[6]);
    // Ignored rows gather class 0 and are multiplied by 0.
    let safe = ids_i32(&t.iter().map(|&x| x.max(0)).collect::<Vec<_>>(), &[6]);
    let keep = Tensor::from_vec(t.iter().map(|&x| if x < 0 { 0.0 } else { 1.0 }).collect::<Vec<f64>>(), [6])
        .unwrap();
    assert_same("cross_entropy", &[logits], &|x| Ok(ops::cross_entropy(&x[0], &targets)?.loss_sum), &|x| {
        ops::scale(&ops::sum(&ops::mul(&ops::gather_last(&ops::log_softmax(&x[0])?, &safe)?, &keep)?)?, -1.0)
    });
    assert_eq!(ops::cross_entropy(&randn(&[6, 9], 8), &targets).unwrap().count, 4);
}

#[test]
fn linear_cross_entropy_equals_matmul_then_cross_entropy() {
    let targets = ids_i32(&[1, -100, 8, 0, 4, -100, 2, 2, 7, 3], &[10]);
    for chunk in [1, 4, 10, 64] {
        assert_same(
            &format!("linear_cross_entropy chunk {chunk}"),
            &[randn(&[10, 6], 30), randn(&[9, 6], 31)],
            &|x| Ok(ops::linear_cross_entropy_chunked(&x[0], &x[1], &targets, chunk)?.loss_sum),
            &|x| Ok(ops::cross_entropy(&ops::matmul_t(&x[0], &x[1], false, true)?, &targets)?.loss_sum),
        );
    }
}

#[test]
fn sequence_logprobs_equal_log_softmax_gather_and_row_sums() {
    let (b, t, v) = (2, 4, 5);
    let l: Vec<i32> = vec![-100, 2, 4, 1, -100, -100, 0, 3];
    let labels = ids_i32(&l, &[b, t]);
    let safe = ids_i32(&l.iter().map(|&x| x.max(0)).collect::<Vec<_>>(), &[b, t]);
    let keep =
        Tensor::from_vec(l.iter().map(|&x| if x < 0 { 0.0 } else { 1.0 }).collect::<Vec<f64>>(), [b, t])
            .unwrap();
    assert_same(
        "sequence_logprobs",
        &[randn(&[b, t, v], 9)],
        &|x| Ok(ops::sequence_logprobs(&x[0], &labels)?.logps),
        &|x| {
            ops::sum_last(&ops::mul(&ops::gather_last(&ops::log_softmax(&x[0])?, &safe)?, &keep)?)?
                .reshape([b])
        },
    );
}

#[test]
fn linear_sequence_logprobs_equal_logits_log_softmax_gather_and_masked_sums() {
    // Sequences of 5 rows; tiles of 1, 3 (straddling sequences), 5 and 64 rows, and vocabulary
    // blocks of 2, 4 and all 9, so rows meet several blocks and chunks cut sequences apart.
    let (b, t, c, v) = (3, 5, 6, 9);
    let l: Vec<i32> = vec![-100, 2, 4, 1, 8, -100, -100, 0, 3, -100, 7, 7, -100, 5, 6];
    let labels = ids_i32(&l, &[b, t]);
    let safe = ids_i32(&l.iter().map(|&x| x.max(0)).collect::<Vec<_>>(), &[b, t]);
    let keep =
        Tensor::from_vec(l.iter().map(|&x| if x < 0 { 0.0 } else { 1.0 }).collect::<Vec<f64>>(), [b, t])
            .unwrap();
    for (rows, block) in [(1, 2), (3, 4), (5, 9), (64, 4)] {
        assert_same(
            &format!("linear_sequence_logprobs tile {rows}x{block}"),
            &[randn(&[b, t, c], 40), randn(&[v, c], 41)],
            &|x| Ok(ops::linear_sequence_logprobs_tiled(&x[0], &x[1], &labels, rows, block)?.logps),
            &|x| {
                let logits = ops::matmul_t(&x[0], &x[1], false, true)?; // [B, T, V]
                ops::sum_last(&ops::mul(&ops::gather_last(&ops::log_softmax(&logits)?, &safe)?, &keep)?)?
                    .reshape([b])
            },
        );
    }
    let lp = ops::linear_sequence_logprobs(&randn(&[b * t, c], 42), &randn(&[v, c], 43), &labels).unwrap();
    assert_eq!(lp.counts, vec![4, 2, 4]);
    assert_eq!(lp.logps.dims(), &[b]);
}

#[test]
fn rmsnorm_equals_composed() {
    let eps = 1e-5;
    assert_same(
        "rmsnorm",
        &[randn(&[3, 5, 8], 10), randn(&[8], 11)],
        &|x| ops::rmsnorm(&x[0], &x[1], eps),
        &|x| {
            let ms = ops::mean_last(&ops::mul(&x[0], &x[0])?)?;
            let rstd = ops::powf(&ops::add_scalar(&ms, eps)?, -0.5)?;
            ops::mul(&ops::mul(&x[0], &rstd)?, &x[1])
        },
    );
}

#[test]
fn swiglu_equals_composed() {
    assert_same("swiglu", &[randn(&[4, 6], 12), randn(&[4, 6], 13)], &|x| ops::swiglu(&x[0], &x[1]), &|x| {
        ops::mul(&ops::mul(&x[0], &ops::sigmoid(&x[0])?)?, &x[1])
    });
}

#[test]
fn rope_equals_rotation_built_from_halves() {
    // rotate_half(x) = [-x2, x1]: y = x * cos + rotate_half(x) * sin, with cos/sin tables built
    // here independently.
    let (t, h, d, theta) = (5, 2, 6, 500.0);
    let pos: Vec<i32> = vec![0, 1, 2, 0, 1];
    let (mut cos, mut sin) = (vec![0.0; t * d], vec![0.0; t * d]);
    for (n, &p) in pos.iter().enumerate() {
        for i in 0..d {
            let f = (i % (d / 2)) as f64;
            let a = p as f64 / f64::powf(theta, 2.0 * f / d as f64);
            cos[n * d + i] = a.cos();
            sin[n * d + i] = a.sin();
        }
    }
    let cos = Tensor::from_vec(cos, [t, 1, d]).unwrap();
    let sin = Tensor::from_vec(sin, [t, 1, d]).unwrap();
    let positions = ids_i32(&pos, &[t]);
    let first: Vec<usize> = (0..d / 2).collect();
    let second: Vec<usize> = (d / 2..d).collect();
    let tile: Vec<usize> = (0..d).map(|i| i % (d / 2)).collect();
    let lo: Vec<f64> = (0..d).map(|i| if i < d / 2 { 1.0 } else { 0.0 }).collect();
    let lo_mask = Tensor::from_vec(lo.clone(), [d]).unwrap();
    let hi_mask = Tensor::from_vec(lo.iter().map(|x| 1.0 - x).collect::<Vec<f64>>(), [d]).unwrap();
    assert_same("rope", &[randn(&[t, h, d], 14)], &|x| ops::rope(&x[0], &positions, theta), &|x| {
        // rotate_half(x) = [-x2, x1]: both halves tiled to width D, then masked.
        let x1 = ops::index_select(&ops::index_select(&x[0], 2, &first)?, 2, &tile)?;
        let neg_x2 = ops::index_select(&ops::scale(&ops::index_select(&x[0], 2, &second)?, -1.0)?, 2, &tile)?;
        let rotated = ops::add(&ops::mul(&neg_x2, &lo_mask)?, &ops::mul(&x1, &hi_mask)?)?;
        ops::add(&ops::mul(&x[0], &cos)?, &ops::mul(&rotated, &sin)?)
    });
}

#[test]
fn attention_decode_equals_the_last_rows_of_full_attention() {
    let (b, t, h, hkv, d) = (2, 11, 6, 2, 8);
    let (q, k, v) = (randn(&[b, t, h, d], 40), randn(&[b, t, hkv, d], 41), randn(&[b, t, hkv, d], 42));
    for window in [None, Some(4)] {
        let full = ops::attention(&q, &k, &v, &AttentionMask { doc_ids: None, window }).unwrap();
        for tq in [1, 3, t] {
            let rows: Vec<usize> = (t - tq..t).collect();
            let q_new = ops::index_select(&q, 1, &rows).unwrap();
            let got = ops::attention_decode(&q_new, &k, &v, window).unwrap();
            let want = ops::index_select(&full, 1, &rows).unwrap();
            assert_tensor_close(&format!("decode tq={tq} window={window:?}"), &got, &want, 1e-12, 1e-10);
        }
    }
}

/// The slice form generation uses over its growing cache: the same rows as full attention in
/// f32, and a cache of the wrong length is an error, not a read past it.
#[test]
fn attention_decode_slices_equals_the_last_rows_of_full_attention() {
    let (b, t, h, hkv, d, tq) = (2, 9, 4, 2, 8, 2);
    let f32s = |x: Tensor| x.to_dtype(DType::F32).unwrap();
    let (q, k, v) =
        (f32s(randn(&[b, t, h, d], 50)), f32s(randn(&[b, t, hkv, d], 51)), f32s(randn(&[b, t, hkv, d], 52)));
    for window in [None, Some(3)] {
        let full = ops::attention(&q, &k, &v, &AttentionMask { doc_ids: None, window }).unwrap();
        let rows: Vec<usize> = (t - tq..t).collect();
        let q_new = ops::index_select(&q, 1, &rows).unwrap();
        let (qs, ks, vs) =
            (q_new.to_vec::<f32>().unwrap(), k.to_vec::<f32>().unwrap(), v.to_vec::<f32>().unwrap());
        let got = ops::attention_decode_slices(&qs, &ks, &vs, [b, tq, t, h, hkv, d], window).unwrap();
        let got = Tensor::from_vec(got, [b, tq, h, d]).unwrap();
        let want = ops::index_select(&full, 1, &rows).unwrap();
        assert_tensor_close(&format!("decode slices window={window:?}"), &got, &want, 1e-6, 1e-5);
        let short = ops::attention_decode_slices(&qs, &ks[1..], &vs, [b, tq, t, h, hkv, d], window);
        assert!(short.unwrap_err().to_string().contains("[B, Tq, Tk, H, Hkv, D]"));
    }
}
