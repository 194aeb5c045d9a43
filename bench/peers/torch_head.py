"""PyTorch eager peer for bench/heads.js: normalize -> linear -> ArcFace margin -> cross entropy.

Reads JSON on stdin: {"shapes": [{"B", "C", "D"}], "threads", "warmup", "minReps", "minSeconds",
"device": "cpu"|"cuda", "autocast": bool}; prints {"version", "device", "results": [{"medianSeconds",
"extraBytes", ...}]}. On CUDA, extraBytes is torch.cuda.max_memory_allocated() during the steps minus
what the parameters, their gradients and the inputs hold (the head's extra memory); null on the CPU.
With autocast the GEMM runs in bf16 (torch.autocast) and the margin / softmax in fp32, the way
arcface_torch's users run it.
The margin is the exact ArcFace with the th/mm fallback (s=64, m=0.5), written with autograd the way a
user would: F.normalize, F.linear, torch.where on the target column, F.cross_entropy.
"""
import json
import math
import sys
import time


def main():
    req = json.load(sys.stdin)
    import torch
    import torch.nn.functional as F

    if req.get("threads"):
        torch.set_num_threads(int(req["threads"]))
    device = req.get("device", "cpu")
    s, m = 64.0, 0.5
    cos_m, sin_m = math.cos(m), math.sin(m)
    th, mm = math.cos(math.pi - m), math.sin(math.pi - m) * m
    results = []
    for shape in req.get("shapes", []):
        B, C, D = shape["B"], shape["C"], shape["D"]
        g = torch.Generator().manual_seed(0)
        x = torch.randn(B, D, generator=g).to(device).requires_grad_(True)
        w = (torch.randn(C, D, generator=g) * 0.01).to(device).requires_grad_(True)
        labels = torch.randint(0, C, (B,), generator=g).to(device)

        def step():
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bool(req.get("autocast"))):
                cos = F.linear(F.normalize(x), F.normalize(w)).float().clamp(-1 + 1e-6, 1 - 1e-6)
            target = cos.gather(1, labels[:, None])
            sin = torch.sqrt(1.0 - target * target)
            phi = torch.where(target > th, target * cos_m - sin * sin_m, target - mm)
            logits = cos.scatter(1, labels[:, None], phi) * s
            loss = F.cross_entropy(logits, labels)
            x.grad = None
            w.grad = None
            loss.backward()
            if device == "cuda":
                torch.cuda.synchronize()

        for _ in range(int(req.get("warmup", 2))):
            step()
        base = None
        if device == "cuda":
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        times = []
        t_end = time.perf_counter() + float(req.get("minSeconds", 1.0))
        while len(times) < int(req.get("minReps", 5)) or time.perf_counter() < t_end:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        times.sort()
        extra = None
        if device == "cuda":
            extra = torch.cuda.max_memory_allocated() - base
        results.append({"B": B, "C": C, "D": D, "medianSeconds": times[len(times) // 2], "reps": len(times),
                         "extraBytes": extra, "autocast": bool(req.get("autocast"))})
        del x, w, labels
        if device == "cuda":
            torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    print(json.dumps({"version": torch.__version__, "device": name, "blas": blas_rate(torch), "results": results}))


def blas_rate(torch):
    """The peer's own fp32 matmul rate (2048^3), so a slow BLAS build is visible next to its times."""
    if torch.cuda.is_available():
        return None
    a = torch.randn(2048, 2048)
    for _ in range(2):
        a @ a
    t0 = time.perf_counter()
    for _ in range(3):
        a @ a
    dt = (time.perf_counter() - t0) / 3
    return "matmul 2048^3 %.0f GFLOP/s" % (2 * 2048 ** 3 / dt / 1e9)


if __name__ == "__main__":
    main()
