"""ONNX files of the second backbone batch for bench/backbone_zoo.js's onnxruntime-node peer.

The models are the independent PyTorch implementations of test/fixtures/gen_backbone_zoo_torch.py
(plain torch.nn, written from SPEC-BACKBONES.md; imported from the repository checkout, so this peer
runs from a clone, not from an installed package), filled with the deterministic formula weights that
facecuda's side builds too (bench/zoo_values.cjs), put in eval mode in float32 and exported with
torch.onnx.export as PyTorch users export them (dynamic batch axis, the opset below). onnxruntime then
runs exactly the weights facecuda runs, and the benchmark compares the two outputs as well as the
times.

Input: JSON on stdin {"models": ["vit_s", ...], "outDir": "/tmp/...", "opset": 17}.
Output: one JSON line {"torch": version, "opset": n, "files": {"vit_s": "/tmp/.../vit_s.onnx", ...},
"errors": {"name": "why"}}; exits with status 2 and an "error" field when torch or the reference
module is missing.
"""
import importlib.util
import json
import os
import sys


def main():
    req = json.loads(sys.stdin.read() or "{}")
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"error": f"torch is not importable: {e}"}))
        sys.exit(2)
    ref = os.path.join(os.path.dirname(__file__), "..", "..", "test", "fixtures", "gen_backbone_zoo_torch.py")
    if not os.path.exists(ref):
        print(json.dumps({"error": f"{ref} is missing (run the benchmark from a repository checkout)"}))
        sys.exit(2)
    spec = importlib.util.spec_from_file_location("zoo_reference", ref)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out_dir = req["outDir"]
    opset = int(req.get("opset", 17))
    files, errors = {}, {}
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    for name in req["models"]:
        try:
            model, _ = mod.build(name, torch.float32)  # formula values (float32), see the reference's docstring
            model = model.eval()
            path = os.path.join(out_dir, f"{name}.onnx")
            with torch.no_grad():
                torch.onnx.export(
                    model, torch.zeros(1, 3, 112, 112), path, input_names=["input"], output_names=["embedding"],
                    dynamic_axes={"input": {0: "N"}, "embedding": {0: "N"}}, opset_version=opset, do_constant_folding=True)
            files[name] = path
        except Exception as e:  # noqa: BLE001
            errors[name] = f"{type(e).__name__}: {e}"
    print(json.dumps({"torch": torch.__version__, "opset": opset, "files": files, "errors": errors}))


if __name__ == "__main__":
    main()
