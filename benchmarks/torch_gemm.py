"""float32 GEMM rate of PyTorch on this machine (CPU), for the roofline-style floor in
docs/benchmarks.md: torch.matmul on a square 1024^3 product and on the decoder head's
shape of the default model (128 cells x 128 hidden -> 2000 genes), with the given number
of threads, best of a few calls. Prints one line: GEMM_JSON {...} (GFLOP/s per shape).

    python3 benchmarks/torch_gemm.py --threads 2
"""

import argparse
import json
import time


def rate(torch, m, k, n, reps):
    a, b = torch.rand(m, k), torch.rand(k, n)
    c = a @ b  # warm-up (threads, allocator)
    calls = max(1, int(2e9 / (2.0 * m * k * n)))  # about 2 GFLOP per timing
    best = 1e30
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            c = torch.matmul(a, b)
        best = min(best, (time.perf_counter() - t0) / calls)
    del c
    return 2.0 * m * k * n / best / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(),
           "square_1024": rate(torch, 1024, 1024, 1024, a.reps),
           "model_128x128x2000": rate(torch, 128, 128, 2000, a.reps)}
    print("GEMM_JSON " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
