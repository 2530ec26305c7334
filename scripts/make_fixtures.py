#!/usr/bin/env python3
"""Writes the HF reference fixtures Solar's model tests compare against (DESIGN.md section 6,
layer 4). Run by hand with torch and transformers installed; not in CI. The output is committed.

    python3 scripts/make_fixtures.py [--out tests/fixtures/hf]

For each small random checkpoint (Llama f32 single file, Llama GQA sharded, Llama with tied
embeddings saved in bf16, Mistral with a sliding window) it saves the model folder and, for fixed
inputs, the f32 logits, the loss against labels with ignored (-100) positions, every parameter's
gradient, and greedy generations. It also builds an up-scaled model by slicing a state dict
(SOLAR's depth up-scaling) and a byte-level BPE tokenizer with reference encodings. For DPO, a
policy and a reference with preference pairs and TRL's losses and metrics (dpo/); for the
optimizer, five torch.optim.AdamW steps on a small model (adamw/). For merging, when mergekit is
installed (pip install mergekit), mergekit's own output for a set of YAML configs (merge/).
For chat, instruct models with chat templates and the ids of apply_chat_template + greedy generate
(chat_config/, chat_jinja/).
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


DPO_CFG = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
               bos_token_id=1, eos_token_id=2, initializer_range=0.2)
# (loss_type, beta, label_smoothing): TRL's sigmoid (plain and conservative), IPO and hinge.
DPO_VARIANTS = [("sigmoid", 0.1, 0.0), ("sigmoid", 0.1, 0.1), ("sigmoid", 0.5, 0.0), ("sigmoid", 0.5, 0.1),
                ("ipo", 0.1, 0.0), ("ipo", 0.5, 0.0), ("hinge", 0.1, 0.0), ("hinge", 0.5, 0.0)]
DPO_GRAD_VARIANT = 1  # the conservative sigmoid loss uses both log-sigmoid terms


def dpo_losses(pc, pr, rc, rr, loss_type, beta, eps):
    """TRL's DPOTrainer.dpo_loss: per-pair losses and the rewards it logs."""
    logits = (pc - pr) - (rc - rr)
    if loss_type == "sigmoid":
        losses = -torch.nn.functional.logsigmoid(beta * logits) * (1 - eps) \
            - torch.nn.functional.logsigmoid(-beta * logits) * eps
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        losses = torch.relu(1 - beta * logits)
    return losses, beta * (pc - rc).detach(), beta * (pr - rr).detach()


def completion_logps(model, ids, mask):
    """Summed log-probs of the completion tokens of each sequence and their counts (TRL's
    concatenated_forward on unpadded rows): token t+1 is predicted at t and counts where mask[t+1]."""
    sums, counts = [], []
    for seq, m in zip(ids, mask):
        x = torch.tensor([seq])
        logp = torch.log_softmax(model(input_ids=x).logits[0, :-1].float(), dim=-1)
        tok = logp.gather(-1, x[0, 1:, None])[:, 0]
        keep = torch.tensor(m[1:], dtype=torch.bool)
        sums.append(tok[keep].sum())
        counts.append(int(keep.sum()))
    return torch.stack(sums), torch.tensor(counts, dtype=torch.float64)


def write_dpo(out):
    """A policy and a different reference, preference pairs as token ids with completion masks,
    and TRL's DPO loss and metrics for each variant; the gradients of one variant's mean loss
    (policy_grad/)."""
    folder = os.path.join(out, "dpo")
    shutil.rmtree(folder, ignore_errors=True)
    models = {}
    for name, seed in (("policy", 2024), ("reference", 2025)):
        torch.manual_seed(seed)
        cfg = LlamaConfig(**DPO_CFG)
        cfg._attn_implementation = "eager"
        LlamaForCausalLM(cfg).save_pretrained(os.path.join(folder, name))
        models[name] = LlamaForCausalLM.from_pretrained(os.path.join(folder, name), dtype=torch.float32,
                                                        attn_implementation="eager").eval()
    g = torch.Generator().manual_seed(31)
    rand = lambda n: torch.randint(3, DPO_CFG["vocab_size"], (n,), generator=g).tolist()
    pairs = []
    # Prompt and completion lengths differ between pairs and sides, so batches need padding.
    for plen, clen, rlen in ((3, 4, 4), (5, 2, 6), (1, 7, 3), (4, 5, 1), (2, 3, 3)):
        prompt, chosen = [1] + rand(plen - 1), rand(clen)
        rejected = chosen[:] if clen == rlen else rand(rlen)
        if clen == rlen:  # same length: the rejected answer is the chosen one corrupted
            rejected[1] = (rejected[1] + 7) % DPO_CFG["vocab_size"]
        pair = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        for side in ("chosen", "rejected"):
            pair[side + "_input_ids"] = prompt + pair[side]
            pair[side + "_completion_mask"] = [0] * len(prompt) + [1] * len(pair[side])
        pairs.append(pair)
    side_ids = {s: [p[s + "_input_ids"] for p in pairs] for s in ("chosen", "rejected")}
    side_mask = {s: [p[s + "_completion_mask"] for p in pairs] for s in ("chosen", "rejected")}
    logps, counts = {}, {}
    for name, model in models.items():
        for side in ("chosen", "rejected"):
            lp, counts[side] = completion_logps(model, side_ids[side], side_mask[side])
            logps[(name, side)] = lp if name == "policy" else lp.detach()
    variants = []
    for i, (loss_type, beta, eps) in enumerate(DPO_VARIANTS):
        # The formulas run in f64 on the f32 log-probs; IPO length-normalizes every side's
        # log-probs, policy and reference alike, before anything else (as TRL does).
        norm = {s: (counts[s] if loss_type == "ipo" else torch.ones_like(counts[s])) for s in counts}
        lp = {k: v.double() / norm[k[1]] for k, v in logps.items()}
        losses, rc, rr = dpo_losses(lp[("policy", "chosen")], lp[("policy", "rejected")],
                                    lp[("reference", "chosen")], lp[("reference", "rejected")], loss_type, beta, eps)
        metrics = {"loss": losses.mean().item(), "rewards/chosen": rc.mean().item(),
                   "rewards/rejected": rr.mean().item(), "rewards/accuracies": (rc > rr).double().mean().item(),
                   "rewards/margins": (rc - rr).mean().item(),
                   "logps/chosen": lp[("policy", "chosen")].mean().item(),
                   "logps/rejected": lp[("policy", "rejected")].mean().item()}
        variants.append({"loss_type": loss_type, "beta": beta, "label_smoothing": eps,
                         "losses": losses.tolist(), "metrics": metrics})
        if i == DPO_GRAD_VARIANT:
            losses.mean().backward()
    # The gradients as a model folder of their own (same names and shapes as the policy), so
    # Solar's checkpoint reader loads them without another safetensors reader.
    grads = {n: p.grad.float().contiguous() for n, p in models["policy"].named_parameters()}
    os.makedirs(os.path.join(folder, "policy_grad"))
    save_file(grads, os.path.join(folder, "policy_grad", "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(os.path.join(folder, "policy", "config.json"), os.path.join(folder, "policy_grad"))
    ref = {"pairs": pairs, "counts": {s: [int(c) for c in counts[s]] for s in counts},
           "logps": {f"{m}/{s}": logps[(m, s)].tolist() for m, s in logps}, "variants": variants,
           "grad_variant": DPO_GRAD_VARIANT}
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)


ADAMW = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, steps=5)


def write_adamw(out):
    """Five steps of torch.optim.AdamW on a small Llama: the initial model, the fixed batch, the
    loss before each step and the final model. Decay on matrices and embeddings, not on norms;
    plain loss.backward() and step(), no clipping, no schedule."""
    folder = os.path.join(out, "adamw")
    shutil.rmtree(folder, ignore_errors=True)
    torch.manual_seed(77)
    cfg = LlamaConfig(**{**DPO_CFG, "initializer_range": 0.1})
    cfg._attn_implementation = "eager"
    LlamaForCausalLM(cfg).save_pretrained(os.path.join(folder, "initial"))
    model = LlamaForCausalLM.from_pretrained(os.path.join(folder, "initial"), dtype=torch.float32,
                                             attn_implementation="eager").train()
    g = torch.Generator().manual_seed(78)
    ids = torch.randint(3, DPO_CFG["vocab_size"], (2, 10), generator=g)
    labels = ids.clone()
    labels[0, :4] = -100
    labels[1, 6] = -100
    params = list(model.named_parameters())
    groups = [{"params": [p for n, p in params if p.dim() >= 2], "weight_decay": ADAMW["weight_decay"]},
              {"params": [p for n, p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"])
    losses = []
    for _ in range(ADAMW["steps"]):
        opt.zero_grad()
        loss = model(input_ids=ids, labels=labels).loss  # mean over scored tokens, labels shifted inside
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.save_pretrained(os.path.join(folder, "final"))
    ref = {**ADAMW, "betas": list(ADAMW["betas"]), "input_ids": ids.tolist(), "labels": labels.tolist(),
           "losses": losses, "decay": "tensors with 2+ dims", "no_decay": "norm weights (1 dim)"}
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)


# Merging: three small random Llamas and, for each mergekit YAML below (model paths relative to
# the case folder), what mergekit itself writes. Only the weights and config.json are kept.
MERGE_SMALL = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                   rms_norm_eps=1e-5, rope_theta=10000.0, bos_token_id=1, eos_token_id=2,
                   initializer_range=0.3)

MERGE_CASES = {
    "linear": """models:
  - model: ../a
    parameters:
      weight:
        - filter: mlp
          value: 0.2
        - value: 0.6
  - model: ../b
    parameters:
      weight: 0.5
merge_method: linear
dtype: float32
""",
    "linear_raw": """models:
  - model: ../a
    parameters: {weight: 1.5}
  - model: ../b
    parameters: {weight: -0.5}
merge_method: linear
parameters:
  normalize: false
dtype: float32
""",
    "slerp": """slices:
  - sources:
      - model: ../a
        layer_range: [0, 4]
      - model: ../b
        layer_range: [0, 4]
merge_method: slerp
base_model: ../a
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: float32
""",
    "task_arithmetic": """models:
  - model: ../a
    parameters: {weight: 0.7}
  - model: ../b
    parameters: {weight: 0.4}
merge_method: task_arithmetic
base_model: ../base
parameters:
  lambda: 0.8
dtype: float32
""",
    "ties": """models:
  - model: ../a
    parameters: {weight: 1.0, density: 0.5}
  - model: ../b
    parameters: {weight: 0.6, density: [0.3, 0.7]}
  - model: ../base
merge_method: ties
base_model: ../base
parameters:
  lambda: 1.2
dtype: float32
""",
    "dare_ties_dense": """models:
  - model: ../a
    parameters: {weight: 0.8, density: 1.0}
  - model: ../b
    parameters: {weight: 0.5, density: 1.0}
merge_method: dare_ties
base_model: ../base
dtype: float32
""",
    "passthrough_solar": """slices:
  - sources:
      - model: ../a
        layer_range: [0, 3]
  - sources:
      - model: ../a
        layer_range: [1, 4]
merge_method: passthrough
dtype: bfloat16
""",
}


def write_merge(out):
    """mergekit's own outputs for each MERGE_CASES config (mergekit must be installed)."""
    import importlib.metadata

    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    folder = os.path.join(out, "merge")
    shutil.rmtree(folder, ignore_errors=True)
    for i, name in enumerate(["a", "b", "base"]):
        torch.manual_seed(500 + i)
        model = LlamaForCausalLM(LlamaConfig(**MERGE_SMALL))
        with torch.no_grad():  # random norm weights, so norms differ between the models too
            for pname, p in model.named_parameters():
                if pname.endswith("norm.weight"):
                    p.uniform_(0.5, 1.5)
        model.save_pretrained(os.path.join(folder, name))
    cwd = os.getcwd()
    for name, text in MERGE_CASES.items():
        case = os.path.join(folder, name)
        os.makedirs(case)
        with open(os.path.join(case, "merge.yml"), "w") as f:
            f.write(text)
        os.chdir(case)
        try:
            config = MergeConfiguration.model_validate(yaml.safe_load(text))
            run_merge(config, "mergekit_out", options=MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True))
        finally:
            os.chdir(cwd)
        produced = os.path.join(case, "mergekit_out")
        expected = os.path.join(case, "expected")
        os.makedirs(expected)
        shards = sorted(f for f in os.listdir(produced) if f.endswith(".safetensors"))
        from safetensors.torch import load_file
        tensors = {}
        for shard in shards:
            tensors.update(load_file(os.path.join(produced, shard)))
        save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, os.path.join(expected, "model.safetensors"))
        shutil.copy(os.path.join(produced, "config.json"), os.path.join(expected, "config.json"))
        shutil.rmtree(produced)
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump({"mergekit": importlib.metadata.version("mergekit"), "cases": list(MERGE_CASES)}, f, indent=1)


def write_lora(out):
    """A LoRA adapter PEFT itself made on llama_f32 (lora/): all-linear, rank-stabilized scaling,
    B given random values after get_peft_model (PEFT starts it at zero, which would hide every
    mistake), saved with save_pretrained; with the PeftModel's logits on fixed inputs and the
    logits of the model merge_and_unload folds it into."""
    from peft import LoraConfig, PeftModel, get_peft_model
    folder = os.path.join(out, "lora")
    shutil.rmtree(folder, ignore_errors=True)
    base_dir = os.path.join(out, "llama_f32", "model")
    torch.manual_seed(4321)
    base = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
    cfg = LoraConfig(r=4, lora_alpha=6, lora_dropout=0.1, target_modules="all-linear", use_rslora=True,
                     task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.2)
    model.save_pretrained(os.path.join(folder, "adapter"))
    # The reference is what a user gets: the saved adapter loaded by PeftModel onto a fresh base.
    base = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, os.path.join(folder, "adapter")).eval()
    ids, _ = inputs(7)
    prompt = ids[:1, :5]
    with torch.no_grad():
        logits = model(input_ids=ids).logits.contiguous()
        greedy = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10,
                                do_sample=False, eos_token_id=None, pad_token_id=0)
        merged = model.merge_and_unload()
        merged_logits = merged(input_ids=ids).logits.contiguous()
    save_file({"input_ids": ids.to(torch.int32), "logits": logits, "merged_logits": merged_logits},
              os.path.join(folder, "reference.safetensors"))
    import peft
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump({"peft": peft.__version__, "base": "llama_f32/model", "prompt": prompt[0].tolist(),
                   "greedy": greedy[0, 5:].tolist()}, f, indent=1)
    os.remove(os.path.join(folder, "adapter", "README.md"))  # PEFT's model card template: not needed


# Chat templates written for the chat fixtures, in the two styles instruct Llamas ship: "###"
# role headers with an optional system block (SOLAR-Instruct's kind), and [INST] turns with the
# system message folded into the first user turn inside <<SYS>> markers (Llama-2-chat's kind).
CHAT_TEMPLATE_HEADERS = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% if message['content'] %}"
    "{{ '### System:\\n' + message['content'] + '\\n\\n' }}{% endif %}"
    "{% elif message['role'] == 'user' %}{{ '### User:\\n' + message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '### Assistant:\\n' + message['content'] + eos_token + '\\n\\n' }}"
    "{% else %}{{ raise_exception('unknown role ' + message['role']) }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\\n' }}{% endif %}")
CHAT_TEMPLATE_INST = """{% if messages[0]['role'] == 'system' %}
    {% set system = messages[0]['content'] %}
    {% set turns = messages[1:] %}
{% else %}
    {% set system = false %}
    {% set turns = messages %}
{% endif %}
{% for message in turns %}
    {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('turns must alternate user, assistant, user, ...') -}}
    {% endif %}
    {% if loop.first and system %}
        {% set content = '<<SYS>>\\n' + system | trim + '\\n<</SYS>>\\n\\n' + message['content'] | trim %}
    {% else %}
        {% set content = message['content'] | trim %}
    {% endif %}
    {% if message['role'] == 'user' %}
        {{- bos_token + '[INST] ' + content + ' [/INST]' -}}
    {% else %}
        {{- ' ' + content + ' ' + eos_token -}}
    {% endif %}
{% endfor %}
"""
CHAT_CFG = dict(vocab_size=320, hidden_size=16, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
                bos_token_id=1, eos_token_id=2, initializer_range=1.0)
CHAT_SYSTEM = "You answer in one short sentence."
CHAT_USER = "What does the quick brown fox jump over?"


def write_chat(out):
    """Instruct models for `generate --chat`: a tiny random Llama with write_tokenizer's tokenizer
    and a chat template, in tokenizer_config.json (chat_config/) or in chat_template.jinja
    (chat_jinja/, whose tokenizer_config.json also holds a decoy template the file overrides).
    For a user message alone and for system + user: the ids of apply_chat_template(...,
    add_generation_prompt=True) and of greedy generate() after them, with the default EOS."""
    from transformers import AutoTokenizer
    cases = {"chat_config": (CHAT_TEMPLATE_HEADERS, None), "chat_jinja": ("{{ raise_exception('decoy') }}", CHAT_TEMPLATE_INST)}
    for seed, (name, (in_config, jinja)) in enumerate(cases.items()):
        folder = os.path.join(out, name)
        shutil.rmtree(folder, ignore_errors=True)
        model_dir = os.path.join(folder, "model")
        torch.manual_seed(4242 + seed)
        cfg = LlamaConfig(**CHAT_CFG)
        LlamaForCausalLM(cfg).save_pretrained(model_dir)
        shutil.copy(os.path.join(out, "tokenizer", "tokenizer.json"), model_dir)
        tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "model_max_length": 256, "chat_template": in_config}
        with open(os.path.join(model_dir, "tokenizer_config.json"), "w") as f:
            json.dump(tok_cfg, f, indent=1)
        if jinja is not None:
            with open(os.path.join(model_dir, "chat_template.jinja"), "w") as f:
                f.write(jinja)
        # The reference is what a user gets from the folder as saved.
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
        runs = []
        for system in (None, CHAT_SYSTEM):
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": CHAT_USER}]
            prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                             return_dict=False)
            if isinstance(prompt, dict) or hasattr(prompt, "input_ids"):
                prompt = prompt["input_ids"]
            ids = torch.tensor([prompt])
            greedy = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
            new = greedy[0, ids.shape[1]:].tolist()
            assert len(set(new)) > 3, f"{name}: greedy output {new} is too repetitive to test much"
            runs.append({"system": system, "user": CHAT_USER, "max_new_tokens": 12,
                         "text": tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
                         "prompt_ids": prompt, "output_ids": new,
                         "output_text": tok.decode(new, skip_special_tokens=True)})
        with open(os.path.join(folder, "reference.json"), "w") as f:
            json.dump(runs, f, indent=1, ensure_ascii=False)


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
    write_dpo(args.out)
    write_adamw(args.out)
    write_lora(args.out)
    write_chat(args.out)
    try:
        import mergekit  # noqa: F401
    except ImportError:
        print("mergekit is not installed: merge/ not rewritten")
    else:
        write_merge(args.out)
    print("done:", os.path.abspath(args.out))


if __name__ == "__main__":
    main()
