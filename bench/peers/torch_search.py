#!/usr/bin/env python3
"""PyTorch exact search on CUDA: topk(q @ G^T), the GPU peer of bench/search.js (--device cuda).

Reads one JSON object on stdin:
  {"N": int, "D": int, "Qs": [int, ...], "k": int, "storage": "f32" | "f16",
   "warmup": 2, "minReps": 5, "minSeconds": 1.0}
keeps a gallery of N random unit rows on cuda:0 (float32, or float16 for f16 storage), and times
torch.topk(q @ G.T, k) (the full Q x N score matrix, then top-k) + synchronize per call. Large Q runs
in blocks of queries so the score matrix fits in memory. Prints {"peer": "torch", "version",
"device", "results": [{"Q", "medianSeconds", "queriesPerSecond"}]}.
"""
import json
import sys
import time


def main():
    req = json.loads(sys.stdin.read())
    import torch

    cuda = torch.cuda.is_available()
    out = {"peer": "torch", "version": torch.__version__, "cuda": cuda,
           "device": torch.cuda.get_device_name(0) if cuda else None, "results": []}
    if not cuda or not req.get("Qs"):
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda:0")
    N, D, k = int(req["N"]), int(req["D"]), int(req["k"])
    dtype = torch.float16 if req.get("storage") == "f16" else torch.float32
    g = torch.Generator(device=dev).manual_seed(1)
    G = torch.randn((N, D), device=dev, generator=g)
    G = (G / G.norm(dim=1, keepdim=True)).to(dtype)
    block = max(1, (1 << 30) // (N * 4))  # at most ~1 GiB of scores at a time
    for Q in req["Qs"]:
        q = torch.randn((int(Q), D), device=dev, generator=g)
        q = (q / q.norm(dim=1, keepdim=True)).to(dtype)

        def step():
            for s in range(0, q.shape[0], block):
                torch.topk((q[s:s + block] @ G.T).float(), k, dim=1)
            torch.cuda.synchronize()

        for _ in range(int(req.get("warmup", 2))):
            step()
        times = []
        start = time.perf_counter()
        while len(times) < int(req.get("minReps", 5)) or time.perf_counter() - start < float(req.get("minSeconds", 1.0)):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
            if len(times) >= 200:
                break
        times.sort()
        med = times[len(times) // 2]
        out["results"].append({"Q": int(Q), "medianSeconds": med, "queriesPerSecond": Q / med})
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
