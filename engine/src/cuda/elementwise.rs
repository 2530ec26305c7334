//! Launchers of kernels/cu/elementwise.cu: add/sub/mul (same shape, or the right side repeating
//! over the left's rows), y = x*mul + add, casts, fill and column sums. f32 and bf16; bf16 math
//! runs in f32. Grid-stride launches (`grid_1d`).

use super::launch::{Elem as E, Param as P};
use super::{
    grid_1d, Arg, CudaData, CudaStorage, DeviceBuffer, DeviceElem, DeviceSlice, DeviceSliceMut, Gpu, Kernel,
};
use crate::error::{Error, Result};
use crate::DType;

const fn k(name: &'static str, params: &'static [P]) -> Kernel {
    Kernel { module: "elementwise", name, params }
}
/// a, b, y, n, nb (b repeats every nb elements).
const BIN_F32: &[P] = &[P::ConstPtr(E::F32), P::ConstPtr(E::F32), P::MutPtr(E::F32), P::I64, P::I64];
const BIN_BF16: &[P] = &[P::ConstPtr(E::BF16), P::ConstPtr(E::BF16), P::MutPtr(E::BF16), P::I64, P::I64];
pub const ADD_F32: Kernel = k("add_f32", BIN_F32);
pub const SUB_F32: Kernel = k("sub_f32", BIN_F32);
pub const MUL_F32: Kernel = k("mul_f32", BIN_F32);
pub const ADD_BF16: Kernel = k("add_bf16", BIN_BF16);
pub const SUB_BF16: Kernel = k("sub_bf16", BIN_BF16);
pub const MUL_BF16: Kernel = k("mul_bf16", BIN_BF16);
/// x, y, mul, add, n.
pub const AFFINE_F32: Kernel =
    k("affine_f32", &[P::ConstPtr(E::F32), P::MutPtr(E::F32), P::F32, P::F32, P::I64]);
pub const AFFINE_BF16: Kernel =
    k("affine_bf16", &[P::ConstPtr(E::BF16), P::MutPtr(E::BF16), P::F32, P::F32, P::I64]);
/// x, y, n.
pub const CAST_F32_BF16: Kernel = k("cast_f32_bf16", &[P::ConstPtr(E::F32), P::MutPtr(E::BF16), P::I64]);
pub const CAST_BF16_F32: Kernel = k("cast_bf16_f32", &[P::ConstPtr(E::BF16), P::MutPtr(E::F32), P::I64]);
/// y, v, n.
pub const FILL_F32: Kernel = k("fill_f32", &[P::MutPtr(E::F32), P::F32, P::I64]);
pub const FILL_BF16: Kernel = k("fill_bf16", &[P::MutPtr(E::BF16), P::F32, P::I64]);
/// x [rows, n], y [n], rows, n.
pub const SUM_ROWS_F32: Kernel = k("sum_rows_f32", &[P::ConstPtr(E::F32), P::MutPtr(E::F32), P::I64, P::I64]);
pub const SUM_ROWS_BF16: Kernel =
    k("sum_rows_bf16", &[P::ConstPtr(E::BF16), P::MutPtr(E::BF16), P::I64, P::I64]);
pub const KERNELS: &[&Kernel] = &[
    &ADD_F32,
    &SUB_F32,
    &MUL_F32,
    &ADD_BF16,
    &SUB_BF16,
    &MUL_BF16,
    &AFFINE_F32,
    &AFFINE_BF16,
    &CAST_F32_BF16,
    &CAST_BF16_F32,
    &FILL_F32,
    &FILL_BF16,
    &SUM_ROWS_F32,
    &SUM_ROWS_BF16,
];

/// Which binary map.
#[derive(Clone, Copy, Debug)]
pub enum Binary {
    Add,
    Sub,
    Mul,
}

/// The f32 or bf16 kernel of a pair by `dtype`; anything else is an error.
fn by_dtype(
    op: &'static str,
    dtype: DType,
    f32k: &'static Kernel,
    bf16k: &'static Kernel,
) -> Result<&'static Kernel> {
    match dtype {
        DType::F32 => Ok(f32k),
        DType::BF16 => Ok(bf16k),
        got => Err(Error::DType { op, got, expected: "f32 or bf16 on CUDA" }),
    }
}

/// y[i] = a[i] (op) b[i % b.len()]: `b` is the same size as `a` or repeats over its rows.
pub fn binary(kind: Binary, a: &CudaStorage, b: &CudaStorage) -> Result<CudaStorage> {
    let op = "cuda binary";
    let (n, nb) = (a.len(), b.len());
    // Empty by empty is empty (the kernel then runs no iteration, so never divides by nb).
    if (nb == 0 && n != 0) || (nb != 0 && n % nb != 0) {
        return Err(Error::invalid(op, format!("{nb} elements do not repeat over {n}")));
    }
    let (f, h) = match kind {
        Binary::Add => (&ADD_F32, &ADD_BF16),
        Binary::Sub => (&SUB_F32, &SUB_BF16),
        Binary::Mul => (&MUL_F32, &MUL_BF16),
    };
    let kernel = by_dtype(op, a.dtype(), f, h)?;
    let gpu = &a.gpu;
    let data = match (&a.data, &b.data) {
        (CudaData::F32(x), CudaData::F32(y)) => CudaData::F32(binary_typed(gpu, kernel, x, y)?),
        (CudaData::BF16(x), CudaData::BF16(y)) => CudaData::BF16(binary_typed(gpu, kernel, x, y)?),
        _ => return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() }),
    };
    Ok(CudaStorage::new(gpu.clone(), data))
}

fn binary_typed<T: DeviceElem>(
    gpu: &Gpu,
    kernel: &'static Kernel,
    x: &DeviceBuffer<T>,
    y: &DeviceBuffer<T>,
) -> Result<DeviceBuffer<T>> {
    let (n, nb) = (x.len(), y.len());
    let mut o = gpu.alloc::<T>(n)?;
    let args = [Arg::ptr(x), Arg::ptr(y), Arg::ptr_mut(&mut o), Arg::i64(n as i64), Arg::i64(nb as i64)];
    // SAFETY: x and o hold n elements, y holds nb; the kernel reads x[i], y[i % nb], writes o[i].
    unsafe { gpu.launch("cuda binary", kernel, grid_1d(n), &args) }?;
    Ok(o)
}

/// y = x * mul + add (scale, add_scalar).
pub fn affine(x: &CudaStorage, mul: f32, add: f32) -> Result<CudaStorage> {
    let op = "cuda affine";
    let gpu = &x.gpu;
    let kernel = by_dtype(op, x.dtype(), &AFFINE_F32, &AFFINE_BF16)?;
    let data = match &x.data {
        CudaData::F32(s) => CudaData::F32(affine_typed(gpu, kernel, s, mul, add)?),
        CudaData::BF16(s) => CudaData::BF16(affine_typed(gpu, kernel, s, mul, add)?),
        _ => unreachable!("by_dtype admitted only f32 and bf16"),
    };
    Ok(CudaStorage::new(gpu.clone(), data))
}

fn affine_typed<T: DeviceElem>(
    gpu: &Gpu,
    kernel: &'static Kernel,
    x: &DeviceBuffer<T>,
    mul: f32,
    add: f32,
) -> Result<DeviceBuffer<T>> {
    let n = x.len();
    let mut o = gpu.alloc::<T>(n)?;
    let args = [Arg::ptr(x), Arg::ptr_mut(&mut o), Arg::f32(mul), Arg::f32(add), Arg::i64(n as i64)];
    // SAFETY: x and o hold n elements.
    unsafe { gpu.launch("cuda affine", kernel, grid_1d(n), &args) }?;
    Ok(o)
}

/// `x` converted to `to` (f32 <-> bf16; the same dtype is a device copy).
pub fn cast(x: &CudaStorage, to: DType) -> Result<CudaStorage> {
    let op = "to_dtype";
    let gpu = &x.gpu;
    let n = x.len();
    let data = match (&x.data, to) {
        (_, t) if t == x.dtype() => return x.try_clone(),
        (CudaData::F32(s), DType::BF16) => {
            let mut o = gpu.alloc::<half::bf16>(n)?;
            let args = [Arg::ptr(s), Arg::ptr_mut(&mut o), Arg::i64(n as i64)];
            // SAFETY: s and o hold n elements.
            unsafe { gpu.launch(op, &CAST_F32_BF16, grid_1d(n), &args) }?;
            CudaData::BF16(o)
        }
        (CudaData::BF16(s), DType::F32) => {
            let mut o = gpu.alloc::<f32>(n)?;
            let args = [Arg::ptr(s), Arg::ptr_mut(&mut o), Arg::i64(n as i64)];
            // SAFETY: s and o hold n elements.
            unsafe { gpu.launch(op, &CAST_BF16_F32, grid_1d(n), &args) }?;
            CudaData::F32(o)
        }
        _ => {
            return Err(Error::invalid(
                op,
                format!("no CUDA cast from {:?} to {to:?} (f32 <-> bf16 only)", x.dtype()),
            ))
        }
    };
    Ok(CudaStorage::new(gpu.clone(), data))
}

/// Converts `src` (f32 or bf16) into `dst` of the other type (same types: `Gpu::copy`), element for element (the
/// rounding of `cast`), in the current stream's order: views, so a gradient goes into its
/// place in a reduction bucket and back out without a temporary.
pub fn cast_views<S: DeviceElem, D: DeviceElem>(
    gpu: &Gpu,
    src: &impl DeviceSlice<S>,
    dst: &mut impl DeviceSliceMut<D>,
) -> Result<()> {
    let op = "cast";
    let n = src.len();
    if dst.len() != n {
        return Err(Error::invalid(op, format!("{n} elements into {}", dst.len())));
    }
    let kernel = match (S::ELEM, D::ELEM) {
        (E::F32, E::BF16) => &CAST_F32_BF16,
        (E::BF16, E::F32) => &CAST_BF16_F32,
        (s, d) => return Err(Error::invalid(op, format!("no CUDA cast from {} to {}", s.name(), d.name()))),
    };
    if n == 0 {
        return Ok(());
    }
    let args = [Arg::ptr(src), Arg::ptr_mut(dst), Arg::i64(n as i64)];
    // SAFETY: src and dst hold n elements; the kernel's declared types match S and D (the
    // match above), which `launch` checks again.
    unsafe { gpu.launch(op, kernel, grid_1d(n), &args) }
}

/// Overwrites every element of `x` with `v` (tests poison outputs with NaN this way).
pub fn fill(x: &mut CudaStorage, v: f32) -> Result<()> {
    let op = "cuda fill";
    let gpu = x.gpu.clone();
    let n = x.len();
    let kernel = by_dtype(op, x.dtype(), &FILL_F32, &FILL_BF16)?;
    let y = match &mut x.data {
        CudaData::F32(s) => Arg::ptr_mut(s),
        CudaData::BF16(s) => Arg::ptr_mut(s),
        _ => unreachable!("by_dtype admitted only f32 and bf16"),
    };
    // SAFETY: the buffer holds n elements; the kernel writes each once.
    unsafe { gpu.launch(op, kernel, grid_1d(n), &[y, Arg::f32(v), Arg::i64(n as i64)]) }
}

/// Column sums of `x` [rows, n] -> [n], each summed in row order.
pub fn sum_rows(x: &CudaStorage, rows: usize, n: usize) -> Result<CudaStorage> {
    let op = "cuda sum_rows";
    if x.len() != rows * n {
        return Err(Error::invalid(op, format!("{} elements for [{rows}, {n}]", x.len())));
    }
    let gpu = &x.gpu;
    let kernel = by_dtype(op, x.dtype(), &SUM_ROWS_F32, &SUM_ROWS_BF16)?;
    let data = match &x.data {
        CudaData::F32(s) => CudaData::F32(sum_rows_typed(gpu, kernel, s, rows, n)?),
        CudaData::BF16(s) => CudaData::BF16(sum_rows_typed(gpu, kernel, s, rows, n)?),
        _ => unreachable!("by_dtype admitted only f32 and bf16"),
    };
    Ok(CudaStorage::new(gpu.clone(), data))
}

fn sum_rows_typed<T: DeviceElem>(
    gpu: &Gpu,
    kernel: &'static Kernel,
    x: &DeviceBuffer<T>,
    rows: usize,
    n: usize,
) -> Result<DeviceBuffer<T>> {
    let mut o = gpu.alloc::<T>(n)?;
    let args = [Arg::ptr(x), Arg::ptr_mut(&mut o), Arg::i64(rows as i64), Arg::i64(n as i64)];
    // SAFETY: x holds rows*n elements, o holds n.
    unsafe { gpu.launch("cuda sum_rows", kernel, grid_1d(n), &args) }?;
    Ok(o)
}
