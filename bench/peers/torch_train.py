#!/usr/bin/env python3
"""PyTorch peer of `npm run bench -- train` (CUDA rows): one arcface_torch-style training step.

The step: IResNet (bench/peers/torch_backbone.py's independent model) → embeddings → FC weight
normalized, cos θ, ArcFace margin (s 64, m 0.5) → cross entropy → backward → clip_grad_norm_(backbone,
5) → SGD (momentum 0.9, weight decay 5e-4) on backbone and FC, under torch.autocast when `amp`:
`dtype` 'bf16' (no scaler) or 'fp16' with torch.cuda.amp.GradScaler as arcface_torch (scale, unscale_,
clip, step, update); channels_last when `cl`.
Median of timed steps after warm-up, CUDA events, synchronized.

Input: JSON on stdin {"cases": [{"network": "r50", "batch": 128, "classes": 93431, "amp": true,
"cl": true}], "warmup": 3, "iters": 10, "device": "cuda"}. Output: one JSON line
{"device", "torch", "cudnn", "results": [{..., "ms", "samplesPerSecond"} | {..., "error"}]}.
Without torch or CUDA: {"error": ...} and exit status 2.
"""
import json
import math
import os
import sys


def fail(message):
    print(json.dumps({"error": message}))
    sys.exit(2)


def main():
    try:
        req = json.loads(sys.stdin.read() or "{}")
    except ValueError as e:
        fail("stdin is not JSON: %s" % e)
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001
        fail("cannot import torch: %s" % e)
    device = req.get("device", "cuda")
    if device == "cuda" and not torch.cuda.is_available():
        fail("torch.cuda.is_available() is False")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_backbone import build_iresnet  # noqa: E402

    depths = {"r18": 18, "r34": 34, "r50": 50, "r100": 100}
    results = []
    for case in req.get("cases", []):
        out = dict(case)
        try:
            torch.manual_seed(0)
            model = build_iresnet(torch, depths[case["network"]], embedding=512).to(device)
            weight = torch.nn.Parameter(torch.randn(case["classes"], 512, device=device) * 0.01)
            if case.get("cl"):
                model = model.to(memory_format=torch.channels_last)
            params = [{"params": model.parameters()}, {"params": [weight]}]
            opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
            B = case["batch"]
            x = torch.randn(B, 3, 112, 112, device=device)
            if case.get("cl"):
                x = x.to(memory_format=torch.channels_last)
            labels = torch.randint(0, case["classes"], (B,), device=device)
            s, m = 64.0, 0.5

            half = case.get("dtype") == "fp16"
            scaler = torch.cuda.amp.GradScaler(enabled=half and bool(case.get("amp")))

            def step():
                dt = torch.float16 if half else torch.bfloat16
                with torch.autocast(device_type=device, dtype=dt, enabled=bool(case.get("amp"))):
                    emb = model(x)
                    logits = F.linear(F.normalize(emb.float()), F.normalize(weight)).clamp(-1, 1)
                target = logits.gather(1, labels[:, None])
                theta = torch.acos(target)
                logits = logits.scatter(1, labels[:, None], torch.cos(theta + m))
                loss = F.cross_entropy(logits * s, labels)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5)
                scaler.step(opt)
                scaler.update()

            for _ in range(req.get("warmup", 3)):
                step()
            times = []
            for _ in range(req.get("iters", 10)):
                if device == "cuda":
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record()
                    step()
                    b.record()
                    torch.cuda.synchronize()
                    times.append(a.elapsed_time(b))
                else:
                    import time
                    t0 = time.perf_counter()
                    step()
                    times.append(1000 * (time.perf_counter() - t0))
            times.sort()
            ms = times[len(times) // 2]
            out.update(ms=ms, samplesPerSecond=B / (ms / 1000))
            del model, weight, opt
            if device == "cuda":
                torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001
            out["error"] = str(e).split("\n")[0][:300]
        results.append(out)
    info = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version() if device == "cuda" else None,
        "results": results,
    }
    print(json.dumps(info))


if __name__ == "__main__":
    main()
