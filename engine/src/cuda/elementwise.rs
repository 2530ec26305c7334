//! Launchers of kernels/cu/elementwise.cu: add/sub/mul (same shape, or the right side repeating
//! over the left's rows), y = x*mul + add, casts, fill. f32 and bf16; bf16 math runs in f32.

use super::{
    grid_1d, launch_err, CudaData, CudaFunction, CudaSlice, CudaStorage, DeviceRepr, Gpu, PushKernelArg,
};
use crate::error::{Error, Result};
use crate::DType;

/// Which binary map (kernel name prefix).
#[derive(Clone, Copy, Debug)]
pub enum Binary {
    Add,
    Sub,
    Mul,
}

fn suffix(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
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
    let name = match kind {
        Binary::Add => "add",
        Binary::Sub => "sub",
        Binary::Mul => "mul",
    };
    let gpu = &a.gpu;
    let f = gpu.func("elementwise", &format!("{name}_{}", suffix(op, a.dtype())?))?;
    let data = match (&a.data, &b.data) {
        (CudaData::F32(x), CudaData::F32(y)) => CudaData::F32(binary_typed(gpu, &f, x, y)?),
        (CudaData::BF16(x), CudaData::BF16(y)) => CudaData::BF16(binary_typed(gpu, &f, x, y)?),
        _ => return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() }),
    };
    Ok(CudaStorage::new(gpu.clone(), data))
}

fn binary_typed<T: DeviceRepr>(
    gpu: &Gpu,
    f: &CudaFunction,
    x: &CudaSlice<T>,
    y: &CudaSlice<T>,
) -> Result<CudaSlice<T>> {
    let (n, nb) = (x.len(), y.len());
    let mut o = gpu.alloc::<T>(n)?;
    let (n64, nb64) = (n as i64, nb as i64);
    // SAFETY: x and o hold n elements, y holds nb; the kernel reads x[i], y[i % nb], writes o[i].
    unsafe { gpu.stream.launch_builder(f).arg(x).arg(y).arg(&mut o).arg(&n64).arg(&nb64).launch(grid_1d(n)) }
        .map_err(launch_err("cuda binary"))?;
    Ok(o)
}

/// y = x * mul + add (scale, add_scalar).
pub fn affine(x: &CudaStorage, mul: f32, add: f32) -> Result<CudaStorage> {
    let op = "cuda affine";
    let gpu = &x.gpu;
    let f = gpu.func("elementwise", &format!("affine_{}", suffix(op, x.dtype())?))?;
    let data = match &x.data {
        CudaData::F32(s) => CudaData::F32(affine_typed(gpu, &f, s, mul, add)?),
        CudaData::BF16(s) => CudaData::BF16(affine_typed(gpu, &f, s, mul, add)?),
        _ => unreachable!("suffix() admitted only f32 and bf16"),
    };
    Ok(CudaStorage::new(gpu.clone(), data))
}

fn affine_typed<T: DeviceRepr>(
    gpu: &Gpu,
    f: &CudaFunction,
    x: &CudaSlice<T>,
    mul: f32,
    add: f32,
) -> Result<CudaSlice<T>> {
    let n = x.len();
    let mut o = gpu.alloc::<T>(n)?;
    let n64 = n as i64;
    // SAFETY: x and o hold n elements.
    unsafe {
        gpu.stream.launch_builder(f).arg(x).arg(&mut o).arg(&mul).arg(&add).arg(&n64).launch(grid_1d(n))
    }
    .map_err(launch_err("cuda affine"))?;
    Ok(o)
}

/// `x` converted to `to` (f32 <-> bf16; the same dtype is a device copy).
pub fn cast(x: &CudaStorage, to: DType) -> Result<CudaStorage> {
    let op = "to_dtype";
    let gpu = &x.gpu;
    let n = x.len();
    let n64 = n as i64;
    let data = match (&x.data, to) {
        (_, t) if t == x.dtype() => x.data.clone(),
        (CudaData::F32(s), DType::BF16) => {
            let f = gpu.func("elementwise", "cast_f32_bf16")?;
            let mut o = gpu.alloc::<half::bf16>(n)?;
            // SAFETY: s and o hold n elements.
            unsafe { gpu.stream.launch_builder(&f).arg(s).arg(&mut o).arg(&n64).launch(grid_1d(n)) }
                .map_err(launch_err(op))?;
            CudaData::BF16(o)
        }
        (CudaData::BF16(s), DType::F32) => {
            let f = gpu.func("elementwise", "cast_bf16_f32")?;
            let mut o = gpu.alloc::<f32>(n)?;
            // SAFETY: s and o hold n elements.
            unsafe { gpu.stream.launch_builder(&f).arg(s).arg(&mut o).arg(&n64).launch(grid_1d(n)) }
                .map_err(launch_err(op))?;
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

/// Overwrites every element of `x` with `v` (tests poison outputs with NaN this way).
pub fn fill(x: &mut CudaStorage, v: f32) -> Result<()> {
    let op = "cuda fill";
    let gpu = x.gpu.clone();
    let n = x.len();
    let n64 = n as i64;
    let f = gpu.func("elementwise", &format!("fill_{}", suffix(op, x.dtype())?))?;
    let mut b = gpu.stream.launch_builder(&f);
    match &mut x.data {
        CudaData::F32(s) => b.arg(s),
        CudaData::BF16(s) => b.arg(s),
        _ => unreachable!("suffix() admitted only f32 and bf16"),
    };
    // SAFETY: the buffer holds n elements; the kernel writes each once.
    unsafe { b.arg(&v).arg(&n64).launch(grid_1d(n)) }.map_err(launch_err(op))?;
    Ok(())
}

/// Column sums of `x` [rows, n] -> [n], each summed in row order.
pub fn sum_rows(x: &CudaStorage, rows: usize, n: usize) -> Result<CudaStorage> {
    let op = "cuda sum_rows";
    if x.len() != rows * n {
        return Err(Error::invalid(op, format!("{} elements for [{rows}, {n}]", x.len())));
    }
    let gpu = &x.gpu;
    let f = gpu.func("elementwise", &format!("sum_rows_{}", suffix(op, x.dtype())?))?;
    let data = match &x.data {
        CudaData::F32(s) => CudaData::F32(sum_rows_typed(gpu, &f, s, rows, n)?),
        CudaData::BF16(s) => CudaData::BF16(sum_rows_typed(gpu, &f, s, rows, n)?),
        _ => unreachable!("suffix() admitted only f32 and bf16"),
    };
    Ok(CudaStorage::new(gpu.clone(), data))
}

fn sum_rows_typed<T: DeviceRepr>(
    gpu: &Gpu,
    f: &CudaFunction,
    x: &CudaSlice<T>,
    rows: usize,
    n: usize,
) -> Result<CudaSlice<T>> {
    let mut o = gpu.alloc::<T>(n)?;
    let (r64, n64) = (rows as i64, n as i64);
    // SAFETY: x holds rows*n elements, o holds n.
    unsafe { gpu.stream.launch_builder(f).arg(x).arg(&mut o).arg(&r64).arg(&n64).launch(grid_1d(n)) }
        .map_err(launch_err("cuda sum_rows"))?;
    Ok(o)
}
