"""Joins Solar's GPU bench JSON with the PyTorch baselines (gpu_baselines.py) and the two
training-step runs into one markdown table with a ratio per row (Solar / torch, higher is
better for Solar), and checks the issue's speed floors: matmul 4096^3 and attention at least
0.5x torch; the memory-bound ops at least 60% of the measured copy bandwidth.

    python3 benches/gpu_compare.py SOLAR.json TORCH.json [SOLAR_TRAIN_STEP.json] > table.md
"""

import json
import sys

MEMORY_FLOOR = ["rmsnorm", "rope", "swiglu", "cross_entropy_fwd_bwd", "adamw"]
# Rows of experimental kernels: compared with torch's row of the op they replace, never failed.
EXPERIMENTAL = {"matmul_wgmma": "matmul"}
RATIO_FLOOR = {("matmul", "4096^3 (A B)"): 0.5, ("attention", "causal GQA, fwd"): 0.5,
               ("attention_fwd_bwd", "causal GQA, fwd + bwd"): 0.5}


def rate(r):
    if r.get("tflops") is not None:
        return r["tflops"], "TFLOP/s"
    if r.get("gbps") is not None:
        return r["gbps"], "GB/s"
    return None, ""


def load(path, default):
    """The JSON in `path`, or `default` (saying why) when a step before us failed."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"note: {path}: {e} (see the .err/.log beside it)", file=sys.stderr)
        return default


def main():
    solar = load(sys.argv[1], {"results": []})
    torch = load(sys.argv[2], {"results": []}) if len(sys.argv) > 2 else {"results": []}
    step = load(sys.argv[3], None) if len(sys.argv) > 3 else None
    base = {(r.get("op"), r.get("case")): r for r in torch.get("results", []) if "op" in r}
    gpu = solar.get("gpu", {})
    copy = gpu.get("copy_gbps") or float("nan")
    print(f"Device: {gpu.get('name')} ({gpu.get('arch')}); copy bandwidth {copy:.0f} GB/s (Solar), "
          f"{torch.get('copy_gbps', float('nan')):.0f} GB/s (torch {torch.get('torch')})\n")
    print("| op | case | Solar | % ceiling | torch | Solar / torch | floor |")
    print("|---|---|---|---|---|---|---|")
    failed = []
    for r in solar.get("results", []):
        key = (r["op"], r["case"])
        v, unit = rate(r)
        experimental = r["op"] in EXPERIMENTAL
        t = base.get((EXPERIMENTAL.get(r["op"], r["op"]), r["case"]))
        tv = rate(t)[0] if t else None
        ratio = v / tv if (v and tv) else None
        floor = ""
        if r.get("error"):
            cell, floor = "error: " + r["error"][:80], "experimental" if experimental else "FAIL"
            failed += [] if experimental else [key]
        elif experimental:
            cell, floor = f"{v:.1f} {unit}", "experimental"
        else:
            cell = f"{v:.1f} {unit}"
            if key in RATIO_FLOOR:
                ok = ratio is not None and ratio >= RATIO_FLOOR[key]
                floor = f">= {RATIO_FLOOR[key]}x torch: {'ok' if ok else 'FAIL'}"
                failed += [] if ok else [key]
            elif r["op"] in MEMORY_FLOOR:
                ok = (r.get("pct_of_ceiling") or 0) >= 60
                floor = f">= 60% copy: {'ok' if ok else 'FAIL'}"
                failed += [] if ok else [key]
        pct = f"{r['pct_of_ceiling']:.0f}%" if r.get("pct_of_ceiling") is not None else ""
        tcell = f"{tv:.1f} {unit}" if tv else (t.get("error", "") if t else "")
        rcell = f"{ratio:.2f}" if ratio else ""
        print(f"| {r['op']} | {r['case']} | {cell} | {pct} | {tcell} | {rcell} | {floor} |")
    ts = torch.get("train_step", {})
    if step or ts:
        s_tok = step.get("tokens_per_s") if step else None
        t_tok = ts.get("tokens_per_s")
        ratio = f"{s_tok / t_tok:.2f}" if (s_tok and t_tok) else ""
        print(f"| train step | {ts.get('config', {})} | {s_tok or step} tok/s | | "
              f"{t_tok or ts.get('error')} tok/s | {ratio} | |")
    if not solar.get("results"):
        print("\nFloors: not checked (no Solar results)")
    else:
        print(f"\nFloors: {'all met' if not failed else 'NOT met: ' + ', '.join(map(str, failed))}")


if __name__ == "__main__":
    main()
