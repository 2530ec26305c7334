//! Layer 1: every op's backward against central finite differences in f64, on odd shapes:
//! T not a power of two, GQA with 3 query heads per kv head, a document boundary mid-row, a
//! sliding window, positions that restart, ignore-index targets.

mod common;
use common::{check_grads, ids_i32, ids_u32, randn};
use solar_engine::ops::{self, AttentionMask};

#[test]
fn grad_matmul_2d_all_transpose_flags() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let (m, k, n) = (3, 5, 4);
        let a = randn(&if ta { [k, m] } else { [m, k] }, 1);
        let b = randn(&if tb { [n, k] } else { [k, n] }, 2);
        check_grads(&format!("matmul ta={ta} tb={tb}"), &[a, b], |x| ops::matmul_t(&x[0], &x[1], ta, tb));
    }
}

#[test]
fn grad_matmul_batched_and_shared_rhs() {
    for (ta, tb) in [(false, false), (true, true), (false, true)] {
        let a = randn(&if ta { [2, 3, 5, 3] } else { [2, 3, 3, 5] }, 3);
        let b = randn(&if tb { [2, 3, 4, 5] } else { [2, 3, 5, 4] }, 4);
        check_grads(&format!("batched matmul ta={ta} tb={tb}"), &[a, b], |x| {
            ops::matmul_t(&x[0], &x[1], ta, tb)
        });
    }
    // Activations [B, T, C] times a shared weight [N, C] transposed: the linear layer.
    let x = randn(&[2, 3, 5], 5);
    let w = randn(&[4, 5], 6);
    check_grads("linear (shared rhs)", &[x, w], |x| ops::matmul_t(&x[0], &x[1], false, true));
}

#[test]
fn grad_embedding_repeated_ids() {
    let table = randn(&[6, 4], 7);
    let ids = ids_u32(&[3, 1, 3, 0, 5, 3, 1], &[7]);
    check_grads("embedding", &[table], |x| ops::embedding(&ids, &x[0]));
}

#[test]
fn grad_rmsnorm() {
    let x = randn(&[2, 7, 5], 8);
    let w = randn(&[5], 9);
    check_grads("rmsnorm", &[x, w], |x| ops::rmsnorm(&x[0], &x[1], 1e-5));
}

#[test]
fn grad_rope_with_restarting_positions() {
    let x = randn(&[1, 7, 3, 6], 10);
    let pos = ids_i32(&[0, 1, 2, 0, 1, 2, 3], &[1, 7]);
    check_grads("rope", &[x], |x| ops::rope(&x[0], &pos, 10000.0));
    // A large theta and large positions exercise the high-frequency end.
    let x = randn(&[7, 2, 8], 11);
    let pos = ids_u32(&[5, 900, 17, 4000, 3, 2, 1], &[7]);
    check_grads("rope large positions", &[x], |x| ops::rope(&x[0], &pos, 1e6));
}

fn attention_inputs(b: usize, t: usize, h: usize, hkv: usize, d: usize) -> Vec<solar_engine::Tensor> {
    vec![randn(&[b, t, h, d], 12), randn(&[b, t, hkv, d], 13), randn(&[b, t, hkv, d], 14)]
}

#[test]
fn grad_attention_causal_gqa_3_to_1() {
    let ins = attention_inputs(2, 7, 6, 2, 4);
    check_grads("attention causal gqa", &ins, |x| {
        ops::attention(&x[0], &x[1], &x[2], &AttentionMask::default())
    });
}

#[test]
fn grad_attention_document_mask_mid_row() {
    let ins = attention_inputs(2, 7, 3, 1, 4);
    // Row 0 has a boundary after token 2; row 1 holds three documents.
    let doc = ids_i32(&[0, 0, 0, 1, 1, 1, 1, 5, 5, 6, 6, 6, 7, 7], &[2, 7]);
    let mask = AttentionMask { doc_ids: Some(doc), window: None };
    check_grads("attention documents", &ins, |x| ops::attention(&x[0], &x[1], &x[2], &mask));
}

#[test]
fn grad_attention_sliding_window_with_documents() {
    let ins = attention_inputs(1, 9, 4, 2, 6);
    let doc = ids_u32(&[0, 0, 0, 0, 0, 0, 1, 1, 1], &[1, 9]);
    let mask = AttentionMask { doc_ids: Some(doc), window: Some(3) };
    check_grads("attention window", &ins, |x| ops::attention(&x[0], &x[1], &x[2], &mask));
}

#[test]
fn grad_swiglu() {
    let g = randn(&[3, 7], 15);
    let u = randn(&[3, 7], 16);
    check_grads("swiglu", &[g, u], |x| ops::swiglu(&x[0], &x[1]));
}

#[test]
fn grad_cross_entropy_with_ignore_index() {
    let logits = randn(&[7, 11], 17);
    let targets = ids_i32(&[3, -100, 10, 0, -100, 5, 5], &[7]);
    check_grads("cross_entropy", &[logits], |x| Ok(ops::cross_entropy(&x[0], &targets)?.loss_sum));
    check_grads("cross_entropy mean", &[randn(&[7, 11], 18)], |x| ops::cross_entropy_mean(&x[0], &targets));
}

#[test]
fn grad_linear_cross_entropy_across_chunks() {
    let (h, w) = (randn(&[7, 5], 24), randn(&[9, 5], 25));
    let targets = ids_i32(&[3, -100, 8, 0, -100, 5, 5], &[7]);
    // Chunks of 3 rows: 3 + 3 + 1, with ignored rows in two of them.
    check_grads("linear_cross_entropy", &[h, w], |x| {
        Ok(ops::linear_cross_entropy_chunked(&x[0], &x[1], &targets, 3)?.loss_sum)
    });
}

#[test]
fn grad_linear_sequence_logprobs_across_tiles() {
    let (h, w) = (randn(&[2, 4, 5], 26), randn(&[7, 5], 27));
    let labels = ids_i32(&[-100, 3, 6, 1, -100, -100, 0, 2], &[2, 4]);
    // Row chunks of 3 (the second starts inside the first sequence) by vocabulary blocks of 3.
    check_grads("linear_sequence_logprobs", &[h, w], |x| {
        Ok(ops::linear_sequence_logprobs_tiled(&x[0], &x[1], &labels, 3, 3)?.logps)
    });
}

#[test]
fn grad_logprob_per_sequence_masked() {
    let logits = randn(&[2, 5, 7], 19);
    let labels = ids_i32(&[-100, -100, 3, 6, 1, -100, 2, 2, 0, -100], &[2, 5]);
    check_grads("sequence_logprobs", &[logits], |x| Ok(ops::sequence_logprobs(&x[0], &labels)?.logps));
}

#[test]
fn grad_elementwise_broadcast_and_reductions() {
    let a = randn(&[2, 3, 4], 20);
    let b = randn(&[3, 1], 21);
    check_grads("add broadcast", &[a.clone(), b.clone()], |x| ops::add(&x[0], &x[1]));
    check_grads("sub broadcast", &[a.clone(), b.clone()], |x| ops::sub(&x[0], &x[1]));
    check_grads("mul broadcast", &[a.clone(), b], |x| ops::mul(&x[0], &x[1]));
    check_grads("scale", &[a.clone()], |x| ops::scale(&x[0], -1.5));
    check_grads("mean", &[a.clone()], |x| ops::mean(&x[0]));
    check_grads("sum_last", &[a.clone()], |x| ops::sum_last(&x[0]));
    check_grads("mean_last", &[a.clone()], |x| ops::mean_last(&x[0]));
    check_grads("exp", &[a.clone()], |x| ops::exp(&x[0]));
    check_grads("sigmoid", &[a.clone()], |x| ops::sigmoid(&x[0]));
    let pos = ops::add_scalar(&ops::mul(&a, &a).unwrap(), 0.5).unwrap();
    check_grads("log", &[pos.clone()], |x| ops::log(&x[0]));
    check_grads("powf", &[pos], |x| ops::powf(&x[0], -0.5));
}

#[test]
fn grad_log_sigmoid_and_relu() {
    // Spread wide so log_sigmoid sees both tails; relu's kink at 0 is never hit by random data.
    let x = ops::scale(&randn(&[3, 7], 24), 6.0).unwrap();
    check_grads("log_sigmoid", &[x.clone()], |x| ops::unary::log_sigmoid(&x[0]));
    check_grads("relu", &[x], |x| ops::unary::relu(&x[0]));
}

#[test]
fn log_sigmoid_is_finite_in_both_tails_and_relu_clamps() {
    let x = solar_engine::Tensor::from_vec(vec![-200.0f32, -30.0, 0.0, 30.0, 200.0], [5]).unwrap();
    let y = ops::unary::log_sigmoid(&x).unwrap().to_vec::<f32>().unwrap();
    let want = [-200.0f32, -30.0, -std::f32::consts::LN_2, -9.357623e-14, 0.0];
    for (g, w) in y.iter().zip(want) {
        assert!((g - w).abs() <= 1e-6 * w.abs().max(1e-7), "log_sigmoid: got {g}, want {w}");
    }
    let r = ops::unary::relu(&x).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(r, [0.0, 0.0, 0.0, 30.0, 200.0]);
}

#[test]
fn grad_softmax_log_softmax_gather_and_layout() {
    let x = randn(&[3, 5], 22);
    check_grads("softmax", &[x.clone()], |x| ops::softmax(&x[0]));
    check_grads("log_softmax", &[x.clone()], |x| ops::log_softmax(&x[0]));
    let idx = ids_u32(&[4, 0, 2], &[3]);
    check_grads("gather_last", &[x.clone()], |x| ops::gather_last(&x[0], &idx));
    let y = randn(&[2, 3, 4], 23);
    check_grads("permute", &[y.clone()], |x| ops::permute(&x[0], &[2, 0, 1]));
    check_grads("index_select repeats", &[y.clone()], |x| ops::index_select(&x[0], 1, &[0, 0, 2, 1, 2]));
    check_grads("reshape", &[y], |x| x[0].reshape([4, 6]));
}
