//! Opening an HF checkpoint folder: config.json, then model.safetensors or
//! model.safetensors.index.json and the shards it names. Each file's header is checked by the
//! safetensors crate through a memory map (only the header pages are touched); tensor data is
//! read later with positioned reads (load.rs), so opening a 20 GB model costs a few KB.

use super::dtype::SafeDType;
use super::header::{open_safetensors, ShardHeader};
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::names::{parameter_shapes, LAYER_SUFFIXES};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";
pub const CONFIG_FILE: &str = "config.json";

/// What a checkpoint holds for one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: SafeDType,
    pub shape: Vec<usize>,
    /// The safetensors file holding it.
    pub file: PathBuf,
}

impl TensorInfo {
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn size_in_bytes(&self) -> u64 {
        self.elem_count() as u64 * self.dtype.size_in_bytes() as u64
    }
}

#[derive(Debug)]
pub(super) struct Entry {
    pub info: TensorInfo,
    /// Index into `Checkpoint::files`.
    pub file: usize,
    /// Absolute byte range of the data in that file.
    pub start: u64,
    pub len: u64,
}

/// An opened checkpoint: config, where every tensor lives, and open handles on its files.
#[derive(Debug)]
pub struct Checkpoint {
    pub(super) dir: PathBuf,
    pub(super) config: LlamaConfig,
    /// model.safetensors or the index file: what errors about the set of tensors name.
    pub(super) weights_path: PathBuf,
    pub(super) files: Vec<(PathBuf, File)>,
    pub(super) entries: HashMap<String, Entry>,
    /// HF order where the config knows the name, then the rest in file order.
    pub(super) order: Vec<String>,
}

impl Checkpoint {
    /// Opens `dir`: parses config.json and checks every safetensors header (offsets, sizes,
    /// dtypes). Does not check that the tensors match the config; `validate` does that.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        if !dir.is_dir() {
            return Err(ModelError::file(dir, "not a folder (expected an HF checkpoint folder)"));
        }
        let config = LlamaConfig::from_file(&dir.join(CONFIG_FILE))?;
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        // transformers looks for the single file first; so do we.
        let (weights_path, shards) = if single.is_file() {
            (single.clone(), vec![(single, None)])
        } else if index.is_file() {
            let shards = read_index(&index, dir)?;
            (index, shards)
        } else {
            return Err(ModelError::file(
                &single,
                format!("missing: the folder has neither {SINGLE_FILE} nor {INDEX_FILE}"),
            ));
        };

        let mut files = Vec::new();
        let mut entries = HashMap::new();
        let mut file_order = Vec::new();
        for (path, expected) in shards {
            let ShardHeader { file, tensors } = open_safetensors(&path)?;
            for t in tensors {
                if expected.as_ref().is_some_and(|names| !names.contains(&t.name)) {
                    let msg = format!("is in this shard, but {INDEX_FILE} does not place it here");
                    return Err(ModelError::tensor(&path, &t.name, msg));
                }
                file_order.push(t.name.clone());
                let info = TensorInfo { dtype: t.dtype, shape: t.shape, file: path.clone() };
                entries.insert(t.name, Entry { info, file: files.len(), start: t.start, len: t.len });
            }
            if let Some(name) = expected.iter().flatten().find(|n| !entries.contains_key(*n)) {
                let shard = path.file_name().map(|s| s.to_string_lossy()).unwrap_or_default();
                let msg = format!("the index places it in {shard}, which has no such tensor");
                return Err(ModelError::tensor(&weights_path, name, msg));
            }
            files.push((path, file));
        }

        // The config's layer count sizes the list of expected names: one claiming more layers
        // than the files hold tensors is not believed here (validate refuses it), so a number
        // in a text file cannot make us allocate for billions of names.
        let expected =
            if plausible_layers(&config, entries.len()) { parameter_shapes(&config) } else { vec![] };
        let mut order: Vec<String> =
            expected.into_iter().map(|(n, _)| n).filter(|n| entries.contains_key(n)).collect();
        let known: HashSet<String> = order.iter().cloned().collect();
        order.extend(file_order.into_iter().filter(|n| !known.contains(n)));
        Ok(Checkpoint { dir: dir.to_path_buf(), config, weights_path, files, entries, order })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }
    /// Every tensor name: HF order for the ones the config expects, then the rest.
    pub fn names(&self) -> &[String] {
        &self.order
    }
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.entries.get(name).map(|e| &e.info)
    }
    /// The safetensors files, in the order they were opened.
    pub fn files(&self) -> Vec<&Path> {
        self.files.iter().map(|(p, _)| p.as_path()).collect()
    }
    /// Bytes of tensor data over all files.
    pub fn total_size(&self) -> u64 {
        self.entries.values().map(|e| e.len).sum()
    }

    pub(super) fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries
            .get(name)
            .ok_or_else(|| ModelError::tensor(&self.weights_path, name, "not in the checkpoint"))
    }

    /// Checks the tensors against config.json: each tensor the model needs is present with its
    /// shape, and nothing else is there except rotary `inv_freq` buffers, which older
    /// transformers versions saved and which are recomputed anyway.
    pub fn validate(&self) -> Result<()> {
        if !plausible_layers(&self.config, self.entries.len()) {
            let msg = format!(
                "config.json says {} layers, but the checkpoint holds only {} tensors",
                self.config.num_hidden_layers,
                self.entries.len()
            );
            return Err(ModelError::file(&self.weights_path, msg));
        }
        let expected = parameter_shapes(&self.config);
        for (name, shape) in &expected {
            let Some(entry) = self.entries.get(name) else {
                let msg = format!("missing (config.json expects shape {shape:?})");
                return Err(ModelError::tensor(&self.weights_path, name, msg));
            };
            if &entry.info.shape != shape {
                let msg = format!("shape {:?}, but config.json expects {shape:?}", entry.info.shape);
                return Err(ModelError::tensor(&entry.info.file, name, msg));
            }
        }
        let expected: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        for name in &self.order {
            if expected.contains(name.as_str()) || is_rotary_inv_freq(name) {
                continue;
            }
            let entry = self.entry(name)?;
            let msg = if name == crate::names::LM_HEAD {
                "present, but config.json has tie_word_embeddings = true".to_string()
            } else {
                format!("not a tensor of this model (config.json: {} layers)", self.config.num_hidden_layers)
            };
            return Err(ModelError::tensor(&entry.info.file, name, msg));
        }
        Ok(())
    }
}

/// Whether `tensors` tensors can hold the config's layers (each has LAYER_SUFFIXES of them).
fn plausible_layers(config: &LlamaConfig, tensors: usize) -> bool {
    config.num_hidden_layers.checked_mul(LAYER_SUFFIXES.len()).is_some_and(|n| n <= tensors)
}

/// `model.layers.N.self_attn.rotary_emb.inv_freq`: a buffer, not a parameter.
pub fn is_rotary_inv_freq(name: &str) -> bool {
    name.ends_with(".rotary_emb.inv_freq")
}

/// Reads the index's weight_map: for each shard (in order of first mention), the tensor names
/// it must hold. A shard name must be a plain file name in `dir`.
fn read_index(index: &Path, dir: &Path) -> Result<Vec<(PathBuf, Option<HashSet<String>>)>> {
    let text = std::fs::read_to_string(index).map_err(|e| ModelError::io(index, "cannot read", e))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| ModelError::file(index, format!("not valid JSON: {e}")))?;
    let Some(map) = value.get("weight_map") else {
        return Err(ModelError::field(index, "weight_map", "missing"));
    };
    let Value::Object(map) = map else {
        return Err(ModelError::field(index, "weight_map", "expected an object of tensor name -> file"));
    };
    let mut shards: Vec<(PathBuf, Option<HashSet<String>>)> = Vec::new();
    let mut by_file: HashMap<String, usize> = HashMap::new();
    for (tensor, file) in map {
        let Some(file) = file.as_str() else {
            return Err(ModelError::tensor(
                index,
                tensor,
                format!("weight_map value {file} is not a file name"),
            ));
        };
        let plain = !file.is_empty() && Path::new(file).file_name().map(|n| n == file).unwrap_or(false);
        if !plain || file == ".." {
            let msg = format!("weight_map names `{file}`, which is not a file name inside the folder");
            return Err(ModelError::tensor(index, tensor, msg));
        }
        let i = match by_file.get(file) {
            Some(&i) => i,
            None => {
                let path = dir.join(file);
                if !path.is_file() {
                    let msg =
                        format!("names shard `{file}` (for tensor `{tensor}`), which is not in the folder");
                    return Err(ModelError::file(index, msg));
                }
                shards.push((path, Some(HashSet::new())));
                by_file.insert(file.to_string(), shards.len() - 1);
                shards.len() - 1
            }
        };
        if let Some(list) = &mut shards[i].1 {
            list.insert(tensor.clone());
        }
    }
    if shards.is_empty() {
        return Err(ModelError::field(index, "weight_map", "is empty"));
    }
    // serde_json's map is sorted by tensor name; HF shard names sort in shard order.
    shards.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(shards)
}
