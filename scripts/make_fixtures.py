#!/usr/bin/env python3
"""Writes the HF reference fixtures Solar's model tests compare against (DESIGN.md section 6,
layer 4). Run by hand with torch and transformers installed; not in CI. The output is committed.

    python3 scripts/make_fixtures.py [--out tests/fixtures/hf]

For each small random checkpoint (Llama f32 single file, Llama GQA sharded, Llama with tied
embeddings saved in bf16, Mistral with a sliding window) it saves the model folder and, for fixed
inputs, the f32 logits, the loss against labels with ignored (-100) positions, every parameter's
gradient, and greedy generations. It also builds an up-scaled model by slicing a state dict
(SOLAR's depth up-scaling) and a byte-level BPE tokenizer with reference encodings.
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

SMALL = dict(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, max_position_embeddings=64, rms_norm_eps=1e-5,
             rope_theta=10000.0, bos_token_id=1, eos_token_id=2, initializer_range=0.2)

CASES = {
    # name: (config class, model class, config overrides, save dtype, max shard size)
    "llama_f32": (LlamaConfig, LlamaForCausalLM, dict(num_key_value_heads=4), torch.float32, None),
    "llama_gqa_sharded": (LlamaConfig, LlamaForCausalLM, dict(num_key_value_heads=2, rope_theta=500.0),
                          torch.float32, "60KB"),
    "llama_tied_bf16": (LlamaConfig, LlamaForCausalLM, dict(num_key_value_heads=2, tie_word_embeddings=True),
                        torch.bfloat16, None),
    "mistral_window": (MistralConfig, MistralForCausalLM, dict(num_key_value_heads=1, sliding_window=4),
                       torch.float32, None),
}


def inputs(seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 320, (2, 12), generator=g)
    labels = ids.clone()
    labels[0, :3] = -100  # a prompt that is not scored
    labels[1, 7] = -100
    return ids, labels


def write_case(out, name, cfg_cls, model_cls, overrides, dtype, shard):
    torch.manual_seed(1234 + len(name))
    cfg = cfg_cls(**{**SMALL, **overrides})
    cfg._attn_implementation = "eager"
    model = model_cls(cfg).eval()
    folder = os.path.join(out, name)
    shutil.rmtree(folder, ignore_errors=True)
    model.to(dtype).save_pretrained(os.path.join(folder, "model"), max_shard_size=shard or "10GB")
    # The reference is what a user gets: the saved folder loaded in f32 (bf16 weights widened,
    # rotary frequencies computed afresh in f32).
    model = model_cls.from_pretrained(os.path.join(folder, "model"), dtype=torch.float32,
                                      attn_implementation="eager").eval()
    ids, labels = inputs(7)
    out_fwd = model(input_ids=ids, labels=labels)
    out_fwd.loss.backward()
    tensors = {"input_ids": ids.to(torch.int32), "labels": labels.to(torch.int32),
               "logits": out_fwd.logits.detach().contiguous()}
    for pname, p in model.named_parameters():
        tensors["grad." + pname] = p.grad.detach().contiguous()
    save_file(tensors, os.path.join(folder, "reference.safetensors"))
    prompt = ids[:1, :5]
    greedy = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10, do_sample=False,
                            eos_token_id=None, pad_token_id=0)
    # `solar-train eval`'s number: mean NLL over every predicted token of both rows.
    with torch.no_grad():
        eval_loss = model(input_ids=ids, labels=ids).loss.item()
    meta = {"loss": out_fwd.loss.item(), "eval_loss": eval_loss, "prompt": prompt[0].tolist(),
            "greedy": greedy[0, 5:].tolist(),
            "dtype": str(dtype).replace("torch.", ""), "sharded": shard is not None}
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return model


def write_upscaled(out):
    """SOLAR's depth up-scaling by state-dict slicing: n=4 layers, m=1: [0, 3) ++ [1, 4)."""
    torch.manual_seed(99)
    cfg = LlamaConfig(**{**SMALL, "num_hidden_layers": 4, "num_key_value_heads": 2})
    base = LlamaForCausalLM(cfg)
    folder = os.path.join(out, "upscale")
    shutil.rmtree(folder, ignore_errors=True)
    base.save_pretrained(os.path.join(folder, "base"))
    layer_map = list(range(0, 3)) + list(range(1, 4))
    sd = base.state_dict()
    new_sd = {}
    for k, v in sd.items():
        if k.startswith("model.layers."):
            continue
        new_sd[k] = v
    for new_i, src in enumerate(layer_map):
        prefix = f"model.layers.{src}."
        for k, v in sd.items():
            if k.startswith(prefix):
                new_sd[f"model.layers.{new_i}." + k[len(prefix):]] = v.clone()
    up_cfg = LlamaConfig(**{**cfg.to_dict(), "num_hidden_layers": len(layer_map)})
    up = LlamaForCausalLM(up_cfg)
    up.load_state_dict(new_sd)
    up.save_pretrained(os.path.join(folder, "expected"))
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump({"remove": 1, "layer_map": layer_map}, f)


SAMPLES = ["Hello, world!", "Depth up-scaling: 32 -> 48 layers.", "naïve café ☕ 日本語", "  spaces\tand\nnewlines  ", ""]


def write_tokenizer(out):
    """A byte-level BPE tokenizer (GPT-2 style) with <s>/</s> added by its post-processor."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = ["the quick brown fox jumps over the lazy dog " * 3, "depth up-scaling of language models",
              "instruction tuning and alignment with direct preference optimization"] * 20
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    folder = os.path.join(out, "tokenizer")
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    ref = []
    for s in SAMPLES:
        with_sp = tok.encode(s, add_special_tokens=True).ids
        without = tok.encode(s, add_special_tokens=False).ids
        ref.append({"text": s, "ids": with_sp, "ids_no_special": without,
                    "decoded": tok.decode(with_sp, skip_special_tokens=True)})
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "hf"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, case in CASES.items():
        write_case(args.out, name, *case)
        print("wrote", name)
    write_upscaled(args.out)
    write_tokenizer(args.out)
    print("done:", os.path.abspath(args.out))


if __name__ == "__main__":
    main()
