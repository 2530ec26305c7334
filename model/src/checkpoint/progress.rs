//! Byte progress of a checkpoint read or write: a callback told (bytes done, bytes in all) as
//! tensor data streams, so the command line can draw a bar for a 20 GB upscale, merge or load
//! while the library stays silent. It travels in `WriteOptions` (writes) or as an argument
//! (loads), never through a global, and costs nothing when unset.

use std::fmt;
use std::sync::Arc;

/// Called with (bytes of tensor data done, bytes in all); `done` only grows and ends at the
/// total when the whole checkpoint went through.
#[derive(Clone, Default)]
pub struct OnBytes(Option<Arc<dyn Fn(u64, u64) + Send + Sync>>);

impl OnBytes {
    pub fn new(f: impl Fn(u64, u64) + Send + Sync + 'static) -> OnBytes {
        OnBytes(Some(Arc::new(f)))
    }

    /// No callback: progress is not watched.
    pub fn none() -> OnBytes {
        OnBytes(None)
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    pub fn tell(&self, done: u64, total: u64) {
        if let Some(f) = &self.0 {
            f(done, total)
        }
    }
}

impl fmt::Debug for OnBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() { "OnBytes(set)" } else { "OnBytes(none)" })
    }
}

/// Counts bytes against a total and tells the callback at each step.
pub(super) struct ByteCount {
    on: OnBytes,
    done: u64,
    total: u64,
}

impl ByteCount {
    pub(super) fn new(on: &OnBytes, total: u64) -> ByteCount {
        on.tell(0, total);
        let on = on.clone();
        ByteCount { on, done: 0, total }
    }

    pub(super) fn add(&mut self, n: u64) {
        self.done += n;
        self.on.tell(self.done, self.total);
    }
}
