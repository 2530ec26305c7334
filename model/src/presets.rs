//! Named model shapes for `solar-train init --preset`: tiny ones for tests and the demo, and the
//! real SOLAR 10.7B and Mistral 7B configs (PAPER.md; 10,731,524,096 and 7,241,732,096
//! parameters).

use crate::config::{LlamaConfig, ModelType};
use serde_json::Map;

/// (name, what it is) for every preset, for help texts and errors.
pub const PRESETS: &[(&str, &str)] = &[
    ("tiny", "2 layers, hidden 64, 4 heads (2 kv), vocab 320: tests"),
    ("tiny-mistral", "tiny with Mistral's sliding window (16)"),
    ("small", "8 layers, hidden 128, 4 heads (2 kv), vocab 320: the demo's base"),
    ("mistral-7b", "Mistral 7B v0.1 shape (config only in practice)"),
    ("solar-10.7b", "SOLAR 10.7B shape: Mistral 7B depth up-scaled to 48 layers"),
];

fn base(model_type: ModelType) -> LlamaConfig {
    LlamaConfig {
        model_type,
        vocab_size: 320,
        hidden_size: 64,
        intermediate_size: 176,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 512,
        tie_word_embeddings: false,
        initializer_range: 0.02,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
        sliding_window: None,
        torch_dtype: Some("float32".into()),
        extra: Map::new(),
    }
}

pub fn preset(name: &str) -> Option<LlamaConfig> {
    let cfg = match name {
        "tiny" => base(ModelType::Llama),
        "tiny-mistral" => LlamaConfig { sliding_window: Some(16), ..base(ModelType::Mistral) },
        "small" => LlamaConfig {
            hidden_size: 128,
            intermediate_size: 352,
            num_hidden_layers: 8,
            head_dim: 32,
            ..base(ModelType::Llama)
        },
        "mistral-7b" => LlamaConfig {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 14336,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 8,
            head_dim: 128,
            max_position_embeddings: 32768,
            sliding_window: Some(4096),
            torch_dtype: Some("bfloat16".into()),
            ..base(ModelType::Mistral)
        },
        "solar-10.7b" => LlamaConfig {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 14336,
            num_hidden_layers: 48,
            num_attention_heads: 32,
            num_key_value_heads: 8,
            head_dim: 128,
            max_position_embeddings: 4096,
            torch_dtype: Some("bfloat16".into()),
            ..base(ModelType::Llama)
        },
        _ => return None,
    };
    Some(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_parameter_counts() {
        assert_eq!(preset("solar-10.7b").unwrap().num_parameters(), 10_731_524_096);
        assert_eq!(preset("mistral-7b").unwrap().num_parameters(), 7_241_732_096);
    }

    #[test]
    fn every_preset_round_trips_through_config_json() {
        for (name, _) in PRESETS {
            let cfg = preset(name).unwrap();
            let text = serde_json::to_string(&cfg.to_json()).unwrap();
            let back = LlamaConfig::from_json_str(&text, std::path::Path::new("preset.json")).unwrap();
            assert_eq!(LlamaConfig { extra: Map::new(), ..back }, cfg, "{name}");
        }
    }
}
