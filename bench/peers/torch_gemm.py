#!/usr/bin/env python3
"""torch.matmul on CUDA: the GPU peer of bench/gemm.js (--device cuda).

Reads one JSON object on stdin (or as argv[1]):
  {"shapes": [{"M", "N", "K", "transA", "transB"}, ...], "precision": "fp32" | "tf32",
   "warmup": 3, "minReps": 10, "minSeconds": 1.0}
and prints {"peer": "torch", "version", "cuda": bool, "device", "results": [{..., "median", "gflops"}]}.
fp32 disables TF32 (torch.backends.cuda.matmul.allow_tf32 = False); tf32 enables it. Each timed call
is matmul + torch.cuda.synchronize(), timed with perf_counter, like fc.gemm's awaited call.
"""
import json
import sys
import time


def main():
    raw = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()
    req = json.loads(raw)
    import torch

    cuda = torch.cuda.is_available()
    info = {"peer": "torch", "version": torch.__version__, "cuda": cuda,
            "device": torch.cuda.get_device_name(0) if cuda else None, "results": []}
    if not cuda or not req.get("shapes"):
        json.dump(info, sys.stdout)
        sys.stdout.write("\n")
        return
    torch.backends.cuda.matmul.allow_tf32 = req.get("precision", "fp32") == "tf32"
    warmup = int(req.get("warmup", 3))
    min_reps = int(req.get("minReps", 10))
    min_seconds = float(req.get("minSeconds", 1.0))
    dev = torch.device("cuda:0")
    g = torch.Generator(device=dev).manual_seed(1)
    for s in req["shapes"]:
        M, N, K = int(s["M"]), int(s["N"]), int(s["K"])
        ta, tb = bool(s.get("transA", False)), bool(s.get("transB", False))
        a = torch.rand((K, M) if ta else (M, K), device=dev, generator=g) * 2 - 1
        b = torch.rand((N, K) if tb else (K, N), device=dev, generator=g) * 2 - 1
        opa = a.t() if ta else a
        opb = b.t() if tb else b
        for _ in range(warmup):
            torch.matmul(opa, opb)
        torch.cuda.synchronize()
        times = []
        start = time.perf_counter()
        while len(times) < min_reps or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            torch.matmul(opa, opb)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            if len(times) >= 2000:
                break
        st = sorted(times)
        median = st[len(st) // 2]
        info["results"].append({"M": M, "N": N, "K": K, "transA": ta, "transB": tb, "times": times,
                                "median": median, "gflops": 2.0 * M * N * K / median / 1e9})
    json.dump(info, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
