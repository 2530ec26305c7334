//! Reading tensor data out of an opened checkpoint. Data comes through positioned reads (pread)
//! in fixed-size chunks into a reused buffer rather than through a memory map: pages read that
//! way sit in the kernel's page cache, not in this process's resident set, so streaming a model
//! (upscale, merge) keeps resident memory at one chunk, and loading one at one tensor plus a chunk.

use super::dtype::{decode_bf16, decode_f32, SafeDType};
use super::progress::{ByteCount, OnBytes};
use super::read::{Checkpoint, Entry};
use crate::error::{ModelError, Result};
use crate::names::parameter_shapes;
use solar_engine::{DType, Tensor};
use std::collections::HashMap;
use std::fs::File;

/// Bytes read per call when streaming: large enough for full disk speed, small next to any
/// real tensor. A multiple of every element size, so chunks never split an element.
pub const CHUNK_BYTES: usize = 8 << 20;

impl Checkpoint {
    /// Loads a tensor as an f32 engine tensor, whatever its stored dtype (widening is exact).
    pub fn load(&self, name: &str) -> Result<Tensor> {
        self.load_as(name, DType::F32)
    }

    /// Loads a tensor as f32 or bf16 (f32 and f16 data round to nearest even into bf16).
    pub fn load_as(&self, name: &str, dtype: DType) -> Result<Tensor> {
        let entry = self.entry(name)?;
        let shape = entry.info.shape.clone();
        let src = entry.info.dtype;
        let n = entry.info.elem_count();
        let mut buf = Vec::new();
        match dtype {
            DType::F32 => {
                let mut out: Vec<f32> = Vec::with_capacity(n);
                self.stream_entry(name, entry, &mut buf, |bytes| {
                    decode_f32(src, bytes, &mut out);
                    Ok(())
                })?;
                Ok(Tensor::from_vec(out, shape)?)
            }
            DType::BF16 => {
                let mut out: Vec<half::bf16> = Vec::with_capacity(n);
                self.stream_entry(name, entry, &mut buf, |bytes| {
                    decode_bf16(src, bytes, &mut out);
                    Ok(())
                })?;
                Ok(Tensor::from_vec(out, shape)?)
            }
            other => Err(ModelError::tensor(
                &entry.info.file,
                name,
                format!("cannot load as {} (f32 or bf16)", other.name()),
            )),
        }
    }

    /// Loads every parameter the config names as f32 (what `Llama::new` takes), telling
    /// `on_bytes` the stored bytes read so far out of all of theirs.
    pub fn load_parameters(&self, on_bytes: &OnBytes) -> Result<HashMap<String, Tensor>> {
        let names: Vec<String> = parameter_shapes(self.config()).into_iter().map(|(n, _)| n).collect();
        let total = names.iter().map(|n| self.entry(n).map(|e| e.len)).sum::<Result<u64>>()?;
        let mut count = ByteCount::new(on_bytes, total);
        let mut named = HashMap::with_capacity(names.len());
        for name in names {
            let t = self.load(&name)?;
            count.add(self.entry(&name)?.len);
            named.insert(name, t);
        }
        Ok(named)
    }

    /// Streams a tensor's stored bytes (little-endian, its own dtype) to `f` in chunks of at
    /// most CHUNK_BYTES, through `buf`, which callers reuse across tensors.
    pub fn stream_bytes(
        &self,
        name: &str,
        buf: &mut Vec<u8>,
        f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let entry = self.entry(name)?;
        self.stream_entry(name, entry, buf, f)
    }

    /// A tensor's stored bytes in one buffer (tests and small tensors; prefer `stream_bytes`).
    pub fn read_bytes(&self, name: &str) -> Result<Vec<u8>> {
        let entry = self.entry(name)?;
        let mut out = Vec::with_capacity(entry.len as usize);
        let mut buf = Vec::new();
        self.stream_entry(name, entry, &mut buf, |b| {
            out.extend_from_slice(b);
            Ok(())
        })?;
        Ok(out)
    }

    /// The stored dtype of a tensor, or an error naming it if absent.
    pub fn dtype_of(&self, name: &str) -> Result<SafeDType> {
        Ok(self.entry(name)?.info.dtype)
    }

    fn stream_entry(
        &self,
        name: &str,
        entry: &Entry,
        buf: &mut Vec<u8>,
        mut f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let (path, file) = &self.files[entry.file];
        let mut done = 0u64;
        while done < entry.len {
            let n = (entry.len - done).min(CHUNK_BYTES as u64) as usize;
            buf.resize(n, 0);
            read_exact_at(file, &mut buf[..n], entry.start + done).map_err(|e| {
                let what = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    "file is shorter than its header says (changed since it was opened?)".to_string()
                } else {
                    format!("cannot read: {e}")
                };
                ModelError::tensor(path, name, what)
            })?;
            f(&buf[..n])?;
            done += n as u64;
        }
        Ok(())
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
