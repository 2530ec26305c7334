//! Where a tensor lives. Dispatch is a `match` on the storage enum; this enum is what users
//! name (`--device cpu`, `cuda:0`).

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
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
    /// The CUDA backend lands with its own issue; until then asking for it is a clear error.
    pub fn ensure_available(self) -> crate::Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(_) => Err(crate::Error::DeviceUnavailable {
                op: "device",
                device: self,
                msg: "this build of Solar has no CUDA backend yet; use --device cpu".into(),
            }),
        }
    }
}
