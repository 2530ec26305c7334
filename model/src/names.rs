//! HF tensor names and shapes of a Llama/Mistral checkpoint, in the order transformers lists
//! them (embeddings, then each layer, then the final norm and lm_head). Everything that reads,
//! writes, up-scales or merges checkpoints agrees on names through this file.

use crate::config::LlamaConfig;

pub const EMBED: &str = "model.embed_tokens.weight";
pub const FINAL_NORM: &str = "model.norm.weight";
pub const LM_HEAD: &str = "lm_head.weight";

/// The per-layer tensors, as suffixes after `model.layers.{i}.`, in torch's `named_parameters`
/// order (the order transformers fills shards in).
pub const LAYER_SUFFIXES: [&str; 9] = [
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
];

pub fn layer_name(layer: usize, suffix: &str) -> String {
    format!("model.layers.{layer}.{suffix}")
}

/// Splits `model.layers.{i}.{suffix}` into (i, suffix).
pub fn parse_layer_name(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (i, suffix) = rest.split_once('.')?;
    Some((i.parse().ok()?, suffix))
}

/// Shape of a per-layer tensor by suffix: [out, in] for projections, [C] for norms.
pub fn layer_tensor_shape(cfg: &LlamaConfig, suffix: &str) -> Option<Vec<usize>> {
    let (c, f) = (cfg.hidden_size, cfg.intermediate_size);
    let (q, kv) = (cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
    Some(match suffix {
        "input_layernorm.weight" | "post_attention_layernorm.weight" => vec![c],
        "self_attn.q_proj.weight" => vec![q, c],
        "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => vec![kv, c],
        "self_attn.o_proj.weight" => vec![c, q],
        "mlp.gate_proj.weight" | "mlp.up_proj.weight" => vec![f, c],
        "mlp.down_proj.weight" => vec![c, f],
        _ => return None,
    })
}

/// Every tensor of the model with its shape, in HF order; no lm_head when tied.
pub fn parameter_shapes(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let (c, v) = (cfg.hidden_size, cfg.vocab_size);
    let mut out = vec![(EMBED.to_string(), vec![v, c])];
    for i in 0..cfg.num_hidden_layers {
        for s in LAYER_SUFFIXES {
            out.push((layer_name(i, s), layer_tensor_shape(cfg, s).expect("known suffix")));
        }
    }
    out.push((FINAL_NORM.to_string(), vec![c]));
    if !cfg.tie_word_embeddings {
        out.push((LM_HEAD.to_string(), vec![v, c]));
    }
    out
}

/// Norm weights (no weight decay, initialized at 1).
pub fn is_norm(name: &str) -> bool {
    name.ends_with("layernorm.weight") || name == FINAL_NORM
}
