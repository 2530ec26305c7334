//! Where a tensor lives. Dispatch is a `match` on the storage enum; this enum is what users
//! name (`--device cpu`, `cuda:0`).

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Device::Cuda(n)),
                _ => Err(format!("unknown device '{s}' (expected cpu, cuda or cuda:N)")),
            },
        }
    }
}

impl Device {
    /// Ok when tensors can be put on this device; for CUDA the error says what is missing
    /// (driver, device, NVRTC).
    pub fn ensure_available(self) -> crate::Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(n) => crate::cuda::Gpu::get(n).map(|_| ()),
        }
    }

    /// `--device auto`: the first GPU when one is usable, else the CPU with the reason why not.
    pub fn auto() -> (Device, Option<String>) {
        match crate::cuda::Gpu::get(0) {
            Ok(_) => (Device::Cuda(0), None),
            Err(e) => (Device::Cpu, Some(e.to_string())),
        }
    }

    pub fn is_cuda(self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}
