"""The peer's one-shot pruning of all-MiniLM-L6-v2 (llmcompressor), measured on sparsekern's
evaluation, side by side with tools/minilm_quality.py.

Two steps, two environments (llmcompressor pins its own transformers):

    # 1. in sparsekern's env: the calibration sentences, tokenized, and the model's path
    python tools/minilm_llmcompressor.py prepare /tmp/llmc
    # 2. in a venv with llmcompressor (python -m venv v; v/bin/pip install torch llmcompressor)
    v/bin/python tools/minilm_llmcompressor.py prune /tmp/llmc
    # 3. in sparsekern's env: quality of the pruned weights on the held-out sentences
    python tools/minilm_llmcompressor.py evaluate /tmp/llmc

Step 3 prints the same metrics as tools/minilm_quality.py (same splits and evaluation) and
writes <dir>/llmc-quality.json.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

CONFIGS = {"sparsegpt 2:4": ("sparsegpt", "2:4"), "sparsegpt 50%": ("sparsegpt", "0:0"),
           "wanda 2:4": ("wanda", "2:4"), "wanda 50%": ("wanda", "0:0")}


def prepare(d: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sparsekern.models import minilm, text
    splits = text.text_splits(128, 512, 256)  # the splits of tools/minilm_quality.py
    _, tok = minilm.load_minilm()
    enc = [tok(s, truncation=True, max_length=128) for s in splits.calib]
    d.mkdir(parents=True, exist_ok=True)
    (d / "calib.json").write_text(json.dumps({
        "model_path": str(minilm.model_path()),
        "input_ids": [e["input_ids"] for e in enc],
        "attention_mask": [e["attention_mask"] for e in enc]}))


def prune(d: Path) -> None:
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier
    from transformers import AutoModel, AutoTokenizer
    calib = json.loads((d / "calib.json").read_text())
    ds = Dataset.from_dict({"input_ids": calib["input_ids"],
                            "attention_mask": calib["attention_mask"]})
    times = {}
    for name, (kind, structure) in CONFIGS.items():
        model = AutoModel.from_pretrained(calib["model_path"], add_pooling_layer=False)
        tok = AutoTokenizer.from_pretrained(calib["model_path"])
        cls = SparseGPTModifier if kind == "sparsegpt" else WandaPruningModifier
        recipe = cls(sparsity=0.5, mask_structure=structure, targets=["Linear"])
        t = time.perf_counter()
        oneshot(model=model, processor=tok, dataset=ds, recipe=recipe,
                num_calibration_samples=len(ds), pipeline="basic")
        times[name] = round(time.perf_counter() - t, 1)
        torch.save(model.state_dict(), d / f"{kind}-{structure.replace(':', '_')}.pt")
    (d / "times.json").write_text(json.dumps(times))


def evaluate(d: Path) -> None:
    import torch
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sparsekern.models import minilm, text
    model, tok = minilm.load_minilm()
    splits = text.text_splits(128, 512, 256)
    ev = minilm.tokenize(tok, splits.eval, 64)
    dense = minilm.embed(model, ev)
    times = json.loads((d / "times.json").read_text()) if (d / "times.json").exists() else {}
    out = {}
    for name, (kind, structure) in CONFIGS.items():
        f = d / f"{kind}-{structure.replace(':', '_')}.pt"
        if not f.exists():
            continue
        state = torch.load(f, map_location="cpu")
        model.encoder.load_state_dict(state, strict=False)
        q = minilm.embedding_quality(dense, minilm.embed(model, ev))
        lin = [m for n, m in model.encoder.named_modules() if isinstance(m, torch.nn.Linear)]
        zeros = sum(int((m.weight == 0).sum()) for m in lin) / sum(m.weight.numel() for m in lin)
        out[name] = dict(q, sparsity=round(zeros, 4), prune_seconds=times.get(name))
        print(f"llmcompressor {name}: cosine {q['mean_cosine']:.4f} top1 "
              f"{q['top1_agreement']:.3f} sparsity {zeros:.3f}")
        model, tok = minilm.load_minilm()
    (d / "llmc-quality.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    step, folder = sys.argv[1], Path(sys.argv[2])
    {"prepare": prepare, "prune": prune, "evaluate": evaluate}[step](folder)
