//! The kernel sources, embedded in the binary so a bundle copied to a device machine needs no
//! source tree. One entry per op family; the engine loads kernels by name from its module.
//! The `.cuh` headers are passed to NVRTC in memory (`#include "common.cuh"` finds them by name).

use crate::nvrtc::Header;

/// One `.cu` file: its name (the module name) and its text.
#[derive(Clone, Copy, Debug)]
pub struct Source {
    pub name: &'static str,
    pub code: &'static str,
    /// An architecture-specific target (e.g. "sm_90a", for wgmma) the source needs: it is
    /// compiled for that target, and exists only on devices of its base architecture.
    pub only: Option<&'static str>,
}

impl Source {
    /// The target to compile this source for on a device of architecture `arch` ("sm_90"), or
    /// None when the source does not exist there.
    pub fn target_for<'a>(&self, arch: &'a str) -> Option<&'a str> {
        match self.only {
            None => Some(arch),
            Some(t) => (t.trim_end_matches('a') == arch).then_some(t),
        }
    }
}

/// The headers any source may include, by the name it includes them with.
pub const HEADERS: &[Header<'static>] = &[
    Header { name: "common.cuh", code: include_str!("../cu/common.cuh") },
    Header { name: "tensor_core.cuh", code: include_str!("../cu/tensor_core.cuh") },
    Header { name: "gemm_store.cuh", code: include_str!("../cu/gemm_store.cuh") },
    Header { name: "attention_tiles.cuh", code: include_str!("../cu/attention_tiles.cuh") },
    Header { name: "attention_fwd.cuh", code: include_str!("../cu/attention_fwd.cuh") },
    Header { name: "attention_bwd.cuh", code: include_str!("../cu/attention_bwd.cuh") },
];

pub const SOURCES: &[Source] = &[
    Source { name: "elementwise", code: include_str!("../cu/elementwise.cu"), only: None },
    Source { name: "matmul", code: include_str!("../cu/matmul.cu"), only: None },
    Source { name: "matmul_sm90", code: include_str!("../cu/matmul_sm90.cu"), only: Some("sm_90a") },
    Source { name: "rmsnorm", code: include_str!("../cu/rmsnorm.cu"), only: None },
    Source { name: "rope", code: include_str!("../cu/rope.cu"), only: None },
    Source { name: "swiglu", code: include_str!("../cu/swiglu.cu"), only: None },
    Source { name: "embedding", code: include_str!("../cu/embedding.cu"), only: None },
    Source { name: "attention", code: include_str!("../cu/attention.cu"), only: None },
    Source { name: "cross_entropy", code: include_str!("../cu/cross_entropy.cu"), only: None },
    Source { name: "adamw", code: include_str!("../cu/adamw.cu"), only: None },
    Source { name: "reduce", code: include_str!("../cu/reduce.cu"), only: None },
];

/// The source named `name`.
pub fn source(name: &str) -> Option<&'static Source> {
    SOURCES.iter().find(|s| s.name == name)
}

/// The texts that decide a source's cubin besides the options: the source and every header
/// (a source that does not include a header just shares its cache invalidation).
pub fn key_parts(source: &Source) -> Vec<&'static [u8]> {
    let mut parts = vec![source.code.as_bytes()];
    for h in HEADERS {
        parts.push(h.name.as_bytes());
        parts.push(h.code.as_bytes());
    }
    parts
}

/// A stable 64-bit FNV-1a hash (the cache key must not change between Rust releases, which
/// std's hasher does not promise).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff; // separates parts so ("ab","c") and ("a","bc") differ
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
