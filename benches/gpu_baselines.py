"""PyTorch baselines for `solar-train bench --device cuda`, on the same GPU in the same call
(scripts/gpu-check.sh): the same ops at the same shapes and dtypes as train/src/bench/gpu.rs,
timed the same way (CUDA events, median of N runs after warm-up, inputs rotated over copies that
together exceed L2). Rows carry the same (op, case) keys as Solar's so gpu_compare.py can put a
ratio beside each. Also times a HF transformers training step (bf16 autocast over f32 weights,
AdamW) of the small Llama that Solar's train_step example trains.

    python3 benches/gpu_baselines.py --out torch.json [--repeats 20]
"""

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

C, FF, V, TOKENS = 4096, 14336, 32000, 4096
L2 = 50 << 20


def sets_for(nbytes):
    return max(1, min(8, math.ceil(2 * L2 / max(nbytes, 1))))


def time_ms(fn, sets, repeats):
    for i in range(max(sets, 2)):
        fn(i)
    torch.cuda.synchronize()
    times = []
    for i in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(i)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    n = len(times)
    return times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])


def rnd(*shape, dtype=torch.bfloat16):
    return (torch.rand(*shape, device="cuda", dtype=torch.float32) * 2 - 1).to(dtype)


def row(op, case, ms, flops=None, nbytes=None):
    r = {"op": op, "case": case, "median_s": ms * 1e-3}
    if flops is not None:
        r["tflops"] = flops / (ms * 1e-3) / 1e12
    if nbytes is not None:
        r["gbps"] = nbytes / (ms * 1e-3) / 1e9
    return r


def matmul(label, m, n, k, ta, tb, repeats):
    nbytes = 2 * (m * k + k * n + m * n)
    sets = sets_for(nbytes)
    a = [rnd(k, m) if ta else rnd(m, k) for _ in range(sets)]
    b = [rnd(n, k) if tb else rnd(k, n) for _ in range(sets)]

    def fn(i):
        x, y = a[i % sets], b[i % sets]
        torch.matmul(x.t() if ta else x, y.t() if tb else y)

    return row("matmul", label, time_ms(fn, sets, repeats), flops=2.0 * m * n * k)


def attention(backward, repeats):
    b, t, h, hkv, d = 2, 2048, 32, 8, 128
    pairs = b * h * t * (t + 1) / 2
    flops = (14.0 if backward else 4.0) * d * pairs
    sets = sets_for(2 * b * t * (h + 2 * hkv) * d)
    # SDPA wants [B, H, T, D]; GQA through enable_gqa (kv heads shared by H/Hkv query heads).
    qkv = [(rnd(b, h, t, d), rnd(b, hkv, t, d), rnd(b, hkv, t, d)) for _ in range(sets)]
    if backward:
        for q, k, v in qkv:
            for x in (q, k, v):
                x.requires_grad_(True)

    def fn(i):
        q, k, v = qkv[i % sets]
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        if backward:
            o.float().sum().backward()

    op, case = ("attention_fwd_bwd", "causal GQA, fwd + bwd") if backward else ("attention", "causal GQA, fwd")
    return row(op, case, time_ms(fn, sets, repeats), flops=flops)


def rmsnorm(repeats):
    n = 4 * TOKENS
    nbytes = 2 * (2 * n * C + C)
    sets = sets_for(nbytes)
    xs = [(rnd(n, C), rnd(C)) for _ in range(sets)]

    def fn(i):
        x, w = xs[i % sets]
        F.rms_norm(x, (C,), w, 1e-5)

    return row("rmsnorm", "forward", time_ms(fn, sets, repeats), nbytes=nbytes)


def rope(repeats):
    b, t, h, d = 4, 2048, 32, 128
    nbytes = 2 * (2 * b * t * h * d) + 4 * b * t
    sets = sets_for(nbytes)
    xs = [rnd(b, t, h, d) for _ in range(sets)]
    inv = 1.0 / (10000.0 ** (torch.arange(0, d, 2, device="cuda", dtype=torch.float32) / d))
    ang = torch.arange(t, device="cuda", dtype=torch.float32)[:, None] * inv[None, :]
    cos = torch.cat([ang.cos(), ang.cos()], -1)[None, :, None, :].to(torch.bfloat16)
    sin = torch.cat([ang.sin(), ang.sin()], -1)[None, :, None, :].to(torch.bfloat16)

    def fn(i):
        x = xs[i % sets]
        x1, x2 = x[..., : d // 2], x[..., d // 2:]
        x * cos + torch.cat([-x2, x1], -1) * sin  # HF's rotate_half, eager

    return row("rope", "forward, queries", time_ms(fn, sets, repeats), nbytes=nbytes)


def swiglu(repeats):
    nbytes = 2 * 3 * TOKENS * FF
    sets = sets_for(nbytes)
    xs = [(rnd(TOKENS, FF), rnd(TOKENS, FF)) for _ in range(sets)]

    def fn(i):
        g, u = xs[i % sets]
        F.silu(g) * u

    return row("swiglu", "forward", time_ms(fn, sets, repeats), nbytes=nbytes)


def embedding(repeats):
    n = 4 * TOKENS
    nbytes = 4 * n + 2 * 2 * n * C
    sets = sets_for(2 * V * C)
    xs = [(torch.randint(0, V, (n,), device="cuda"), rnd(V, C)) for _ in range(sets)]

    def fn(i):
        ids, table = xs[i % sets]
        F.embedding(ids, table)

    return row("embedding", "forward, table 32000x4096", time_ms(fn, sets, repeats), nbytes=nbytes)


def cross_entropy(repeats):
    nbytes = 2 * 3 * TOKENS * V
    sets = sets_for(nbytes)
    xs = [(rnd(TOKENS, V).requires_grad_(True), torch.randint(0, V, (TOKENS,), device="cuda")) for _ in range(sets)]

    def fn(i):
        logits, t = xs[i % sets]
        F.cross_entropy(logits, t, reduction="sum").backward()

    return row("cross_entropy_fwd_bwd", "forward + backward", time_ms(fn, sets, repeats), nbytes=nbytes)


def linear_cross_entropy(repeats):
    sets = sets_for(2 * (TOKENS * C + V * C))
    xs = [(rnd(TOKENS, C).requires_grad_(True), rnd(V, C).requires_grad_(True),
           torch.randint(0, V, (TOKENS,), device="cuda")) for _ in range(sets)]

    def fn(i):
        h, w, t = xs[i % sets]
        F.cross_entropy((h @ w.t()).float(), t, reduction="sum").backward()

    return row("linear_cross_entropy_fwd_bwd", "fused lm_head, fwd + bwd", time_ms(fn, sets, repeats),
               flops=8.0 * TOKENS * V * C)


def adamw(repeats):
    n = 64 << 20
    nbytes = 4 * 7 * n
    p = torch.nn.Parameter(rnd(n, dtype=torch.float32))
    p.grad = rnd(n, dtype=torch.float32)
    opt = torch.optim.AdamW([p], lr=1e-4, weight_decay=0.1, fused=True)
    return row("adamw", "64M f32 master weights", time_ms(lambda i: opt.step(), 1, repeats), nbytes=nbytes)


def copy_gbps():
    n = (1 << 30) // 4
    a, b = torch.empty(n, device="cuda"), torch.empty(n, device="cuda")
    ms = time_ms(lambda i: b.copy_(a), 1, 20)
    return 2 * n * 4 / (ms * 1e-3) / 1e9


def train_step(a):
    """HF LlamaForCausalLM, bf16 autocast over f32 weights, AdamW: tokens/s of the median step."""
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.ffn,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                      max_position_embeddings=max(2048, a.seq), tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq), device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(3):
        step()
    times = []
    for _ in range(a.steps):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times.sort()
    med = times[len(times) // 2]
    return {"median_s": med, "tokens_per_s": a.batch * a.seq / med, "step_s": times}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--repeats", type=int, default=20)
    for flag, default in (("vocab", 32000), ("hidden", 1024), ("layers", 8), ("heads", 16), ("kv_heads", 8),
                          ("ffn", 2816), ("batch", 8), ("seq", 1024), ("steps", 10)):
        p.add_argument("--" + flag.replace("_", "-"), dest=flag, type=int, default=default)
    a = p.parse_args()
    r = a.repeats
    rows = []
    cases = [
        lambda: matmul("4096^3 (A B)", 4096, 4096, 4096, False, False, r),
        lambda: matmul("SOLAR gate/up: x W^T, 4096 tok 4096 -> 14336", TOKENS, FF, C, False, True, r),
        lambda: matmul("SOLAR down: x W^T, 4096 tok 14336 -> 4096", TOKENS, C, FF, False, True, r),
        lambda: matmul("SOLAR dW: dy^T x, 14336 x 4096 over 4096 tok", FF, C, TOKENS, True, False, r),
        lambda: matmul("SOLAR dx: dy W, 4096 tok 14336 -> 4096", TOKENS, C, FF, False, False, r),
        lambda: attention(False, r), lambda: attention(True, r), lambda: rmsnorm(r), lambda: rope(r),
        lambda: swiglu(r), lambda: embedding(r), lambda: cross_entropy(r), lambda: linear_cross_entropy(r),
        lambda: adamw(r),
    ]
    for c in cases:
        try:
            rows.append(c())
        except Exception as e:  # one failing baseline must not hide the others
            rows.append({"error": repr(e)})
        torch.cuda.empty_cache()
    report = {"torch": torch.__version__, "device": torch.cuda.get_device_name(), "copy_gbps": copy_gbps(),
              "results": rows}
    try:
        report["train_step"] = {"config": vars(a), **train_step(a)}
    except Exception as e:
        report["train_step"] = {"error": repr(e)}
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
