//! Shared test helpers: random inputs, closeness checks with `atol + rtol*|ref|`, and the
//! central finite-difference gradient check every op's backward is held to.
#![allow(dead_code)]

use solar_engine::ops::{mul, sum};
use solar_engine::{DType, Result, Rng, Tape, Tensor};

pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, DType::F64, &mut Rng::new(seed))
}

pub fn randn_f32(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, DType::F32, &mut Rng::new(seed))
}

pub fn ids_i32(v: &[i32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

pub fn ids_u32(v: &[u32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

/// Asserts every |got - want| <= atol + rtol * |want|, naming the first offender.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= atol + rtol * w.abs(),
            "{what}: element {i}: got {g}, want {w} (atol {atol}, rtol {rtol})"
        );
    }
}

pub fn assert_tensor_close(what: &str, got: &Tensor, want: &Tensor, atol: f64, rtol: f64) {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes differ");
    assert_close(what, &got.to_vec_f64().unwrap(), &want.to_vec_f64().unwrap(), atol, rtol);
}

/// Bitwise equality of two tensors' data.
pub fn assert_bitwise(what: &str, a: &Tensor, b: &Tensor) {
    let (x, y) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    assert_eq!(x.len(), y.len(), "{what}: lengths differ");
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        assert_eq!(p.to_bits(), q.to_bits(), "{what}: element {i} differs: {p} vs {q}");
    }
}

/// Scalar probe loss sum(f(inputs) * r) for a fixed random r of the output's shape.
fn probe(f: &dyn Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], r: &Tensor) -> Result<Tensor> {
    sum(&mul(&f(inputs)?, r)?)
}

/// Checks the tape gradient of every element of every (f64) input of `f` against central
/// finite differences of a random projection of its output: |analytic - numeric| <= atol +
/// rtol*|numeric|. Inputs are perturbed one element at a time, so keep them small.
pub fn check_grads(name: &str, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let (h, atol, rtol) = (1e-6, 1e-7, 1e-5);
    let out_shape = f(inputs).unwrap().dims().to_vec();
    let r = randn(&out_shape, 4242);
    let tape = Tape::new();
    let watched: Vec<Tensor> = inputs.iter().map(|t| tape.watch(t)).collect();
    let loss = probe(&f, &watched, &r).unwrap();
    let grads = tape.backward(&loss).unwrap();
    for (i, x) in inputs.iter().enumerate() {
        let g = grads.get(x).unwrap_or_else(|| panic!("{name}: no gradient for input {i}"));
        assert_eq!(g.dims(), x.dims(), "{name}: gradient {i} has the wrong shape");
        let analytic = g.to_vec_f64().unwrap();
        let base = x.to_vec_f64().unwrap();
        let mut numeric = vec![0.0; base.len()];
        for j in 0..base.len() {
            let eval = |delta: f64| {
                let mut v = base.clone();
                v[j] += delta;
                let mut ins = inputs.to_vec();
                ins[i] = Tensor::from_vec(v, x.dims()).unwrap();
                probe(&f, &ins, &r).unwrap().to_scalar().unwrap()
            };
            numeric[j] = (eval(h) - eval(-h)) / (2.0 * h);
        }
        assert_close(&format!("{name}: d/d input {i}"), &analytic, &numeric, atol, rtol);
    }
}

/// Runs `f` on watched copies of `inputs`; returns (output, gradients of sum(out * r) for each
/// input, r) with r random of the output's shape and dtype.
pub fn value_and_grads(
    inputs: &[Tensor],
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) -> (Tensor, Vec<Tensor>, Tensor) {
    let tape = Tape::new();
    let w: Vec<Tensor> = inputs.iter().map(|t| tape.watch(t)).collect();
    let out = f(&w).unwrap();
    let r = Tensor::randn(out.dims(), 1.0, out.dtype(), &mut Rng::new(777));
    let loss = sum(&mul(&out, &r).unwrap()).unwrap();
    let grads = tape.backward(&loss).unwrap();
    let gs = inputs.iter().map(|t| grads.get(t).expect("a gradient for every input").clone()).collect();
    (out.detach(), gs, r)
}
