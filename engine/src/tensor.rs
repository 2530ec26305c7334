//! The tensor: contiguous, row-major, shape known at run time, cheap to clone (an `Arc`).
//! A tensor carries the tape it was recorded on, if any; `detach` drops it. Its id keys
//! gradients, so views that share an id (a watched parameter, a detached copy) share gradients.

use crate::dtype::{DType, Element, Float};
use crate::error::{Error, Result};
use crate::storage::{CpuStorage, Storage};
use crate::tape::Tape;
use crate::{Device, Rng, Shape};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    pub(crate) fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

#[derive(Clone)]
struct Inner {
    id: TensorId,
    shape: Shape,
    storage: Arc<Storage>,
    tape: Option<Tape>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {}, {})", self.dtype(), self.shape(), self.device())
    }
}

impl Tensor {
    // ---- construction ------------------------------------------------------------------

    pub(crate) fn from_parts(storage: Storage, shape: Shape, tape: Option<Tape>) -> Tensor {
        debug_assert_eq!(storage.len(), shape.elem_count());
        Tensor(Arc::new(Inner { id: TensorId::fresh(), shape, storage: Arc::new(storage), tape }))
    }

    pub(crate) fn from_cpu(storage: CpuStorage, shape: Shape) -> Tensor {
        Self::from_parts(Storage::Cpu(storage), shape, None)
    }

    /// A CPU tensor holding `data` with `shape`.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if data.len() != shape.elem_count() {
            return Err(Error::bad_shape(
                "from_vec",
                &shape,
                format!("{} elements given for {} places", data.len(), shape.elem_count()),
            ));
        }
        Ok(Self::from_cpu(T::into_storage(data), shape))
    }

    pub fn from_slice<T: Element>(data: &[T], shape: impl Into<Shape>) -> Result<Tensor> {
        Self::from_vec(data.to_vec(), shape)
    }

    /// A tensor of `shape` with every element `value`.
    pub fn full(shape: impl Into<Shape>, value: f64, dtype: DType) -> Tensor {
        let shape = shape.into();
        let v = CpuStorage::F64(vec![value; shape.elem_count()]).cast(dtype);
        Self::from_cpu(v, shape)
    }
    pub fn zeros(shape: impl Into<Shape>, dtype: DType) -> Tensor {
        Self::full(shape, 0.0, dtype)
    }
    pub fn ones(shape: impl Into<Shape>, dtype: DType) -> Tensor {
        Self::full(shape, 1.0, dtype)
    }
    pub fn scalar(value: f64, dtype: DType) -> Tensor {
        Self::full(Shape::new(&[]), value, dtype)
    }

    /// Normal(0, std) samples drawn in f64 from `rng`, then cast.
    pub fn randn(shape: impl Into<Shape>, std: f64, dtype: DType, rng: &mut Rng) -> Tensor {
        let shape = shape.into();
        let v: Vec<f64> = (0..shape.elem_count()).map(|_| rng.normal() * std).collect();
        Self::from_cpu(CpuStorage::F64(v).cast(dtype), shape)
    }

    /// Uniform samples in [lo, hi).
    pub fn rand_uniform(shape: impl Into<Shape>, lo: f64, hi: f64, dtype: DType, rng: &mut Rng) -> Tensor {
        let shape = shape.into();
        let v: Vec<f64> = (0..shape.elem_count()).map(|_| lo + (hi - lo) * rng.uniform()).collect();
        Self::from_cpu(CpuStorage::F64(v).cast(dtype), shape)
    }

    // ---- accessors ---------------------------------------------------------------------

    pub fn id(&self) -> TensorId {
        self.0.id
    }
    pub fn shape(&self) -> &Shape {
        &self.0.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.0.shape.dims()
    }
    pub fn rank(&self) -> usize {
        self.0.shape.rank()
    }
    pub fn elem_count(&self) -> usize {
        self.0.shape.elem_count()
    }
    pub fn dtype(&self) -> DType {
        self.0.storage.dtype()
    }
    pub fn device(&self) -> Device {
        self.0.storage.device()
    }
    pub fn storage(&self) -> &Storage {
        &self.0.storage
    }
    pub fn tape(&self) -> Option<&Tape> {
        self.0.tape.as_ref()
    }
    /// True when this tensor is recorded on a tape, so an op using it must have a backward.
    pub fn needs_grad(&self) -> bool {
        self.0.tape.is_some()
    }

    /// The CPU storage (every tensor is on the CPU until the CUDA backend lands; `op` names
    /// the caller in the error a device mismatch will give then).
    pub fn cpu(&self, op: &'static str) -> Result<&CpuStorage> {
        let _ = op;
        match self.storage() {
            Storage::Cpu(c) => Ok(c),
        }
    }

    /// The elements, if this tensor holds `T` on the CPU.
    pub fn data<T: Element>(&self, op: &'static str) -> Result<&[T]> {
        let c = self.cpu(op)?;
        T::slice(c).ok_or(Error::DType { op, got: c.dtype(), expected: T::DTYPE.name() })
    }

    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        Ok(self.data::<T>("to_vec")?.to_vec())
    }
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        Ok(self.cpu("to_vec_f64")?.to_f64_vec())
    }
    /// The value of a one-element tensor.
    pub fn to_scalar(&self) -> Result<f64> {
        if self.elem_count() != 1 {
            return Err(Error::bad_shape("to_scalar", self.shape(), "not a single element"));
        }
        Ok(self.to_vec_f64()?[0])
    }

    // ---- identity and tape -------------------------------------------------------------

    /// The same data and id, not recorded on any tape.
    pub fn detach(&self) -> Tensor {
        if self.0.tape.is_none() {
            return self.clone();
        }
        Tensor(Arc::new(Inner { tape: None, ..(*self.0).clone() }))
    }

    /// The same data and id, recorded on `tape` (see `Tape::watch`).
    pub(crate) fn with_tape(&self, tape: Tape) -> Tensor {
        Tensor(Arc::new(Inner { tape: Some(tape), ..(*self.0).clone() }))
    }

    /// The same data viewed with another shape and a fresh id (used by `reshape`).
    pub(crate) fn view_as(&self, shape: Shape, tape: Option<Tape>) -> Tensor {
        Tensor(Arc::new(Inner { id: TensorId::fresh(), shape, storage: self.0.storage.clone(), tape }))
    }

    /// Mutates the float data in place, keeping the id: the optimizer's parameter update.
    /// Copies first if the data is shared (copy on write), so other holders never see it change.
    pub fn update_in_place<F: Float>(&mut self, f: impl FnOnce(&mut [F])) -> Result<()> {
        let inner = Arc::make_mut(&mut self.0);
        let storage = Arc::make_mut(&mut inner.storage);
        let Storage::Cpu(c) = storage;
        let dtype = c.dtype();
        let data = F::slice_mut(c).ok_or(Error::DType {
            op: "update_in_place",
            got: dtype,
            expected: F::DTYPE.name(),
        })?;
        f(data);
        Ok(())
    }

    /// Replaces the data, keeping id and shape (the optimizer writing a bf16 copy, say).
    pub fn set_storage(&mut self, storage: CpuStorage) -> Result<()> {
        if storage.len() != self.elem_count() {
            return Err(Error::bad_shape("set_storage", self.shape(), "element count differs"));
        }
        let inner = Arc::make_mut(&mut self.0);
        inner.storage = Arc::new(Storage::Cpu(storage));
        Ok(())
    }

    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        device.ensure_available()?;
        Ok(self.clone())
    }
}
