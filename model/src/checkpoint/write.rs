//! Writing an HF checkpoint, streamed and atomic. The caller declares every tensor (name, dtype,
//! shape) up front, so shard boundaries and headers are fixed before any data; then it supplies
//! the data tensor by tensor, in as many pieces as it likes, through a `TensorSink`. Peak memory
//! is whatever the caller holds plus one conversion chunk: never the model.
//!
//! Output: model.safetensors, or `model-0000i-of-0000n.safetensors` plus
//! model.safetensors.index.json when `max_shard_size` splits it (shards fill in order, a new one
//! starting when the next tensor would overflow it, as transformers does); config.json with
//! torch_dtype set; tokenizer and generation files copied through.

use super::atomic::{copy_through, write_synced, StagingDir};
use super::dtype::{convert_bytes, encode_bf16, encode_f32, SafeDType};
use super::header::build_header;
use super::progress::{ByteCount, OnBytes};
use super::read::{CONFIG_FILE, INDEX_FILE, SINGLE_FILE};
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::output::fs_step;
use serde_json::{json, Value};
use solar_engine::{DType, Tensor};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Elements converted per piece when a tensor is written from memory: bounds the scratch buffer.
const CONVERT_ELEMS: usize = 1 << 20;

#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Output dtype for every tensor; None keeps each tensor's own dtype.
    pub dtype: Option<SafeDType>,
    /// Largest shard in bytes; None writes a single model.safetensors.
    pub max_shard_size: Option<u64>,
    /// Replace an existing output folder (atomically) instead of refusing.
    pub overwrite: bool,
    /// Told the bytes of tensor data written so far (in the output dtype) and the total.
    pub on_bytes: OnBytes,
}

/// A tensor to be written: its name, the dtype its data will come in, and its shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedTensor {
    pub name: String,
    pub dtype: SafeDType,
    pub shape: Vec<usize>,
}

#[derive(Clone, Debug)]
pub struct WriteReport {
    pub dir: PathBuf,
    /// The safetensors files written, in order.
    pub files: Vec<String>,
    /// The tokenizer and generation files copied through.
    pub copied: Vec<String>,
    pub tensors: usize,
    /// Bytes of tensor data (the index's total_size).
    pub total_size: u64,
    /// The torch_dtype written to config.json.
    pub dtype: SafeDType,
}

/// Where the data of one tensor goes. Accepts bytes in any supported dtype or engine tensors,
/// converting to the output dtype, and refuses more or fewer elements than the shape holds.
pub struct TensorSink<'a> {
    out: &'a mut BufWriter<File>,
    path: &'a Path,
    name: &'a str,
    shape: &'a [usize],
    dst: SafeDType,
    remaining: usize,
    scratch: &'a mut Vec<u8>,
    count: &'a mut ByteCount,
}

impl TensorSink<'_> {
    pub fn name(&self) -> &str {
        self.name
    }
    pub fn shape(&self) -> &[usize] {
        self.shape
    }
    /// The dtype written to the file.
    pub fn dtype(&self) -> SafeDType {
        self.dst
    }

    /// Appends little-endian `src` values; a piece must hold whole elements.
    pub fn write_bytes(&mut self, src: SafeDType, bytes: &[u8]) -> Result<()> {
        let width = src.size_in_bytes();
        if !bytes.chunks_exact(width).remainder().is_empty() {
            let msg = format!("a piece of {} bytes is not a whole number of {src} elements", bytes.len());
            return Err(self.error(msg));
        }
        self.take(bytes.len() / width)?;
        if src == self.dst {
            return self.put(bytes);
        }
        let mut scratch = std::mem::take(self.scratch);
        scratch.clear();
        convert_bytes(src, bytes, self.dst, &mut scratch);
        let written = self.put(&scratch);
        *self.scratch = scratch;
        written
    }

    pub fn write_f32(&mut self, data: &[f32]) -> Result<()> {
        self.take(data.len())?;
        for piece in data.chunks(CONVERT_ELEMS) {
            let mut scratch = std::mem::take(self.scratch);
            scratch.clear();
            encode_f32(piece, self.dst, &mut scratch);
            let written = self.put(&scratch);
            *self.scratch = scratch;
            written?;
        }
        Ok(())
    }

    pub fn write_bf16(&mut self, data: &[half::bf16]) -> Result<()> {
        self.take(data.len())?;
        for piece in data.chunks(CONVERT_ELEMS) {
            let mut scratch = std::mem::take(self.scratch);
            scratch.clear();
            encode_bf16(piece, self.dst, &mut scratch);
            let written = self.put(&scratch);
            *self.scratch = scratch;
            written?;
        }
        Ok(())
    }

    /// Writes a whole engine tensor (f32 or bf16) of the planned shape; a GPU tensor is copied
    /// to the host first, one tensor at a time.
    pub fn write_tensor(&mut self, t: &Tensor) -> Result<()> {
        if t.dims() != self.shape {
            return Err(self.error(format!("tensor has shape {:?}, planned {:?}", t.dims(), self.shape)));
        }
        if t.is_cuda() {
            return self.write_tensor(&t.to_device(solar_engine::Device::Cpu)?);
        }
        match t.dtype() {
            DType::F32 => self.write_f32(t.data::<f32>("save")?),
            DType::BF16 => self.write_bf16(t.data::<half::bf16>("save")?),
            other => Err(self.error(format!("dtype {} cannot be saved (f32 or bf16)", other.name()))),
        }
    }

    /// Writes bytes of the output dtype to the file and counts them.
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(|e| self.io_error(e))?;
        self.count.add(bytes.len() as u64);
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<()> {
        if n > self.remaining {
            let total: usize = self.shape.iter().product();
            return Err(self.error(format!("given more than the {total} elements of shape {:?}", self.shape)));
        }
        self.remaining -= n;
        Ok(())
    }
    fn error(&self, msg: String) -> ModelError {
        ModelError::tensor(self.path, self.name, msg)
    }
    fn io_error(&self, e: std::io::Error) -> ModelError {
        ModelError::tensor(self.path, self.name, format!("cannot write: {e}"))
    }
}

/// Writes a checkpoint to `out_dir`. `fill(i, sink)` supplies the data of `tensors[i]`, called
/// once per tensor in order. config.json is `config` with torch_dtype set to the saved dtype;
/// COPY_THROUGH files come from `copy_from` when given. On any error nothing is left behind.
pub fn write_checkpoint(
    out_dir: &Path,
    config: &LlamaConfig,
    tensors: &[PlannedTensor],
    opts: &WriteOptions,
    copy_from: Option<&Path>,
    fill: impl FnMut(usize, &mut TensorSink<'_>) -> Result<()>,
) -> Result<WriteReport> {
    // The plan is checked before anything is created.
    plan_sizes(out_dir, tensors, opts)?;
    let staging = StagingDir::create(out_dir, opts.overwrite)?;
    let report = write_checkpoint_into(staging.path(), out_dir, config, tensors, opts, copy_from, fill)?;
    staging.commit()?;
    Ok(report)
}

/// Bytes of each planned tensor in the output dtype; refuses duplicates and overflow.
fn plan_sizes(out_dir: &Path, tensors: &[PlannedTensor], opts: &WriteOptions) -> Result<Vec<u64>> {
    let mut sizes = Vec::with_capacity(tensors.len());
    let mut seen = HashSet::new();
    for t in tensors {
        if !seen.insert(t.name.as_str()) {
            return Err(ModelError::tensor(out_dir, &t.name, "planned twice"));
        }
        let width = opts.dtype.unwrap_or(t.dtype).size_in_bytes() as u64;
        let bytes = t.shape.iter().try_fold(width, |a, &d| a.checked_mul(d as u64));
        sizes.push(
            bytes.ok_or_else(|| {
                ModelError::tensor(out_dir, &t.name, format!("shape {:?} overflows", t.shape))
            })?,
        );
    }
    if opts.max_shard_size == Some(0) {
        return Err(ModelError::file(out_dir, "max shard size must be positive"));
    }
    Ok(sizes)
}

/// Writes the checkpoint's files into `dir`, an existing folder whose staging and commit the
/// caller owns (the trainer builds its final folder this way); errors name the files as they
/// will be known in `shown`, the final folder.
pub fn write_checkpoint_into(
    dir: &Path,
    shown: &Path,
    config: &LlamaConfig,
    tensors: &[PlannedTensor],
    opts: &WriteOptions,
    copy_from: Option<&Path>,
    mut fill: impl FnMut(usize, &mut TensorSink<'_>) -> Result<()>,
) -> Result<WriteReport> {
    let out_dtype = |t: &PlannedTensor| opts.dtype.unwrap_or(t.dtype);
    let sizes = plan_sizes(shown, tensors, opts)?;
    let shards = assign_shards(&sizes, opts.max_shard_size);
    let file_names: Vec<String> = match shards.len() {
        0 | 1 => vec![SINGLE_FILE.to_string()],
        n => (1..=n).map(|i| format!("model-{i:05}-of-{n:05}.safetensors")).collect(),
    };

    let mut scratch = Vec::new();
    let mut weight_map = BTreeMap::new();
    let mut count = ByteCount::new(&opts.on_bytes, sizes.iter().sum());
    for (shard, file_name) in shards.iter().zip(&file_names) {
        // Errors name the file as the user will know it, not its temporary home.
        let path = shown.join(file_name);
        let header: Vec<(&str, SafeDType, &[usize])> = shard
            .iter()
            .map(|&i| (tensors[i].name.as_str(), out_dtype(&tensors[i]), tensors[i].shape.as_slice()))
            .collect();
        let header = build_header(&path, &header)?;
        fs_step("create file", &path);
        let file =
            File::create(dir.join(file_name)).map_err(|e| ModelError::io(&path, "cannot create", e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&header).map_err(|e| ModelError::io(&path, "cannot write", e))?;
        for &i in shard {
            let t = &tensors[i];
            let mut sink = TensorSink {
                out: &mut out,
                path: &path,
                name: &t.name,
                shape: &t.shape,
                dst: out_dtype(t),
                remaining: t.shape.iter().product(),
                scratch: &mut scratch,
                count: &mut count,
            };
            fill(i, &mut sink)?;
            if sink.remaining != 0 {
                let given = t.shape.iter().product::<usize>() - sink.remaining;
                return Err(sink.error(format!(
                    "given {given} of the {} elements of shape {:?}",
                    given + sink.remaining,
                    t.shape
                )));
            }
            weight_map.insert(t.name.clone(), json!(file_name));
        }
        let file = out.into_inner().map_err(|e| ModelError::io(&path, "cannot write", e.into_error()))?;
        fs_step("sync file", &path);
        file.sync_all().map_err(|e| ModelError::io(&path, "cannot sync", e))?;
    }

    let total_size: u64 = sizes.iter().sum();
    if file_names.len() > 1 {
        let total_parameters: u64 = tensors.iter().map(|t| t.shape.iter().product::<usize>() as u64).sum();
        let metadata = json!({ "total_size": total_size, "total_parameters": total_parameters });
        let index = json!({ "metadata": metadata, "weight_map": weight_map });
        write_json(&dir.join(INDEX_FILE), &index)?;
    }
    let dtype = dominant_dtype(tensors, &sizes, opts.dtype);
    write_json(&dir.join(CONFIG_FILE), &config_json(config, dtype))?;
    let copied = match copy_from {
        Some(from) => copy_through(from, dir)?,
        None => Vec::new(),
    };
    Ok(WriteReport {
        dir: shown.to_path_buf(),
        files: file_names,
        copied,
        tensors: tensors.len(),
        total_size,
        dtype,
    })
}

/// Saves an in-memory model (f32 or bf16 engine tensors) with `write_checkpoint`.
pub fn save_model(
    out_dir: &Path,
    config: &LlamaConfig,
    tensors: &[(String, Tensor)],
    opts: &WriteOptions,
    copy_from: Option<&Path>,
) -> Result<WriteReport> {
    let plan = plan_tensors(out_dir, tensors)?;
    write_checkpoint(out_dir, config, &plan, opts, copy_from, |i, sink| sink.write_tensor(&tensors[i].1))
}

fn plan_tensors(out_dir: &Path, tensors: &[(String, Tensor)]) -> Result<Vec<PlannedTensor>> {
    let mut plan = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = match t.dtype() {
            DType::F32 => SafeDType::F32,
            DType::BF16 => SafeDType::BF16,
            other => {
                let msg = format!("dtype {} cannot be saved (f32 or bf16)", other.name());
                return Err(ModelError::tensor(out_dir, name, msg));
            }
        };
        plan.push(PlannedTensor { name: name.clone(), dtype, shape: t.dims().to_vec() });
    }
    Ok(plan)
}

/// `save_model` into an existing folder the caller stages (see `write_checkpoint_into`).
pub fn save_model_into(
    dir: &Path,
    shown: &Path,
    config: &LlamaConfig,
    tensors: &[(String, Tensor)],
    opts: &WriteOptions,
    copy_from: Option<&Path>,
) -> Result<WriteReport> {
    let plan = plan_tensors(shown, tensors)?;
    write_checkpoint_into(dir, shown, config, &plan, opts, copy_from, |i, sink| {
        sink.write_tensor(&tensors[i].1)
    })
}

/// Groups tensor indices into shards, in order: a shard closes when the next tensor would push
/// it past `max` (a tensor larger than `max` gets a shard of its own).
pub fn assign_shards(sizes: &[u64], max: Option<u64>) -> Vec<Vec<usize>> {
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut current = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        let full = max.is_some_and(|m| current + size > m);
        if full && shards.last().is_some_and(|s| !s.is_empty()) {
            shards.push(Vec::new());
            current = 0;
        }
        if let Some(last) = shards.last_mut() {
            last.push(i);
        }
        current += size;
    }
    shards
}

/// The torch_dtype to record: the requested one, else the dtype holding the most bytes.
fn dominant_dtype(tensors: &[PlannedTensor], sizes: &[u64], requested: Option<SafeDType>) -> SafeDType {
    if let Some(d) = requested {
        return d;
    }
    let mut bytes = [(SafeDType::F32, 0u64), (SafeDType::BF16, 0), (SafeDType::F16, 0)];
    for (t, &size) in tensors.iter().zip(sizes) {
        if let Some(slot) = bytes.iter_mut().find(|(d, _)| *d == t.dtype) {
            slot.1 += size;
        }
    }
    // Strictly greater, so ties (and an empty model) keep the first: f32.
    let mut best = bytes[0];
    for slot in &bytes[1..] {
        if slot.1 > best.1 {
            best = *slot;
        }
    }
    best.0
}

/// config.json for the saved model: newer transformers read `dtype`, older `torch_dtype`; both
/// are set when the source had both, so they never disagree.
fn config_json(config: &LlamaConfig, dtype: SafeDType) -> Value {
    let mut value = config.to_json();
    if let Value::Object(obj) = &mut value {
        obj.insert("torch_dtype".into(), json!(dtype.torch_name()));
        if obj.contains_key("dtype") {
            obj.insert("dtype".into(), json!(dtype.torch_name()));
        }
    }
    value
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| ModelError::file(path, format!("cannot encode: {e}")))?;
    text.push('\n');
    write_synced(path, text.as_bytes())
}
