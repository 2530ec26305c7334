//! Element types. `DType` names them; `Element` moves data in and out of storage for every
//! dtype; `Float` is what CPU kernels are generic over (f32 for work, f64 for gradient checks).

use crate::storage::CpuStorage;
use half::bf16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    BF16,
    I32,
    U32,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::BF16 => 2,
        }
    }
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::BF16)
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::U32 => "u32",
        }
    }
}

/// A type that can be stored in a tensor.
pub trait Element: Copy + Send + Sync + 'static {
    const DTYPE: DType;
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn into_storage(v: Vec<Self>) -> CpuStorage;
    /// Conversion to f64, used by casts and by tests; exact for every stored type but u32 > 2^53.
    fn as_f64(self) -> f64;
    fn of_f64(x: f64) -> Self;
}

/// A float type the CPU computes in.
pub trait Float:
    Element
    + num_traits::Float
    + std::iter::Sum
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + Default
    + std::fmt::Debug
{
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
    /// A constant in this type.
    fn c(x: f64) -> Self {
        <Self as Element>::of_f64(x)
    }
    /// e^x in a form loops vectorize: f32 uses a branch-free polynomial (within 2 ulp, see
    /// `ops::kernels::exp_f32`); f64 keeps std's exp, as gradient checks want it exact.
    #[inline(always)]
    fn fast_exp(self) -> Self {
        self.exp()
    }
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn into_storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F32(v)
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
    fn of_f64(x: f64) -> Self {
        x as f32
    }
}
impl Float for f32 {
    #[inline(always)]
    fn fast_exp(self) -> Self {
        crate::ops::kernels::exp_f32(self)
    }
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
}

impl Element for f64 {
    const DTYPE: DType = DType::F64;
    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn into_storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F64(v)
    }
    fn as_f64(self) -> f64 {
        self
    }
    fn of_f64(x: f64) -> Self {
        x
    }
}
impl Float for f64 {
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::BF16(v) => Some(v),
            _ => None,
        }
    }
    fn into_storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::BF16(v)
    }
    fn as_f64(self) -> f64 {
        self.to_f64()
    }
    fn of_f64(x: f64) -> Self {
        bf16::from_f64(x)
    }
}

impl Element for i32 {
    const DTYPE: DType = DType::I32;
    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::I32(v) => Some(v),
            _ => None,
        }
    }
    fn into_storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::I32(v)
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
    fn of_f64(x: f64) -> Self {
        x as i32
    }
}

impl Element for u32 {
    const DTYPE: DType = DType::U32;
    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::U32(v) => Some(v),
            _ => None,
        }
    }
    fn into_storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::U32(v)
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
    fn of_f64(x: f64) -> Self {
        x as u32
    }
}
