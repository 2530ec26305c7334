"""Times one training step (forward, backward, AdamW) of the same small Llama in Solar and in
PyTorch eager, side by side, and prints tokens/s of each and their ratio.

Run by train_step_vs_pytorch.sh, which builds Solar's train_step example and passes its path.
Both sides: random token ids, the mean next-token loss over the whole batch, AdamW on every
parameter (decay 0.1 on matrices and embeddings), the same thread count. PyTorch runs
LlamaForCausalLM from transformers with its default attention (SDPA) in f32. The two alternate
for a few rounds so load from anything else on the machine hits both alike. The summary gives
the median step and the fastest one: on a shared machine, bursts of other work slow PyTorch's
OpenMP threads far more than Solar's rayon pool (up to 10x measured on 2 shared cores), and the
fastest step is the best estimate of each engine's speed on an idle machine.
"""

import argparse
import json
import statistics
import subprocess
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def torch_step_times(a, steps):
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.ffn,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                      max_position_embeddings=max(512, a.seq), tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).train()
    params = list(model.named_parameters())
    groups = [{"params": [p for _, p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for _, p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-4)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=torch.Generator().manual_seed(1))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        return loss.item()

    step()  # warm-up: allocator growth, thread pool start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def solar_step_times(binary, a, steps):
    args = [binary, "--steps", str(steps)]
    for flag in ("vocab", "hidden", "layers", "heads", "kv_heads", "ffn", "batch", "seq", "threads"):
        args += ["--" + flag.replace("_", "-"), str(getattr(a, flag))]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["step_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary")
    for name, default in (("vocab", 32000), ("hidden", 256), ("layers", 4), ("heads", 8), ("kv-heads", 4),
                          ("ffn", 688), ("batch", 8), ("seq", 128), ("threads", 2), ("rounds", 3), ("steps", 5)):
        ap.add_argument("--" + name, type=int, default=default)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tokens = a.batch * a.seq
    print("train step: Llama hidden {} x {} layers, heads {} (kv {}), ffn {}, vocab {}; batch {} x seq {} = {} "
          "tokens; {} threads; torch {}".format(a.hidden, a.layers, a.heads, a.kv_heads, a.ffn, a.vocab, a.batch,
                                               a.seq, tokens, a.threads, torch.__version__))
    solar, pt = [], []
    for i in range(a.rounds):
        s = solar_step_times(a.binary, a, a.steps)
        p = torch_step_times(a, a.steps)
        solar += s
        pt += p
        print("  round {}: Solar {:7.1f} tokens/s, PyTorch {:7.1f} tokens/s".format(
            i + 1, tokens / statistics.median(s), tokens / statistics.median(p)))
    for label, pick in (("median", statistics.median), ("fastest", min)):
        s_tps, p_tps = tokens / pick(solar), tokens / pick(pt)
        print("  {:7} step: Solar {:7.1f} tokens/s ({:.3f} s), PyTorch {:7.1f} tokens/s ({:.3f} s), "
              "ratio Solar / PyTorch {:.2f}".format(label, s_tps, pick(solar), p_tps, pick(pt), s_tps / p_tps))
    print("  ({} steps each)".format(len(solar)))


if __name__ == "__main__":
    main()
