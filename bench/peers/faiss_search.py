#!/usr/bin/env python3
"""faiss exact search on the CPU: the peer of bench/search.js.

Reads one JSON object on stdin:
  {"N": int, "D": int, "Qs": [int, ...], "k": int, "threads": int, "storage": "f32" | "f16",
   "warmup": 1, "minReps": 3, "minSeconds": 1.0, "seed": 1, "bigWork": 32e6}
builds a gallery of N random unit vectors (numpy, its own data: only the timing is compared) in
IndexFlatIP (f32) or IndexScalarQuantizer(QT_fp16, METRIC_INNER_PRODUCT) (f16 storage, an exact scan
over half-precision rows), and prints {"peer": "faiss", "version", "index", "results": [{"Q",
"medianSeconds", "queriesPerSecond"}]}. Each timed call is index.search(queries, k).
"""
import json
import sys
import time


def main():
    req = json.loads(sys.stdin.read())
    import faiss
    import numpy as np

    faiss.omp_set_num_threads(int(req.get("threads", 1)))
    N, D, k = int(req["N"]), int(req["D"]), int(req["k"])
    storage = req.get("storage", "f32")
    rng = np.random.default_rng(int(req.get("seed", 1)))
    if storage == "f16":
        index = faiss.IndexScalarQuantizer(D, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        name = "IndexScalarQuantizer(QT_fp16, IP)"
    else:
        index = faiss.IndexFlatIP(D)
        name = "IndexFlatIP"
    step = 100000
    for s in range(0, N, step):
        x = rng.standard_normal((min(step, N - s), D), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        if storage == "f16":
            if not index.is_trained:
                index.train(x)
        index.add(x)
    out = {"peer": "faiss", "version": faiss.__version__, "index": name, "results": []}
    warmup = int(req.get("warmup", 1))
    min_reps = int(req.get("minReps", 3))
    min_seconds = float(req.get("minSeconds", 1.0))
    for Q in req["Qs"]:
        q = rng.standard_normal((int(Q), D), dtype=np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        # Calls of many seconds (N·Q >= bigWork): one timed call, no warm-up.
        big = N * int(Q) >= float(req.get("bigWork", 32e6))
        for _ in range(0 if big else warmup):
            index.search(q, k)
        times = []
        start = time.perf_counter()
        while len(times) < (1 if big else min_reps) or (not big and time.perf_counter() - start < min_seconds):
            t0 = time.perf_counter()
            index.search(q, k)
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
