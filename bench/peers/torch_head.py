"""PyTorch eager peer for bench/heads.js: normalize -> linear -> ArcFace margin -> cross entropy.

Reads JSON on stdin: {"shapes": [{"B", "C", "D"}], "threads", "warmup", "minReps", "minSeconds",
"device": "cpu"|"cuda", "autocast": bool}; prints {"version", "results": [{"medianSeconds", ...}]}.
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
        times = []
        t_end = time.perf_counter() + float(req.get("minSeconds", 1.0))
        while len(times) < int(req.get("minReps", 5)) or time.perf_counter() < t_end:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        times.sort()
        results.append({"B": B, "C": C, "D": D, "medianSeconds": times[len(times) // 2], "reps": len(times)})
    print(json.dumps({"version": torch.__version__, "results": results}))


if __name__ == "__main__":
    main()
