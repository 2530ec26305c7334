//! solar-kernels: the CUDA C sources (one `.cu` per op family) and their NVRTC compilation and
//! on-disk cache. Empty until the CUDA backend issue lands: the engine has no CUDA storage yet
//! and `Device::Cuda` answers a clear error, so nothing here pretends to work.
