//! The engine's own count of the memory it holds: bytes of tensor storage on the host (the
//! `Storage::Cpu` of every live tensor, counted in storage.rs when a tensor takes its storage
//! and when the last holder drops it) and bytes of device buffers (cuda/memory.rs, counted at
//! allocation and free, whichever executor), each with its high-water mark. Scratch vectors
//! inside an op (a logits tile, a gemm's packing) are not tensors and are not counted: the
//! counts say what the model, its gradients, the optimizer and the tape keep.
//! Atomics, so counting costs a few instructions per tensor and any thread may allocate.

use std::sync::atomic::{AtomicU64, Ordering};

/// Current and high-water bytes of one kind of memory.
pub struct Counter {
    current: AtomicU64,
    peak: AtomicU64,
}

impl Counter {
    const fn new() -> Counter {
        Counter { current: AtomicU64::new(0), peak: AtomicU64::new(0) }
    }
    pub(crate) fn alloc(&self, bytes: u64) {
        let now = self.current.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
    pub(crate) fn free(&self, bytes: u64) {
        self.current.fetch_sub(bytes, Ordering::Relaxed);
    }
    pub fn current(&self) -> u64 {
        self.current.load(Ordering::Relaxed)
    }
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
    /// Starts a new high-water mark from what is held now (a run measuring its own peak).
    pub fn reset_peak(&self) {
        self.peak.store(self.current(), Ordering::Relaxed);
    }
}

/// Host tensor storage.
pub static CPU: Counter = Counter::new();
/// Device buffers (every GPU of the process, and the emulator's).
pub static CUDA: Counter = Counter::new();

/// The counter of memory on `device`.
pub fn on(device: crate::Device) -> &'static Counter {
    match device {
        crate::Device::Cpu => &CPU,
        crate::Device::Cuda(_) => &CUDA,
    }
}
