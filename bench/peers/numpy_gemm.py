#!/usr/bin/env python3
"""numpy (OpenBLAS/MKL) SGEMM timings: the CPU peer of bench/gemm.js.

Reads one JSON object on stdin (or as argv[1]):
  {"shapes": [{"M": 2048, "N": 2048, "K": 2048, "transA": false, "transB": false}, ...],
   "warmup": 2, "warmupSeconds": 0, "minReps": 5, "minSeconds": 0.5, "freshOutput": true}
and prints one JSON object on stdout:
  {"peer": "numpy", "version": "...", "blas": "...", "threads": "<OPENBLAS_NUM_THREADS>",
   "results": [{"M", "N", "K", "transA", "transB", "times": [s, ...], "median": s, "gflops": ...}, ...]}

freshOutput (default true) makes every call allocate its result (np.matmul(a, b)), as fc.gemm does;
false reuses one output array (out=). The thread count comes from the environment (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS),
which the caller sets before this process starts; BLAS reads it only at load time. op(A) and op(B)
are transposed views, so numpy passes transpose flags to sgemm instead of copying.
"""
import json
import os
import sys
import time


def blas_name(np):
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older numpy: no mode="dicts"
        return "unknown"


def main():
    raw = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()
    req = json.loads(raw)
    import numpy as np

    warmup = int(req.get("warmup", 2))
    warmup_seconds = float(req.get("warmupSeconds", 0))
    min_reps = int(req.get("minReps", 5))
    min_seconds = float(req.get("minSeconds", 0.5))
    fresh = bool(req.get("freshOutput", True))
    rng = np.random.default_rng(1)
    out = []
    for s in req["shapes"]:
        M, N, K = int(s["M"]), int(s["N"]), int(s["K"])
        ta, tb = bool(s.get("transA", False)), bool(s.get("transB", False))
        a = rng.uniform(-1, 1, (K, M) if ta else (M, K)).astype(np.float32)
        b = rng.uniform(-1, 1, (N, K) if tb else (K, N)).astype(np.float32)
        opa = a.T if ta else a
        opb = b.T if tb else b
        c = np.empty((M, N), dtype=np.float32)

        def call(opa=opa, opb=opb, c=c):
            if fresh:
                return np.matmul(opa, opb)
            return np.matmul(opa, opb, out=c)

        w0 = time.perf_counter()
        done = 0
        while done < warmup or (time.perf_counter() - w0 < warmup_seconds and done < 1000):
            call()
            done += 1
        times = []
        start = time.perf_counter()
        while len(times) < min_reps or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
            if len(times) >= 1000:
                break
        st = sorted(times)
        median = st[len(st) // 2] if len(st) % 2 else 0.5 * (st[len(st) // 2 - 1] + st[len(st) // 2])
        out.append({"M": M, "N": N, "K": K, "transA": ta, "transB": tb, "freshOutput": fresh, "times": times,
                    "median": median,
                    "gflops": 2.0 * M * N * K / median / 1e9})
    threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or ""
    json.dump({"peer": "numpy", "version": np.__version__, "blas": blas_name(np), "threads": threads,
               "results": out}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
