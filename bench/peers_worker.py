"""A timing worker for an engine that lives in another virtual environment (DeepSparse 1.8).

Run by bench/e2e_peers.py as ``<other venv>/bin/python bench/peers_worker.py``; it needs
only NumPy and the engine, not torch or sparsekern. It reads one JSON request per line on
stdin and answers one JSON line on stdout:

    {"op": "compile", "key": k, "onnx": path, "batch": B, "tokens": T, "threads": n}
        -> {"ok": true} or {"ok": false, "error": "..."}
    {"op": "time", "key": k, "calls": c, "warm": w}
        -> {"ok": true, "times_s": [c floats]} (after w untimed calls; default 0)
    {"op": "run", "key": k} -> {"ok": true, "out": [[...]]} (the embeddings, for checking)
    {"op": "quit"}

Inputs are the fixed ones the parent uses: input_ids = (arange(B*T) * 7919 % 29000) + 1000,
attention_mask = 1, both int64 [B, T].
"""
import json
import sys
import time

import numpy as np


def _inputs(batch, tokens):
    ids = (np.arange(batch * tokens, dtype=np.int64) * 7919 % 29000 + 1000).reshape(batch, tokens)
    return [ids, np.ones((batch, tokens), dtype=np.int64)]


def main():
    from deepsparse import compile_model

    engines = {}
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "quit":
                break
            if req["op"] == "compile":
                eng = compile_model(req["onnx"], batch_size=req["batch"],
                                    num_cores=req["threads"],
                                    input_shapes=[[req["batch"], req["tokens"]]] * 2)
                engines[req["key"]] = (eng, _inputs(req["batch"], req["tokens"]))
                ans = {"ok": True}
            elif req["op"] == "time":
                eng, x = engines[req["key"]]
                for _ in range(req.get("warm", 0)):
                    eng.run(x)
                times = []
                for _ in range(req["calls"]):
                    t = time.perf_counter()
                    eng.run(x)
                    times.append(time.perf_counter() - t)
                ans = {"ok": True, "times_s": times}
            elif req["op"] == "run":
                eng, x = engines[req["key"]]
                ans = {"ok": True, "out": eng.run(x)[0].tolist()}
            else:
                ans = {"ok": False, "error": f"unknown op {req['op']!r}"}
        except Exception as e:  # report, keep serving: the parent decides
            ans = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(ans), flush=True)


if __name__ == "__main__":
    main()
