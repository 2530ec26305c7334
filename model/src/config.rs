//! config.json for LlamaForCausalLM and MistralForCausalLM: parsed, defaulted as transformers
//! does, validated (each failure names the field), and written back with unknown fields kept,
//! so a checkpoint we rewrite still carries everything its author put there.

use crate::error::{ModelError, Result};
use serde_json::{json, Map, Value};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelType {
    Llama,
    Mistral,
}

impl ModelType {
    pub fn name(self) -> &'static str {
        match self {
            ModelType::Llama => "llama",
            ModelType::Mistral => "mistral",
        }
    }
    pub fn architecture(self) -> &'static str {
        match self {
            ModelType::Llama => "LlamaForCausalLM",
            ModelType::Mistral => "MistralForCausalLM",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub model_type: ModelType,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub initializer_range: f64,
    pub bos_token_id: Option<u32>,
    /// One or several end-of-sequence ids (HF allows an int or a list).
    pub eos_token_ids: Vec<u32>,
    pub sliding_window: Option<usize>,
    /// torch_dtype as written (e.g. "bfloat16"), if any.
    pub torch_dtype: Option<String>,
    /// Every field of the file as read, so writing keeps what we do not model.
    pub extra: Map<String, Value>,
}

fn get_usize(path: &Path, obj: &Map<String, Value>, key: &str, default: Option<usize>) -> Result<usize> {
    match obj.get(key) {
        None | Some(Value::Null) => default.ok_or_else(|| ModelError::field(path, key, "missing")),
        Some(v) => v
            .as_u64()
            .map(|x| x as usize)
            .ok_or_else(|| ModelError::field(path, key, format!("expected a non-negative integer, got {v}"))),
    }
}

fn get_f64(path: &Path, obj: &Map<String, Value>, key: &str, default: f64) -> Result<f64> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => {
            v.as_f64().ok_or_else(|| ModelError::field(path, key, format!("expected a number, got {v}")))
        }
    }
}

/// An id field that may be an int, a list of ints or null.
fn get_ids(path: &Path, obj: &Map<String, Value>, key: &str, default: Option<u32>) -> Result<Vec<u32>> {
    let one = |v: &Value| {
        v.as_u64()
            .map(|x| x as u32)
            .ok_or_else(|| ModelError::field(path, key, format!("expected a token id, got {v}")))
    };
    match obj.get(key) {
        None => Ok(default.into_iter().collect()),
        Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => a.iter().map(one).collect(),
        Some(v) => Ok(vec![one(v)?]),
    }
}

/// rope_theta, from `rope_theta` (transformers 4) or `rope_parameters` (transformers 5, where
/// only the default rope type is supported).
fn rope_theta(path: &Path, obj: &Map<String, Value>) -> Result<f64> {
    match obj.get("rope_parameters") {
        None | Some(Value::Null) => get_f64(path, obj, "rope_theta", 10000.0),
        Some(Value::Object(p)) => {
            match p.get("rope_type").and_then(Value::as_str) {
                None | Some("default") => {}
                Some(other) => {
                    return Err(ModelError::field(
                        path,
                        "rope_parameters.rope_type",
                        format!("`{other}` is not supported yet (only default)"),
                    ))
                }
            }
            get_f64(path, p, "rope_theta", 10000.0)
        }
        Some(v) => Err(ModelError::field(path, "rope_parameters", format!("expected an object, got {v}"))),
    }
}

/// The error for a model folder without config.json: what the folder holds, and where a
/// config.json one level down is (the usual slip: the parent of the model, or a run folder).
pub fn missing_config(path: &Path) -> ModelError {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|it| it.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    let below: Vec<String> = names
        .iter()
        .filter(|n| dir.join(n).join("config.json").is_file())
        .map(|n| dir.join(n).display().to_string())
        .collect();
    let held = match names.len() {
        0 => "it is empty".to_string(),
        n if n <= 8 => format!("it holds {}", names.join(", ")),
        n => format!("it holds {} and {} more", names[..8].join(", "), n - 8),
    };
    let hint = if below.is_empty() {
        "a model folder (HF layout) has config.json beside its weights".to_string()
    } else {
        format!("did you mean {}?", below.join(" or "))
    };
    ModelError::File { path: path.to_path_buf(), msg: format!("no config.json here ({held}); {hint}") }
}

impl LlamaConfig {
    pub fn from_file(path: &Path) -> Result<LlamaConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => missing_config(path),
            _ => ModelError::io(path, "cannot read config", e),
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parses config.json text; `path` only names the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<LlamaConfig> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ModelError::file(path, format!("not valid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(ModelError::file(path, "expected a JSON object"));
        };
        let model_type = match obj.get("model_type").and_then(Value::as_str) {
            Some("llama") => ModelType::Llama,
            Some("mistral") => ModelType::Mistral,
            Some(other) => {
                return Err(ModelError::field(
                    path,
                    "model_type",
                    format!("unsupported `{other}` (llama or mistral)"),
                ))
            }
            None => return Err(ModelError::field(path, "model_type", "missing")),
        };
        let hidden_size = get_usize(path, &obj, "hidden_size", None)?;
        let num_attention_heads = get_usize(path, &obj, "num_attention_heads", None)?;
        let head_default = hidden_size.checked_div(num_attention_heads);
        let sliding_window = match obj.get("sliding_window") {
            None | Some(Value::Null) => None,
            Some(_) => Some(get_usize(path, &obj, "sliding_window", None)?),
        };
        let cfg = LlamaConfig {
            model_type,
            vocab_size: get_usize(path, &obj, "vocab_size", None)?,
            hidden_size,
            intermediate_size: get_usize(path, &obj, "intermediate_size", None)?,
            num_hidden_layers: get_usize(path, &obj, "num_hidden_layers", None)?,
            num_attention_heads,
            num_key_value_heads: get_usize(path, &obj, "num_key_value_heads", Some(num_attention_heads))?,
            head_dim: get_usize(path, &obj, "head_dim", head_default)?,
            rope_theta: rope_theta(path, &obj)?,
            rms_norm_eps: get_f64(path, &obj, "rms_norm_eps", 1e-6)?,
            max_position_embeddings: get_usize(path, &obj, "max_position_embeddings", Some(2048))?,
            tie_word_embeddings: match obj.get("tie_word_embeddings") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(v) => {
                    return Err(ModelError::field(
                        path,
                        "tie_word_embeddings",
                        format!("expected a bool, got {v}"),
                    ))
                }
            },
            initializer_range: get_f64(path, &obj, "initializer_range", 0.02)?,
            bos_token_id: get_ids(path, &obj, "bos_token_id", Some(1))?.first().copied(),
            eos_token_ids: get_ids(path, &obj, "eos_token_id", Some(2))?,
            sliding_window,
            torch_dtype: obj
                .get("torch_dtype")
                .or_else(|| obj.get("dtype"))
                .and_then(Value::as_str)
                .map(String::from),
            extra: obj.clone(),
        };
        cfg.validate_fields(path, &obj)?;
        Ok(cfg)
    }

    fn validate_fields(&self, path: &Path, obj: &Map<String, Value>) -> Result<()> {
        let bad = |field: &str, msg: String| Err(ModelError::field(path, field, msg));
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ] {
            if v == 0 {
                return bad(field, "must be positive".into());
            }
        }
        if !obj.contains_key("head_dim") && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(
                "num_attention_heads",
                format!("{} does not divide hidden_size {}", self.num_attention_heads, self.hidden_size),
            );
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return bad(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads {}",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad("head_dim", format!("{} must be even for rotary embeddings", self.head_dim));
        }
        if !(self.rms_norm_eps > 0.0) {
            return bad("rms_norm_eps", format!("{} must be positive", self.rms_norm_eps));
        }
        if !(self.rope_theta > 0.0) {
            return bad("rope_theta", format!("{} must be positive", self.rope_theta));
        }
        if let Some(act) = obj.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return bad("hidden_act", format!("`{act}` is not supported (silu)"));
            }
        }
        match obj.get("rope_scaling") {
            None | Some(Value::Null) => {}
            Some(v) => return bad("rope_scaling", format!("{v} is not supported yet (only null)")),
        }
        for field in ["attention_bias", "mlp_bias"] {
            if obj.get(field) == Some(&Value::Bool(true)) {
                return bad(field, "biases are not supported (Llama and Mistral have none)".into());
            }
        }
        if self.sliding_window == Some(0) {
            return bad("sliding_window", "must be null or at least 1".into());
        }
        self.check_sizes(path)
    }

    /// Parameters in the model (embeddings, layers, final norm, lm_head unless tied). A
    /// validated config cannot overflow here (validate_fields checks the same sums).
    pub fn num_parameters(&self) -> u64 {
        self.checked_num_parameters().unwrap_or(u64::MAX)
    }

    /// Parameters, every product checked: Err names the field whose size overflows 64 bits.
    pub fn checked_num_parameters(&self) -> std::result::Result<u64, (&'static str, String)> {
        let over = |field: &'static str, what: &str| (field, format!("{what} overflows 64 bits"));
        let mul = |a: u64, b: u64, field, what: &str| a.checked_mul(b).ok_or_else(|| over(field, what));
        let (c, f, v) = (self.hidden_size as u64, self.intermediate_size as u64, self.vocab_size as u64);
        let q = mul(
            self.num_attention_heads as u64,
            self.head_dim as u64,
            "head_dim",
            "num_attention_heads x head_dim",
        )?;
        let kv = mul(
            self.num_key_value_heads as u64,
            self.head_dim as u64,
            "head_dim",
            "num_key_value_heads x head_dim",
        )?;
        let attn_what = "hidden_size x num_attention_heads x head_dim";
        let mlp_what = "hidden_size x intermediate_size";
        let layer = [
            mul(2, mul(c, q, "hidden_size", attn_what)?, "hidden_size", attn_what)?,
            mul(2, mul(c, kv, "hidden_size", attn_what)?, "hidden_size", attn_what)?,
            mul(3, mul(c, f, "intermediate_size", mlp_what)?, "intermediate_size", mlp_what)?,
            mul(2, c, "hidden_size", "hidden_size")?,
        ]
        .into_iter()
        .try_fold(0u64, u64::checked_add)
        .ok_or_else(|| over("hidden_size", "one layer's parameters"))?;
        let layers =
            mul(self.num_hidden_layers as u64, layer, "num_hidden_layers", "num_hidden_layers x one layer")?;
        let embed = mul(v, c, "vocab_size", "vocab_size x hidden_size")?;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        [embed, layers, c, head]
            .into_iter()
            .try_fold(0u64, u64::checked_add)
            .ok_or_else(|| over("num_hidden_layers", "the parameter count"))
    }

    /// Sizes later computed from the fields (tensor shapes, parameter counts, and training's
    /// 16 bytes a parameter: f32 weights, gradients and two moments) must fit in 64 bits, so
    /// no later product can overflow into a panic or a wrapped, wrong size.
    fn check_sizes(&self, path: &Path) -> Result<()> {
        let params =
            self.checked_num_parameters().map_err(|(field, msg)| ModelError::field(path, field, msg))?;
        if params.checked_mul(16).is_none() {
            let msg = format!("{params} parameters: their training state overflows 64 bits");
            return Err(ModelError::field(path, "num_hidden_layers", msg));
        }
        Ok(())
    }

    /// The config as config.json: the fields read, with ours written over them.
    pub fn to_json(&self) -> Value {
        let mut obj = self.extra.clone();
        let eos = match self.eos_token_ids.as_slice() {
            [one] => json!(one),
            many => json!(many),
        };
        let fields = json!({
            "architectures": [self.model_type.architecture()],
            "model_type": self.model_type.name(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": self.initializer_range,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "sliding_window": self.sliding_window,
            "attention_bias": false,
            "mlp_bias": false,
        });
        if let Value::Object(f) = fields {
            obj.extend(f);
        }
        // transformers 5 keeps rope_theta inside rope_parameters; 4 keeps it at the top level.
        match obj.get_mut("rope_parameters") {
            Some(Value::Object(p)) => {
                p.insert("rope_theta".into(), json!(self.rope_theta));
            }
            _ => {
                obj.insert("rope_theta".into(), json!(self.rope_theta));
                obj.insert("rope_scaling".into(), Value::Null);
            }
        }
        if let Some(d) = &self.torch_dtype {
            obj.insert("torch_dtype".into(), json!(d));
            if obj.contains_key("dtype") {
                obj.insert("dtype".into(), json!(d));
            }
        }
        Value::Object(obj)
    }
}
