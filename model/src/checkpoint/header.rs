//! The safetensors header, both ways. Reading: the safetensors crate validates it (header length,
//! JSON, offsets contiguous and matching shape x dtype, file fully covered) through a memory map,
//! and each of its errors becomes a ModelError naming the file and, where it can be found, the
//! tensor. Writing: the header for tensors whose data will be streamed after it.
//!
//! File layout: [u64 LE header length n][n bytes of JSON, space-padded][tensor data ...].

use super::dtype::SafeDType;
use crate::error::{ModelError, Result};
use safetensors::tensor::{Metadata, TensorInfo as StInfo};
use safetensors::{SafeTensorError, SafeTensors};
use serde_json::Value;
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

/// One tensor as a header describes it, with its absolute byte range in the file.
pub(super) struct HeaderTensor {
    pub name: String,
    pub dtype: SafeDType,
    pub shape: Vec<usize>,
    pub start: u64,
    pub len: u64,
}

pub(super) struct ShardHeader {
    pub file: File,
    /// In data order.
    pub tensors: Vec<HeaderTensor>,
}

/// Opens a safetensors file and validates its header; refuses dtypes other than f32/bf16/f16.
pub(super) fn open_safetensors(path: &Path) -> Result<ShardHeader> {
    let file = File::open(path).map_err(|e| ModelError::io(path, "cannot open", e))?;
    let file_len = file.metadata().map_err(|e| ModelError::io(path, "cannot stat", e))?.len();
    if file_len < 8 {
        let msg = format!("truncated: {file_len} bytes, fewer than the 8-byte header length");
        return Err(ModelError::file(path, msg));
    }
    // SAFETY: the map is read-only and lives only in this function. If another process
    // truncates the file meanwhile, reading the header could fault; that is the usual caveat of
    // mapping files, and the header is a few KB read once.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, "cannot map", e))?;
    let (n, metadata) = SafeTensors::read_metadata(&map).map_err(|e| header_error(path, &map, e))?;
    let data_start = 8 + n as u64;
    let mut tensors = Vec::new();
    for name in metadata.offset_keys() {
        let Some(info) = metadata.info(&name) else { continue };
        let Some(dtype) = SafeDType::from_safetensors(info.dtype) else {
            let msg = format!("dtype {:?} is not supported (F32, BF16 or F16)", info.dtype);
            return Err(ModelError::tensor(path, &name, msg));
        };
        let (s, e) = info.data_offsets;
        tensors.push(HeaderTensor {
            name,
            dtype,
            shape: info.shape.clone(),
            start: data_start + s as u64,
            len: (e - s) as u64,
        });
    }
    Ok(ShardHeader { file, tensors })
}

/// Turns a safetensors error into one naming the file, finding the culprit tensor where the
/// crate does not name it.
fn header_error(path: &Path, buf: &[u8], e: SafeTensorError) -> ModelError {
    let claimed = buf.get(..8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
    let claimed = claimed.unwrap_or(0);
    let data_len = (buf.len() as u64).saturating_sub(8).saturating_sub(claimed);
    let culprit = || diagnose(buf, claimed, data_len);
    let file_msg = |msg: String| ModelError::file(path, msg);
    match e {
        SafeTensorError::HeaderTooSmall => file_msg("truncated: shorter than the 8-byte header length".into()),
        SafeTensorError::HeaderTooLarge => {
            file_msg(format!("header length {claimed} is over the 100 MB limit: not a safetensors file"))
        }
        SafeTensorError::InvalidHeaderLength => file_msg(format!(
            "header length {claimed} runs past the end of the file ({} bytes): truncated or not a safetensors file",
            buf.len()
        )),
        SafeTensorError::InvalidHeader(e) => file_msg(format!("header is not UTF-8: {e}")),
        SafeTensorError::InvalidHeaderDeserialization(e) => file_msg(format!("header is not valid safetensors JSON: {e}")),
        SafeTensorError::InvalidOffset(name) => ModelError::tensor(
            path,
            &name,
            "data_offsets overlap or leave a gap (each tensor must start where the previous one ends)",
        ),
        SafeTensorError::TensorInvalidInfo | SafeTensorError::ValidationOverflow | SafeTensorError::MisalignedSlice => {
            match culprit() {
                Some((name, msg)) => ModelError::tensor(path, &name, msg),
                None => file_msg(format!("invalid tensor entry in the header: {e}")),
            }
        }
        SafeTensorError::MetadataIncompleteBuffer => match culprit() {
            Some((name, msg)) => ModelError::tensor(path, &name, msg),
            None => file_msg(format!(
                "the header's tensors do not cover the {data_len} data bytes exactly: truncated file or offsets out of range"
            )),
        },
        e => file_msg(format!("invalid safetensors file: {e}")),
    }
}

/// Re-reads the header JSON to name the first tensor whose offsets disagree with its shape and
/// dtype or run past the data. Only used to word an error, so anything odd gives None.
fn diagnose(buf: &[u8], header_len: u64, data_len: u64) -> Option<(String, String)> {
    let end = 8usize.checked_add(usize::try_from(header_len).ok()?)?;
    let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(buf.get(8..end)?) else { return None };
    for (name, t) in header.iter().filter(|(n, _)| n.as_str() != "__metadata__") {
        let width = match t.get("dtype")?.as_str()? {
            "F64" | "I64" | "U64" | "C64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            "U8" | "I8" | "BOOL" => 1,
            _ => continue,
        };
        let shape: Option<Vec<u64>> = t.get("shape")?.as_array()?.iter().map(Value::as_u64).collect();
        let elems = shape?.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let offsets = t.get("data_offsets")?.as_array()?;
        let (s, e) = (offsets.first()?.as_u64()?, offsets.get(1)?.as_u64()?);
        match elems.and_then(|n| n.checked_mul(width)) {
            None => return Some((name.clone(), "shape overflows".into())),
            Some(size) if e < s || e - s != size => {
                let msg = format!(
                    "data_offsets [{s}, {e}] hold {} bytes, but shape x dtype needs {size}",
                    e.wrapping_sub(s)
                );
                return Some((name.clone(), msg));
            }
            _ => {}
        }
        if e > data_len {
            let msg = format!(
                "data_offsets [{s}, {e}] run past the end of the data ({data_len} bytes): truncated file?"
            );
            return Some((name.clone(), msg));
        }
    }
    None
}

/// The header for `tensors` (name, dtype, shape), laid out back to back in this order, with
/// transformers' `{"format": "pt"}` metadata. Returns the bytes to write before the data
/// (length prefix included, padded to 8 bytes as the reference writer does).
pub(super) fn build_header(path: &Path, tensors: &[(&str, SafeDType, &[usize])]) -> Result<Vec<u8>> {
    let mut infos = Vec::with_capacity(tensors.len());
    let mut offset = 0usize;
    for &(name, dtype, shape) in tensors {
        let bytes = shape
            .iter()
            .try_fold(dtype.size_in_bytes(), |a, &d| a.checked_mul(d))
            .ok_or_else(|| ModelError::tensor(path, name, format!("shape {shape:?} is too large")))?;
        let info = StInfo {
            dtype: dtype.to_safetensors(),
            shape: shape.to_vec(),
            data_offsets: (offset, offset + bytes),
        };
        infos.push((name.to_string(), info));
        offset += bytes;
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let metadata = Metadata::new(Some(meta), infos)
        .map_err(|e| ModelError::file(path, format!("cannot build the header: {e}")))?;
    let mut json = serde_json::to_vec(&metadata)
        .map_err(|e| ModelError::file(path, format!("cannot write the header: {e}")))?;
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}
