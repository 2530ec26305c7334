//! Launchers of kernels/cu/adamw.cu: the fused AdamW step over f32 master weights and moments,
//! with the bf16 weight written alongside (the constants come in an `AdamWHyper`, rounded to
//! f32 by the optimizer exactly as its CPU update rounds them).

use super::launch::{Elem as E, Param as P};
use super::{grid_1d, Arg, CudaData, DeviceBuffer, Gpu, Kernel};
use crate::error::{Error, Result};
use crate::kernel_args::AdamWHyper;
use half::bf16;

/// p, m, v (f32, updated in place), g (the gradient), pb (a bf16 copy of p to write, or
/// null), n, keep, b1, b2, eps, step_size, bc2_sqrt, gscale.
pub const ADAMW_STEP_F32: Kernel = Kernel {
    module: "adamw",
    name: "adamw_step_f32",
    params: &[
        P::MutPtr(E::F32),
        P::MutPtr(E::F32),
        P::MutPtr(E::F32),
        P::ConstPtr(E::F32),
        P::MutPtr(E::BF16),
        P::I64,
        P::F32,
        P::F32,
        P::F32,
        P::F32,
        P::F32,
        P::F32,
        P::F32,
    ],
};
pub const ADAMW_STEP_BF16: Kernel = Kernel {
    module: "adamw",
    name: "adamw_step_bf16",
    params: &[
        P::MutPtr(E::F32),
        P::MutPtr(E::F32),
        P::MutPtr(E::F32),
        P::ConstPtr(E::BF16),
        P::MutPtr(E::BF16),
        P::I64,
        P::F32,
        P::F32,
        P::F32,
        P::F32,
        P::F32,
        P::F32,
        P::F32,
    ],
};
pub const KERNELS: &[&Kernel] = &[&ADAMW_STEP_F32, &ADAMW_STEP_BF16];

/// One AdamW step in place: p (f32 master), m, v (f32) updated with gradient g (f32 or bf16),
/// and when `pb` is given the new weight is also written there as bf16. All [n].
pub fn adamw_step(
    gpu: &Gpu,
    p: &mut DeviceBuffer<f32>,
    m: &mut DeviceBuffer<f32>,
    v: &mut DeviceBuffer<f32>,
    g: &CudaData,
    pb: Option<&mut DeviceBuffer<bf16>>,
    h: &AdamWHyper,
) -> Result<()> {
    let op = "cuda adamw";
    let n = p.len();
    let (kernel, garg, gn) = match g {
        CudaData::F32(s) => (&ADAMW_STEP_F32, Arg::ptr(s), s.len()),
        CudaData::BF16(s) => (&ADAMW_STEP_BF16, Arg::ptr(s), s.len()),
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
    let pb = match pb {
        Some(pb) => Arg::ptr_mut(pb),
        None => Arg::null(),
    };
    let args = [
        Arg::ptr_mut(p),
        Arg::ptr_mut(m),
        Arg::ptr_mut(v),
        garg,
        pb,
        Arg::i64(n as i64),
        Arg::f32(h.keep),
        Arg::f32(h.b1),
        Arg::f32(h.b2),
        Arg::f32(h.eps),
        Arg::f32(h.step_size),
        Arg::f32(h.bc2_sqrt),
        Arg::f32(h.gscale),
    ];
    // SAFETY: p, m, v, g (and pb) hold n elements each; element i is read and written by one thread.
    unsafe { gpu.launch(op, kernel, grid_1d(n), &args) }
}
