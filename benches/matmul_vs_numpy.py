"""Times numpy's f32 1024x1024x1024 matmul side by side with Solar's.

Run by matmul_vs_numpy.sh, which sets numpy's BLAS thread count and passes the solar-train
binary and the thread count. The two alternate for a few rounds, so load from anything else on
the machine hits both alike; the verdict uses the median of the per-round ratios. Prints both
GFLOP/s, the ratio and which BLAS numpy uses, and exits 1 if Solar is below the issue's bar
(0.7x numpy).
"""

import json
import statistics
import subprocess
import sys
import time

import numpy as np

N = 1024
FLOPS = 2.0 * N * N * N
BAR = 0.7


def blas_description():
    """Which BLAS numpy calls, and with how many threads (threadpoolctl knows best)."""
    try:
        from threadpoolctl import threadpool_info

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            p = pools[0]
            return "{} {} ({}, {} threads)".format(
                p.get("internal_api"), p.get("version"), p.get("architecture"), p.get("num_threads")
            )
    except ImportError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return "{} {}".format(blas.get("name"), blas.get("version"))
    except Exception:  # older numpy: no dict mode
        return "unknown (install threadpoolctl to see)"


def numpy_gflops(a, b, repeats=30):
    for _ in range(3):  # warm-up: thread pool start, page faults
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return FLOPS / statistics.median(times) / 1e9


def solar_gflops(binary, threads, repeats=30):
    args = [binary, "bench", "--device", "cpu", "--op", "matmul", "--json"]
    args += ["--threads", str(threads), "--repeats", str(repeats)]
    report = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    square = [r for r in report["results"] if r["shape"] == [N, N, N]]
    if not square:
        sys.exit("no [1024, 1024, 1024] matmul row in solar-train's output")
    return square[0]["tflops"] * 1e3


def main():
    binary, threads, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (N, N)).astype(np.float32)
    b = rng.uniform(-1, 1, (N, N)).astype(np.float32)
    print("f32 matmul 1024x1024x1024, {} threads, {} rounds".format(threads, rounds))
    print("  numpy BLAS: {}".format(blas_description()))
    solar, numpy, ratios = [], [], []
    for i in range(rounds):
        solar.append(solar_gflops(binary, threads))
        numpy.append(numpy_gflops(a, b))
        ratios.append(solar[-1] / numpy[-1])
        print("  round {}: Solar {:6.1f} GFLOP/s, numpy {:6.1f} GFLOP/s, ratio {:.2f}".format(
            i + 1, solar[-1], numpy[-1], ratios[-1]))
    ratio = statistics.median(ratios)
    print("  Solar: {:8.1f} GFLOP/s (median)".format(statistics.median(solar)))
    print("  numpy: {:8.1f} GFLOP/s (median)".format(statistics.median(numpy)))
    print("  ratio: {:8.2f}  (median of rounds; bar: {})".format(ratio, BAR))
    sys.exit(0 if ratio >= BAR else 1)


if __name__ == "__main__":
    main()
