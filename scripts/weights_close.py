#!/usr/bin/env python3
"""Whether two model folders hold the same weights within bf16 rounding (scripts/gpu-check.sh
compares a plain GPU run with the same run as a distributed world of one this way).

Every tensor of the *.safetensors files at the top of folder A must be in B's with the same
dtype and shape, and |a - b| <= rtol * max(|a|, |b|) + atol element by element (default rtol
2^-6, four bf16 steps; atol 1e-5). Prints one line per tensor that differs, then a verdict with
how many tensors are bitwise equal. Exit 0 when close, 1 when not, 2 when a folder cannot be
read. Standard library only: safetensors is an 8-byte header length, a JSON header and raw
little-endian data, and bf16 is the top half of an f32.
"""
import argparse
import array
import json
import math
import struct
import sys
from pathlib import Path

WIDTH = {"F32": 4, "BF16": 2, "F16": 2, "F64": 8}


def tensors(folder):
    """name -> (dtype, shape, raw bytes) over the folder's top-level *.safetensors files."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder}: no *.safetensors file")
    out = {}
    for f in files:
        blob = f.read_bytes()
        (n,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8 : 8 + n])
        base = 8 + n
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            lo, hi = meta["data_offsets"]
            out[name] = (meta["dtype"], tuple(meta["shape"]), blob[base + lo : base + hi])
    return out


def floats(dtype, raw):
    if dtype == "F32":
        return array.array("f", raw)
    if dtype == "F64":
        return array.array("d", raw)
    if dtype == "BF16":
        wide = bytearray(len(raw) * 2)
        wide[2::4] = raw[0::2]
        wide[3::4] = raw[1::2]
        return array.array("f", bytes(wide))
    if dtype == "F16":
        return array.array("f", [struct.unpack("<e", raw[i : i + 2])[0] for i in range(0, len(raw), 2)])
    raise ValueError(f"dtype {dtype} is not a float type")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rtol", type=float, default=2.0**-6)
    ap.add_argument("--atol", type=float, default=1e-5)
    args = ap.parse_args()
    try:
        ta, tb = tensors(args.a), tensors(args.b)
    except (OSError, ValueError, KeyError, struct.error) as e:
        print(f"cannot read the weights: {e}")
        return 2
    bad, equal, worst = [], 0, 0.0
    for name in sorted(set(ta) | set(tb)):
        if name not in ta or name not in tb:
            bad.append(f"{name}: only in {args.a if name in ta else args.b}")
            continue
        (da, sa, ra), (db, sb, rb) = ta[name], tb[name]
        if (da, sa) != (db, sb):
            bad.append(f"{name}: {da} {list(sa)} vs {db} {list(sb)}")
            continue
        if ra == rb:
            equal += 1
            continue
        fa, fb = floats(da, ra), floats(db, rb)
        over, rel = 0, 0.0
        for x, y in zip(fa, fb):
            scale = max(abs(x), abs(y))
            d = abs(x - y)
            if not (d <= args.rtol * scale + args.atol) or math.isnan(x) != math.isnan(y):
                over += 1
            if scale > 0:
                rel = max(rel, d / scale)
        worst = max(worst, rel)
        line = f"{name}: max relative difference {rel:.3g}"
        if over:
            bad.append(f"{line}, {over} of {len(fa)} elements past the tolerance")
        else:
            print(f"    {line} (within tolerance)")
    for b in bad:
        print(f"    {b}")
    total = len(set(ta) | set(tb))
    verdict = "close" if not bad else "DIFFERENT"
    print(f"weights {verdict}: {equal} of {total} tensors bitwise equal, worst relative difference {worst:.3g} "
          f"(rtol {args.rtol:g}, atol {args.atol:g})")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
