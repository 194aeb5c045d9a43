"""PyTorch peer for bench/backbone_zoo.js --device cuda: the second backbone batch trained and run on a GPU.

The models are the independent plain-torch.nn implementations of test/fixtures/gen_backbone_zoo_torch.py
(written from SPEC-BACKBONES.md; imported from the repository checkout), in float32 with torch's
default init. PyTorch is run the way its users run it fast:
  - mixed precision: torch.autocast(bfloat16) over the whole forward (training) and
    torch.autocast(float16) under torch.inference_mode() (inference);
  - the ViTs' attention through F.scaled_dot_product_attention (flash / memory-efficient kernels) when
    this torch has it (>= 2.0), else the reference's explicit softmax(QK^T)V;
  - cudnn.benchmark on; variants with channels_last for the CNNs ("_cl"), the fastest being the peer.
Modes, at the requested batch and 112x112:
  train  zero_grad(set_to_none) -> forward -> backward of a fixed random dL/dy [N, 512] (no optimizer
         step, no input gradient); samples/s.
  infer  eval() forward; faces/s.
Timing: `warmup` untimed steps, `reps` timed steps bracketed by CUDA events; median/min/max seconds;
peakBytes = torch.cuda.max_memory_allocated over the case. A case over `budgetSeconds`, or out of
memory, is reported with `skipped`.

Input: JSON on stdin {"cases": [{"model": "vit_s", "mode": "train", "batch": 128, "variant":
"amp_bf16"}, ...], "warmup": 3, "reps": 10, "budgetSeconds": 120}. Variants: amp_bf16, amp_fp16,
fp32, tf32, each optionally with "_cl". Output: one JSON line {"torch", "cuda", "cudnn", "device",
"sdpa", "results": [...]}; exits with status 2 and an "error" field without torch/CUDA/the reference.
"""
import importlib.util
import json
import os
import sys
import time


def fail(message):
    print(json.dumps({"error": message}))
    sys.stderr.write("torch_zoo_gpu.py: %s\n" % message)
    sys.exit(2)


def load_reference():
    ref = os.path.join(os.path.dirname(__file__), "..", "..", "test", "fixtures", "gen_backbone_zoo_torch.py")
    if not os.path.exists(ref):
        fail("%s is missing (run the benchmark from a repository checkout)" % ref)
    spec = importlib.util.spec_from_file_location("zoo_reference", ref)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def use_sdpa(torch, Z):
    """Replaces the reference Attention's explicit softmax by F.scaled_dot_product_attention."""
    F = torch.nn.functional
    if not hasattr(F, "scaled_dot_product_attention"):
        return False

    def forward(self, x):
        b, n, d = x.shape
        dh = d // self.heads
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, dh).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))

    Z.Attention.forward = forward
    return True


def main():
    req = json.loads(sys.stdin.read() or "{}")
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        fail("torch is not importable: %s" % e)
    if not torch.cuda.is_available():
        fail("torch.cuda.is_available() is False")
    Z = load_reference()
    sdpa = use_sdpa(torch, Z)
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    start = time.perf_counter()
    budget = float(req.get("budgetSeconds", 120))
    warmup, reps = int(req.get("warmup", 3)), int(req.get("reps", 10))
    results = []
    for case in req.get("cases", []):
        name, mode, batch, variant = case["model"], case["mode"], int(case["batch"]), case["variant"]
        rec = {"model": name, "mode": mode, "batch": batch, "variant": variant}
        if time.perf_counter() - start > budget:
            rec["skipped"] = "over the %.0f s budget" % budget
            results.append(rec)
            continue
        base = variant[:-3] if variant.endswith("_cl") else variant
        fmt = torch.channels_last if variant.endswith("_cl") else torch.contiguous_format
        strict = base == "fp32"
        torch.backends.cudnn.allow_tf32 = not strict
        torch.backends.cuda.matmul.allow_tf32 = not strict
        amp = {"amp_bf16": torch.bfloat16, "amp_fp16": torch.float16}.get(base)
        try:
            torch.manual_seed(0)
            model = Z.BUILDERS[name]().to(dev).to(memory_format=fmt)
            rec["params"] = sum(p.numel() for p in model.parameters())
            x = torch.randn(batch, 3, 112, 112, device=dev).contiguous(memory_format=fmt)
            g = torch.randn(batch, 512, device=dev)
            if mode == "train":
                model.train()

                def step():
                    model.zero_grad(set_to_none=True)
                    with torch.autocast("cuda", dtype=amp, enabled=amp is not None):
                        y = model(x)
                    y.float().backward(g)
            else:
                model.eval()

                def step():
                    with torch.inference_mode(), torch.autocast("cuda", dtype=amp, enabled=amp is not None):
                        model(x)
            torch.cuda.reset_peak_memory_stats()
            for _ in range(warmup):
                step()
            torch.cuda.synchronize()
            times = []
            for _ in range(reps):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                step()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) / 1e3)
            times.sort()
            rec.update(median=times[len(times) // 2], min=times[0], max=times[-1], reps=reps,
                       peakBytes=torch.cuda.max_memory_allocated())
        except torch.cuda.OutOfMemoryError if hasattr(torch.cuda, "OutOfMemoryError") else RuntimeError as e:  # noqa: E501
            rec["skipped"] = "out of memory: %s" % str(e).split("\n")[0][:160]
            torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001
            rec["error"] = "%s: %s" % (type(e).__name__, str(e).split("\n")[0][:200])
        finally:
            model = None
            torch.cuda.empty_cache()
        results.append(rec)
    print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                      "device": torch.cuda.get_device_name(0), "sdpa": sdpa, "results": results}))


if __name__ == "__main__":
    main()
