"""PyTorch eager peer for bench/backbone.js: an independent IResNet (SPEC section 8.1), timed on CUDA.

Written from the spec, not from facecuda's code: stem conv3x3(3->64) -> BN -> PReLU; four stages of
IBasicBlock (BN -> conv3x3 s1 -> BN -> PReLU -> conv3x3 with the stage stride -> BN, plus a conv1x1 +
BN downsample on every stage's first block, no activation after the add), every stage's first block
with stride 2; head BN2d(512) -> flatten -> Dropout -> Linear(512*7*7 -> 512) -> BatchNorm1d(512)
with its weight frozen at 1. BN eps 1e-5, momentum 0.1; convs without bias.

Two modes, each at the requested batch and 112x112 input:
  train  one training step: zero_grad(set_to_none) -> forward -> backward of a fixed random upstream
         gradient dL/dy [N, 512] (no optimizer step, no input gradient), cudnn.benchmark on as in
         arcface_torch's train_v2.py. Reported as samples/s.
  infer  eval() forward under torch.inference_mode(). Reported as faces/s.
Variants (name = precision, plus "_cl" for channels_last input and weights):
  fp32      strict fp32: cudnn.allow_tf32 and cuda.matmul.allow_tf32 both False
  tf32      PyTorch's default for convolutions: TF32 tensor cores (allow_tf32 True)
  amp_bf16  torch.autocast(bfloat16) over the conv trunk; fc and features in fp32 (arcface_torch's
  amp_fp16  fp16=True layout: the trunk under autocast, `self.fc(x.float())` outside it)
  half      inference only: model.half() and a half input, everything fp16
e.g. amp_bf16_cl, half_cl.

Timing: `warmup` untimed steps, then `reps` timed steps, each bracketed by CUDA events (on the CPU:
perf_counter); median, min and max in seconds. peakBytes = torch.cuda.max_memory_allocated() over the
case (the model, its grads, the activations). A case that runs out of memory, or that would start
after `budgetSeconds`, is reported with a `skipped` reason instead of figures.

Input: JSON on stdin when run without arguments (the way bench/harness.js runPeer runs peers):
  {"device": "cuda", "cases": [{"model": "r50", "mode": "train", "batch": 128, "variant": "fp32"}, ...],
   "warmup": 3, "reps": 10, "inferWarmup": 3, "inferReps": 10, "budgetSeconds": 90, "inputSize": 112}
or the command-line flags below (--help). Output: one JSON line {"version", "torch", "cuda", "cudnn",
"device", "results": [...]}. When torch is missing or CUDA is unavailable it prints one JSON line with
an "error" field (and the reason on stderr) and exits with status 2.
"""
import argparse
import json
import sys
import time

LAYERS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 14, 3], 100: [3, 13, 30, 3], 200: [6, 26, 60, 6]}
TRAIN_VARIANTS = ("fp32", "tf32", "amp_bf16", "amp_fp16")
INFER_VARIANTS = TRAIN_VARIANTS + ("half",)


def fail(message, **extra):
    print(json.dumps({"error": message, **extra}))
    sys.stderr.write("torch_backbone.py: %s\n" % message)
    sys.exit(2)


def build_iresnet(torch, depth, embedding=512, dropout=0.0, input_size=112):
    nn = torch.nn

    def conv3x3(cin, cout, stride=1):
        return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
            self.conv1 = conv3x3(cin, cout)
            self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
            self.prelu = nn.PReLU(cout)
            self.conv2 = conv3x3(cout, cout, stride)  # the stride sits on the second conv
            self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

        def forward(self, x):
            out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
            shortcut = x if self.downsample is None else self.downsample(x)
            return out + shortcut  # no activation after the add

    class IResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.amp_dtype = None  # set per case: the trunk runs under autocast, fc/features in fp32
            self.conv1 = conv3x3(3, 64)
            self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
            self.prelu = nn.PReLU(64)
            cin = 64
            stages = []
            for width, blocks in zip((64, 128, 256, 512), LAYERS[depth]):
                mods = [Block(cin, width, 2)] + [Block(width, width, 1) for _ in range(blocks - 1)]
                stages.append(nn.Sequential(*mods))
                cin = width
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
            self.dropout = nn.Dropout(p=dropout)
            side = input_size // 16
            self.fc = nn.Linear(512 * side * side, embedding)
            self.features = nn.BatchNorm1d(embedding, eps=1e-5)
            nn.init.constant_(self.features.weight, 1.0)
            self.features.weight.requires_grad = False
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, 0, 0.1)

        def trunk(self, x):
            x = self.prelu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.dropout(torch.flatten(self.bn2(x), 1))

        def forward(self, x):
            if self.amp_dtype is None:
                return self.features(self.fc(self.trunk(x)))
            with torch.autocast(device_type=x.device.type, dtype=self.amp_dtype):
                x = self.trunk(x)
            return self.features(self.fc(x.float()))

    return IResNet()


def parse_variant(variant, mode):
    base = variant[:-3] if variant.endswith("_cl") else variant
    allowed = INFER_VARIANTS if mode == "infer" else TRAIN_VARIANTS
    if base not in allowed:
        raise ValueError("unknown %s variant %r (have %s, each optionally with _cl)" % (mode, variant, ", ".join(allowed)))
    return base, variant.endswith("_cl")


def run_case(torch, case, req, device, models):
    mode = case["mode"]
    depth = int(str(case["model"]).lstrip("r"))
    batch = int(case["batch"])
    base, channels_last = parse_variant(case["variant"], mode)
    size = int(req.get("inputSize", 112))
    cuda = device == "cuda"
    strict = base == "fp32"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = not strict
        torch.backends.cuda.matmul.allow_tf32 = not strict
    key = (depth, size)
    if key not in models:
        torch.manual_seed(0)
        models.clear()  # one model at a time: r100 and its optimizer-free grads stay small anyway
        models[key] = build_iresnet(torch, depth, input_size=size).to(device)
    model = models[key]
    model.float()
    model.amp_dtype = {"amp_bf16": torch.bfloat16, "amp_fp16": torch.float16}.get(base)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=g).to(device).contiguous(memory_format=fmt)
    if base == "half":
        model.half()
        x = x.half()
    params = sum(p.numel() for p in model.parameters())
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    if mode == "train":
        model.train()
        dy = torch.randn(batch, 512, generator=g).to(device)

        def step():
            model.zero_grad(set_to_none=True)
            model(x).backward(dy)

        warmup, reps = int(req.get("warmup", 3)), int(req.get("reps", 10))
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                model(x)

        warmup, reps = int(req.get("inferWarmup", req.get("warmup", 3))), int(req.get("inferReps", req.get("reps", 10)))

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(max(1, reps)):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2] if len(times) % 2 else 0.5 * (times[len(times) // 2 - 1] + times[len(times) // 2])
    peak = torch.cuda.max_memory_allocated() if cuda else None
    if base == "half":
        model.float()
    return {
        "medianSeconds": median, "minSeconds": times[0], "maxSeconds": times[-1], "reps": len(times), "warmup": warmup,
        "samplesPerSecond": batch / median, "peakBytes": peak, "params": params,
        "autocast": {"amp_bf16": "bfloat16", "amp_fp16": "float16"}.get(base), "channelsLast": channels_last,
        "tf32": (not strict) if cuda else None,
    }


def run(req):
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - any import failure means no peer
        fail("cannot import torch: %s" % e)
    device = req.get("device", "cuda")
    if device not in ("cuda", "cpu"):
        fail("device must be 'cuda' or 'cpu', got %r" % device)
    info = {"version": torch.__version__, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if device == "cuda":
        if not torch.cuda.is_available():
            fail("CUDA is not available to torch %s (built for CUDA %s)" % (torch.__version__, torch.version.cuda), **info)
        info["device"] = torch.cuda.get_device_name(0)
    else:
        if req.get("threads"):
            torch.set_num_threads(int(req["threads"]))
        info["device"] = "cpu (%d threads)" % torch.get_num_threads()
    budget = float(req.get("budgetSeconds", 0) or 0)
    t_start = time.perf_counter()
    models = {}
    results = []
    for case in req.get("cases", []):
        out = {"model": case.get("model"), "mode": case.get("mode"), "batch": case.get("batch"), "variant": case.get("variant")}
        if budget and time.perf_counter() - t_start > budget:
            out["skipped"] = "time budget of %.0f s spent before this case" % budget
            results.append(out)
            continue
        t0 = time.perf_counter()
        try:
            if out["mode"] not in ("train", "infer"):
                raise ValueError("mode must be 'train' or 'infer', got %r" % out["mode"])
            if int(str(out["model"]).lstrip("r")) not in LAYERS:
                raise ValueError("unknown model %r (have r%s)" % (out["model"], ", r".join(map(str, LAYERS))))
            out.update(run_case(torch, case, req, device, models))
        except Exception as e:  # noqa: BLE001 - report per case, keep going
            msg = str(e).strip().split("\n")[0]
            oom = "out of memory" in msg.lower() or type(e).__name__ == "OutOfMemoryError"
            out["skipped"] = ("out of memory: " if oom else "%s: " % type(e).__name__) + msg[:300]
            models.clear()
            if device == "cuda":
                torch.cuda.empty_cache()
        out["caseSeconds"] = time.perf_counter() - t0
        results.append(out)
    info["results"] = results
    info["seconds"] = time.perf_counter() - t_start
    return info


def csv(kind):
    return lambda s: [kind(v) for v in s.split(",") if v]


def main():
    if len(sys.argv) == 1 and not sys.stdin.isatty():
        text = sys.stdin.read()
        try:
            req = json.loads(text) if text.strip() else {}
        except ValueError as e:
            fail("stdin is not a JSON request: %s" % e)
        if "cases" not in req:
            req = dict(default_request(argparse.Namespace(**DEFAULTS)), **req)
        print(json.dumps(run(req)))
        return
    p = argparse.ArgumentParser(
        description="PyTorch IResNet peer for bench/backbone.js: training-step samples/s and inference faces/s "
                    "(median after warm-up). Run without arguments it reads a JSON request on stdin. "
                    "Prints one JSON line; exits 2 with an 'error' field when torch or CUDA is unavailable.")
    p.add_argument("--device", choices=["cuda", "cpu"], default=DEFAULTS["device"], help="default cuda")
    p.add_argument("--models", type=csv(str), default=DEFAULTS["models"], help="comma list of r18,r34,r50,r100,r200 (default r50,r100)")
    p.add_argument("--train-batches", type=csv(int), default=DEFAULTS["train_batches"], help="default 128,256 (empty: no training)")
    p.add_argument("--infer-batches", type=csv(int), default=DEFAULTS["infer_batches"], help="default 256 (empty: no inference)")
    p.add_argument("--train-variants", type=csv(str), default=DEFAULTS["train_variants"],
                   help="comma list of fp32,tf32,amp_bf16,amp_fp16 (+_cl for channels_last); default fp32,amp_bf16,amp_bf16_cl")
    p.add_argument("--infer-variants", type=csv(str), default=DEFAULTS["infer_variants"],
                   help="comma list of fp32,tf32,amp_bf16,amp_fp16,half (+_cl); default fp32,amp_fp16_cl,half_cl")
    p.add_argument("--warmup", type=int, default=DEFAULTS["warmup"], help="untimed steps per case (default 3)")
    p.add_argument("--reps", type=int, default=DEFAULTS["reps"], help="timed steps per case (default 10)")
    p.add_argument("--input-size", type=int, default=DEFAULTS["input_size"], help="square input side, a multiple of 16 (default 112)")
    p.add_argument("--budget-seconds", type=float, default=DEFAULTS["budget_seconds"], help="skip cases that would start after this (0: none)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for --device cpu (default: torch's)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny run to prove the script works: r18, batch 2 training and inference, 1 warm-up + 2 timed, all variants "
                        "that the device supports (use with --device cpu where there is no GPU)")
    a = p.parse_args()
    if a.input_size % 16:
        p.error("--input-size must be a multiple of 16")
    req = default_request(a)
    if a.smoke:
        cpu = a.device == "cpu"
        req.update({"warmup": 1, "reps": 2, "inferWarmup": 1, "inferReps": 2, "cases": cases_for(
            ["r18"], [2], [2],
            ["fp32", "amp_bf16", "amp_bf16_cl"] if cpu else ["fp32", "tf32", "amp_bf16", "amp_fp16_cl"],
            ["fp32", "amp_bf16_cl"] if cpu else ["fp32", "amp_fp16_cl", "half_cl"])})
    print(json.dumps(run(req)))


DEFAULTS = {"device": "cuda", "models": ["r50", "r100"], "train_batches": [128, 256], "infer_batches": [256],
            "train_variants": ["fp32", "amp_bf16", "amp_bf16_cl"], "infer_variants": ["fp32", "amp_fp16_cl", "half_cl"],
            "warmup": 3, "reps": 10, "input_size": 112, "budget_seconds": 0.0, "threads": 0}


def cases_for(models, train_batches, infer_batches, train_variants, infer_variants):
    cases = []
    for m in models:
        for b in train_batches:
            cases += [{"model": m, "mode": "train", "batch": b, "variant": v} for v in train_variants]
        for b in infer_batches:
            cases += [{"model": m, "mode": "infer", "batch": b, "variant": v} for v in infer_variants]
    return cases


def default_request(a):
    return {"device": a.device, "warmup": a.warmup, "reps": a.reps, "inferWarmup": a.warmup, "inferReps": a.reps,
            "inputSize": a.input_size, "budgetSeconds": a.budget_seconds, "threads": getattr(a, "threads", 0),
            "cases": cases_for(a.models, a.train_batches, a.infer_batches, a.train_variants, a.infer_variants)}


if __name__ == "__main__":
    main()
