//! The typed launch boundary. Every kernel the engine launches is declared once, as a `Kernel`
//! (its source module, its `extern "C"` name and its parameter types in order), beside the
//! launcher of its family; a launch passes `Arg`s that `Kernel::check` holds to the declaration
//! (count, pointer or scalar, element type, const or mut) before anything reaches an executor.
//! So a swapped or missing launcher argument is an error naming the kernel and parameter, not
//! a kernel reading garbage, and engine/tests/kernel_decls.rs holds each declaration to the C++
//! signature the emulator compiled, so a declaration cannot drift from its kernel either.

use super::memory::{DeviceElem, DeviceSlice, DeviceSliceMut};
use crate::error::{Error, Result};
use std::marker::PhantomData;

/// Element types of device pointers (and their C spellings in kernels/cu).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    /// float
    F32,
    /// __nv_bfloat16 (bf16 in the kernels)
    BF16,
    /// int
    I32,
    /// unsigned
    U32,
    /// long
    I64,
    /// unsigned long
    U64,
    /// unsigned char
    U8,
}

impl Elem {
    /// The Rust spelling the emulator's signatures use.
    pub fn name(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::BF16 => "bf16",
            Elem::I32 => "i32",
            Elem::U32 => "u32",
            Elem::I64 => "i64",
            Elem::U64 => "u64",
            Elem::U8 => "u8",
        }
    }
}

/// One kernel parameter: a device pointer (const or mutable, to an element type) or a scalar
/// passed by value (C `int` = I32, `long` = I64, `unsigned` = U32, `float` = F32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    ConstPtr(Elem),
    MutPtr(Elem),
    I32,
    I64,
    U32,
    F32,
}

impl Param {
    /// As the emulator spells it: `*const bf16`, `*mut f32`, `i64`, ...
    pub fn render(self) -> String {
        match self {
            Param::ConstPtr(e) => format!("*const {}", e.name()),
            Param::MutPtr(e) => format!("*mut {}", e.name()),
            Param::I32 => "i32".into(),
            Param::I64 => "i64".into(),
            Param::U32 => "u32".into(),
            Param::F32 => "f32".into(),
        }
    }
}

/// One `extern "C"` kernel of kernels/cu/MODULE.cu, declared once in its launcher file.
#[derive(Debug, PartialEq, Eq)]
pub struct Kernel {
    pub module: &'static str,
    pub name: &'static str,
    pub params: &'static [Param],
}

impl Kernel {
    /// The parameter list as the emulator spells it: `*const bf16, *mut f32, i64, i32`.
    pub fn signature(&self) -> String {
        self.params.iter().map(|p| p.render()).collect::<Vec<_>>().join(", ")
    }

    /// Holds `args` to the declaration: the count, then each argument's kind (pointer or
    /// scalar), element type and constness. A pointer to mutable data may go where a const one
    /// is declared; the reverse is refused (the kernel would write through a shared borrow).
    pub fn check(&self, args: &[Arg]) -> Result<()> {
        let bad =
            |msg: String| Error::invalid("cuda launch", format!("{}.cu:{}: {msg}", self.module, self.name));
        if args.len() != self.params.len() {
            return Err(bad(format!(
                "{} arguments for {} parameters ({})",
                args.len(),
                self.params.len(),
                self.signature()
            )));
        }
        for (i, (p, a)) in self.params.iter().zip(args).enumerate() {
            let ok = match (*p, a.value) {
                (Param::ConstPtr(e), Value::Ptr { elem, .. }) => elem == e,
                (Param::MutPtr(e), Value::Ptr { elem, mutable, .. }) => elem == e && mutable,
                (Param::ConstPtr(_) | Param::MutPtr(_), Value::Null) => true,
                (Param::I32, Value::I32(_))
                | (Param::I64, Value::I64(_))
                | (Param::U32, Value::U32(_))
                | (Param::F32, Value::F32(_)) => true,
                _ => false,
            };
            if !ok {
                return Err(bad(format!(
                    "parameter {i} is {}, the argument is {}",
                    p.render(),
                    a.describe()
                )));
            }
        }
        Ok(())
    }
}

/// A launch shape: grid and block extents and dynamic shared memory bytes a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid_dim: (u32, u32, u32),
    pub block_dim: (u32, u32, u32),
    pub shared_mem_bytes: u32,
}

/// A grid-stride launch over `n` elements: 256 threads a block, at most 8 blocks per SM's
/// worth (enough to fill an H100 and keep each thread busy with several elements).
pub fn grid_1d(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 132 * 8) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Value {
    Ptr {
        addr: u64,
        elem: Elem,
        mutable: bool,
    },
    /// A null pointer for an optional pointer parameter (no bf16 copy, no document ids).
    Null,
    I32(i32),
    I64(i64),
    U32(u32),
    F32(f32),
}

/// One launch argument. It borrows the buffer it points into for `'a`, so a launch cannot
/// outlive (or race a host-side move of) what it reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct Arg<'a> {
    pub(crate) value: Value,
    _borrow: PhantomData<&'a ()>,
}

impl<'a> Arg<'a> {
    fn of(value: Value) -> Arg<'a> {
        Arg { value, _borrow: PhantomData }
    }
    /// A buffer the kernel only reads.
    pub fn ptr<T: DeviceElem>(s: &'a impl DeviceSlice<T>) -> Arg<'a> {
        Arg::of(Value::Ptr { addr: s.addr(), elem: T::ELEM, mutable: false })
    }
    /// A buffer the kernel writes.
    pub fn ptr_mut<T: DeviceElem>(s: &'a mut impl DeviceSliceMut<T>) -> Arg<'a> {
        Arg::of(Value::Ptr { addr: s.addr(), elem: T::ELEM, mutable: true })
    }
    /// One buffer as both a kernel's input and its output (x and dx of an in-place backward,
    /// where each element is read before the same thread overwrites it).
    pub fn in_place<T: DeviceElem>(s: &'a mut impl DeviceSliceMut<T>) -> (Arg<'a>, Arg<'a>) {
        let addr = s.addr();
        (
            Arg::of(Value::Ptr { addr, elem: T::ELEM, mutable: false }),
            Arg::of(Value::Ptr { addr, elem: T::ELEM, mutable: true }),
        )
    }
    /// u32 ids or positions read by a kernel as `const int*`: the engine keeps them below
    /// 2^31, where the two are the same bits.
    pub fn u32_as_i32(s: &'a impl DeviceSlice<u32>) -> Arg<'a> {
        Arg::of(Value::Ptr { addr: s.addr(), elem: Elem::I32, mutable: false })
    }
    /// A null pointer for an optional pointer parameter.
    pub fn null() -> Arg<'static> {
        Arg::of(Value::Null)
    }
    pub fn i32(v: i32) -> Arg<'static> {
        Arg::of(Value::I32(v))
    }
    pub fn i64(v: i64) -> Arg<'static> {
        Arg::of(Value::I64(v))
    }
    pub fn u32(v: u32) -> Arg<'static> {
        Arg::of(Value::U32(v))
    }
    pub fn f32(v: f32) -> Arg<'static> {
        Arg::of(Value::F32(v))
    }

    fn describe(&self) -> String {
        match self.value {
            Value::Ptr { elem, mutable, .. } => {
                format!("{} {}", if mutable { "*mut" } else { "*const" }, elem.name())
            }
            Value::Null => "a null pointer".into(),
            Value::I32(_) => "i32".into(),
            Value::I64(_) => "i64".into(),
            Value::U32(_) => "u32".into(),
            Value::F32(_) => "f32".into(),
        }
    }

    /// The argument's bytes as the kernel takes them by value (a device address is 8 bytes),
    /// in an 8-byte slot: cuLaunchKernel and the emulator read `size_of(param)` bytes from
    /// the slot's address, so the value sits in its first bytes in native order.
    pub(crate) fn slot(&self) -> u64 {
        let mut slot = 0u64;
        let bytes: ([u8; 8], usize) = match self.value {
            Value::Ptr { addr, .. } => (addr.to_ne_bytes(), 8),
            Value::Null => (0u64.to_ne_bytes(), 8),
            Value::I64(v) => (v.to_ne_bytes(), 8),
            Value::I32(v) => (pad(v.to_ne_bytes()), 4),
            Value::U32(v) => (pad(v.to_ne_bytes()), 4),
            Value::F32(v) => (pad(v.to_ne_bytes()), 4),
        };
        // SAFETY: copies `bytes.1` <= 8 bytes into the 8-byte slot.
        unsafe { std::ptr::copy_nonoverlapping(bytes.0.as_ptr(), &mut slot as *mut u64 as *mut u8, bytes.1) };
        slot
    }
}

fn pad(b: [u8; 4]) -> [u8; 8] {
    [b[0], b[1], b[2], b[3], 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use Elem as E;
    use Param as P;

    const K: Kernel = Kernel {
        module: "test",
        name: "k",
        params: &[P::ConstPtr(E::BF16), P::MutPtr(E::F32), P::I64, P::F32],
    };

    fn ptr(elem: Elem, mutable: bool) -> Arg<'static> {
        Arg::of(Value::Ptr { addr: 256, elem, mutable })
    }

    #[test]
    fn signature_renders_like_the_emulator() {
        assert_eq!(K.signature(), "*const bf16, *mut f32, i64, f32");
    }

    #[test]
    fn check_names_the_kernel_and_parameter() {
        let good = [ptr(E::BF16, false), ptr(E::F32, true), Arg::i64(3), Arg::f32(1.0)];
        K.check(&good).unwrap();
        let mut_as_const = [ptr(E::BF16, true), ptr(E::F32, true), Arg::i64(3), Arg::f32(1.0)];
        K.check(&mut_as_const).unwrap();
        let cases: [(&[Arg], &str); 4] = [
            (&good[..3], "3 arguments for 4"),
            (
                &[ptr(E::F32, false), ptr(E::F32, true), Arg::i64(3), Arg::f32(1.0)],
                "parameter 0 is *const bf16",
            ),
            (
                &[ptr(E::BF16, false), ptr(E::F32, false), Arg::i64(3), Arg::f32(1.0)],
                "parameter 1 is *mut f32",
            ),
            (&[ptr(E::BF16, false), ptr(E::F32, true), Arg::i32(3), Arg::f32(1.0)], "parameter 2 is i64"),
        ];
        for (args, want) in cases {
            let e = K.check(args).unwrap_err().to_string();
            assert!(e.contains("test.cu:k") && e.contains(want), "{e}");
        }
    }

    #[test]
    fn scalars_sit_in_the_first_bytes_of_their_slot() {
        let s = Arg::i32(-2).slot();
        let b = s.to_ne_bytes();
        assert_eq!(i32::from_ne_bytes([b[0], b[1], b[2], b[3]]), -2);
        assert_eq!(Arg::f32(1.5).slot().to_ne_bytes()[..4], 1.5f32.to_ne_bytes());
        assert_eq!(Arg::i64(-7).slot(), (-7i64) as u64);
    }
}
