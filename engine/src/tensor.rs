//! The tensor: contiguous, row-major, shape known at run time, cheap to clone (an `Arc`).
//! A tensor carries the tape it was recorded on, if any; `detach` drops it. Its id keys
//! gradients, so views that share an id (a watched parameter, a detached copy) share gradients.

use crate::cuda::{CudaData, CudaStorage, Gpu};
use crate::dtype::{DType, Element, Float};
use crate::error::{Error, Result};
use crate::storage::{CpuStorage, Held, Storage};
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
    storage: Arc<Held>,
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
        Tensor(Arc::new(Inner { id: TensorId::fresh(), shape, storage: Arc::new(Held::new(storage)), tape }))
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

    /// The CPU storage; a CUDA tensor is an error naming `op` (an op with no CUDA kernel).
    pub fn cpu(&self, op: &'static str) -> Result<&CpuStorage> {
        match self.storage() {
            Storage::Cpu(c) => Ok(c),
            Storage::Cuda(_) => Err(Error::WrongDevice {
                op,
                device: self.device(),
                msg: "this op runs on the CPU only; move the tensor with to_device(Device::Cpu)".into(),
            }),
        }
    }

    /// The CUDA storage; a CPU tensor is an error naming `op`.
    pub fn cuda(&self, op: &'static str) -> Result<&CudaStorage> {
        match self.storage() {
            Storage::Cuda(c) => Ok(c),
            Storage::Cpu(_) => Err(Error::WrongDevice {
                op,
                device: Device::Cpu,
                msg: "the other inputs are on a GPU; move this one with to_device".into(),
            }),
        }
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self.storage(), Storage::Cuda(_))
    }

    pub(crate) fn from_cuda(storage: CudaStorage, shape: Shape) -> Tensor {
        Self::from_parts(Storage::Cuda(storage), shape, None)
    }

    /// Zeros of `shape` on `device` (allocated there directly, no host copy).
    pub fn zeros_on(shape: impl Into<Shape>, dtype: DType, device: Device) -> Result<Tensor> {
        let shape = shape.into();
        match device {
            Device::Cpu => Ok(Self::zeros(shape, dtype)),
            Device::Cuda(n) => {
                let gpu = Gpu::get(n)?;
                let len = shape.elem_count();
                let data = match dtype {
                    DType::F32 => CudaData::F32(gpu.zeros(len)?),
                    DType::BF16 => CudaData::BF16(gpu.zeros(len)?),
                    DType::I32 => CudaData::I32(gpu.zeros(len)?),
                    DType::U32 => CudaData::U32(gpu.zeros(len)?),
                    DType::F64 => {
                        return Err(Error::DType {
                            op: "zeros_on",
                            got: dtype,
                            expected: "a GPU dtype (not f64)",
                        })
                    }
                };
                Ok(Self::from_cuda(CudaStorage::new(gpu, data), shape))
            }
        }
    }

    /// The elements, if this tensor holds `T` on the CPU.
    pub fn data<T: Element>(&self, op: &'static str) -> Result<&[T]> {
        let c = self.cpu(op)?;
        T::slice(c).ok_or(Error::DType { op, got: c.dtype(), expected: T::DTYPE.name() })
    }

    /// The elements as `T` (a CUDA tensor is copied to the host first).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        match self.storage() {
            Storage::Cpu(_) => Ok(self.data::<T>("to_vec")?.to_vec()),
            Storage::Cuda(c) => {
                let host = c.download()?;
                T::slice(&host).map(|s| s.to_vec()).ok_or(Error::DType {
                    op: "to_vec",
                    got: c.dtype(),
                    expected: T::DTYPE.name(),
                })
            }
        }
    }
    /// Every element as f64 (a CUDA tensor is copied to the host first).
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        match self.storage() {
            Storage::Cpu(c) => Ok(c.to_f64_vec()),
            Storage::Cuda(c) => Ok(c.download()?.to_f64_vec()),
        }
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
        let storage = self.storage_mut()?;
        let Storage::Cpu(c) = storage else {
            return Err(Error::WrongDevice {
                op: "update_in_place",
                device: storage.device(),
                msg: "host closures cannot update device memory; use the CUDA optimizer".into(),
            });
        };
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
    pub fn set_storage(&mut self, storage: impl Into<Storage>) -> Result<()> {
        let storage = storage.into();
        if storage.len() != self.elem_count() {
            return Err(Error::bad_shape("set_storage", self.shape(), "element count differs"));
        }
        let inner = Arc::make_mut(&mut self.0);
        inner.storage = Arc::new(Held::new(storage));
        Ok(())
    }

    /// The CUDA storage for writing in place, keeping the id (the CUDA optimizer's update).
    /// Copies first if the buffer is shared, like `update_in_place`.
    pub fn cuda_mut(&mut self, op: &'static str) -> Result<&mut CudaStorage> {
        match self.storage_mut()? {
            Storage::Cuda(c) => Ok(c),
            Storage::Cpu(_) => {
                Err(Error::WrongDevice { op, device: Device::Cpu, msg: "expected a CUDA tensor".into() })
            }
        }
    }

    /// The storage for writing in place, keeping the id; copied first when shared (copy on
    /// write), so other holders never see it change.
    pub(crate) fn storage_mut(&mut self) -> Result<&mut Storage> {
        let inner = Arc::make_mut(&mut self.0);
        if Arc::get_mut(&mut inner.storage).is_none() {
            inner.storage = Arc::new(Held::new(inner.storage.try_clone()?));
        }
        Ok(Arc::get_mut(&mut inner.storage).expect("a fresh Arc is unique"))
    }

    /// This tensor on `device` (a copy when it moves). On a tape the move is recorded, and its
    /// backward moves the gradient back, so a loss may mix devices (small heads on the CPU).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        crate::ops::transfer::to_device(self, device)
    }

    /// Moves the data to `device` in place, keeping the id (a model's parameters, an
    /// optimizer's moments: what is keyed by id must survive the move). Not recorded.
    pub fn move_to(&mut self, device: Device) -> Result<()> {
        if self.device() != device {
            let storage = self.moved_storage(device)?;
            self.set_storage(storage)?;
        }
        Ok(())
    }

    /// The raw move behind `to_device`: the same data on `device`, not recorded.
    pub(crate) fn moved_storage(&self, device: Device) -> Result<Storage> {
        Ok(match (self.storage(), device) {
            (Storage::Cpu(c), Device::Cuda(n)) => Storage::Cuda(CudaStorage::upload(&Gpu::get(n)?, c)?),
            (Storage::Cuda(c), Device::Cpu) => Storage::Cpu(c.download()?),
            (Storage::Cuda(c), Device::Cuda(n)) if c.gpu.ordinal != n => {
                Storage::Cuda(CudaStorage::upload(&Gpu::get(n)?, &c.download()?)?)
            }
            (s, _) => s.try_clone()?,
        })
    }
}
