//! Launchers of kernels/cu/adamw.cu (the fused AdamW step over f32 master weights and moments,
//! with the bf16 weight written alongside) and the global grad norm's sum of squares (two-stage
//! reduce.cu kernels over every gradient, in the order given).

use super::reduce::sum_squares as reduce_sum_squares;
use super::{grid_1d, launch_err, CudaData, CudaSlice, Gpu, PushKernelArg};
use crate::error::{Error, Result};
use crate::optim::AdamWConfig;
use std::sync::Arc;

/// The step's constants, rounded to f32 exactly as `adamw_update` rounds them (computed in
/// f64 first), so the CUDA step is bitwise the CPU's for f32 gradients.
#[derive(Clone, Copy, Debug)]
pub struct AdamWHyper {
    pub keep: f32,
    pub b1: f32,
    pub b2: f32,
    pub eps: f32,
    pub step_size: f32,
    pub bc2_sqrt: f32,
    /// Multiplies the gradient first (1: none); a grad-norm clip can fold in here.
    pub gscale: f32,
}

impl AdamWHyper {
    /// For learning rate `lr` at 1-based step `t`, decay on or off.
    pub fn new(c: &AdamWConfig, lr: f64, t: u64, decay: bool) -> AdamWHyper {
        let bc1 = 1.0 - c.beta1.powi(t as i32);
        let bc2 = 1.0 - c.beta2.powi(t as i32);
        AdamWHyper {
            keep: (if decay { 1.0 - lr * c.weight_decay } else { 1.0 }) as f32,
            b1: c.beta1 as f32,
            b2: c.beta2 as f32,
            eps: c.eps as f32,
            step_size: (lr / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            gscale: 1.0,
        }
    }
}

/// One AdamW step in place: p (f32 master), m, v (f32) updated with gradient g (f32 or bf16),
/// and when `pb` is given the new weight is also written there as bf16.
pub fn adamw_step(
    gpu: &Gpu,
    p: &mut CudaSlice<f32>,
    m: &mut CudaSlice<f32>,
    v: &mut CudaSlice<f32>,
    g: &CudaData,
    pb: Option<&mut CudaSlice<half::bf16>>,
    h: &AdamWHyper,
) -> Result<()> {
    let op = "cuda adamw";
    let n = p.len();
    let (name, gn) = match g {
        CudaData::F32(s) => ("adamw_step_f32", s.len()),
        CudaData::BF16(s) => ("adamw_step_bf16", s.len()),
        other => {
            let got = match other {
                CudaData::I32(_) => crate::DType::I32,
                _ => crate::DType::U32,
            };
            return Err(Error::DType { op, got, expected: "an f32 or bf16 gradient" });
        }
    };
    if m.len() != n || v.len() != n || gn != n || pb.as_ref().is_some_and(|b| b.len() != n) {
        return Err(Error::invalid(
            op,
            format!("parameter, moments, gradient and copy lengths differ ({n}, {gn})"),
        ));
    }
    if n == 0 {
        return Ok(());
    }
    let f = gpu.func("adamw", name)?;
    let n64 = n as i64;
    let null = 0u64;
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(p).arg(m).arg(v);
    match g {
        CudaData::F32(s) => b.arg(s),
        CudaData::BF16(s) => b.arg(s),
        _ => unreachable!("checked above"),
    };
    match pb {
        Some(pb) => b.arg(pb),
        None => b.arg(&null),
    };
    b.arg(&n64)
        .arg(&h.keep)
        .arg(&h.b1)
        .arg(&h.b2)
        .arg(&h.eps)
        .arg(&h.step_size)
        .arg(&h.bc2_sqrt)
        .arg(&h.gscale);
    // SAFETY: p, m, v, g (and pb) hold n elements each; element i is read and written by one thread.
    unsafe { b.launch(grid_1d(n)) }.map_err(launch_err(op))?;
    Ok(())
}

/// Sum of squares of every gradient together (f32 on the device, one value back).
pub fn grad_sum_squares(gpu: &Arc<Gpu>, grads: &[&CudaData]) -> Result<f64> {
    reduce_sum_squares(gpu, grads)
}
