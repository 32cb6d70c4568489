"""The main job: the pretrained all-MiniLM-L6-v2 sentence encoder, pruned end to end, offline.

Text: English sentences from the standard library's docstrings (sparsekern.models.text),
cut into disjoint sets: calibration (the pruning criterion's statistics), validation (the
search's metric), distillation (recovery) and evaluation (held out from all of them).
The dense model is the teacher: quality is the cosine between the pruned and the dense
model's sentence embeddings, and top-1 nearest-neighbour agreement, on the evaluation set.
Latency is optimized and measured at 1 sentence and at 32 sentences.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch

from ..auto.measure import Grid, MeasureSettings
from ..timing import TimerSettings
from ..models.minilm import tokenize
from ..models.text import text_splits
from .config import DemoConfig

#: The model's Linear layers by role (BERT's module names).
FFN = ("intermediate.dense", "output.dense")
ATTENTION = ("attention.self.query", "attention.self.key", "attention.self.value",
             "attention.output.dense")

#: The job's timer of each measurement window: a 32-sentence call takes a few hundred ms,
#: so fewer reps; at most 30 samples of a layer (each sample starts after a cache flush
#: in the "cold" context, which costs more than the layer: 200 samples of each of the 36
#: layers in 3 windows at 2 shapes took ~2 of the run's 3 minutes).
JOB_TIMER = TimerSettings(min_time=0.05, min_reps=5, max_reps=30, max_candidate_time=0.5)
#: The search's quality floor: the search metric is the mean cosine to the dense model
#: (1 for the dense model), so a drop of 0.03 puts the floor at the quality check's
#: min_cosine 0.97. The search rates plans before recovery, which only raises the cosine:
#: the floor is conservative.
MAX_SEARCH_DROP = 0.03
#: The job's latency-table grid: the formats the search's granularities ("fine", "2:4")
#: produce (no BSR: fine zeros never form blocks), at sparsities a sentence encoder can
#: still recover from.
JOB_GRID = Grid(sparsities=(0.5, 0.6, 0.7, 0.8, 0.9), layouts=("2:4", "csc"))


@dataclass
class TextData:
    """Tokenized splits (lists of tokenizer outputs: dicts of int64 [B, T] tensors) and the
    example inputs of the latency measurements ({"input_ids", "attention_mask", ...})."""

    calib: List[Dict[str, torch.Tensor]]
    final_calib: List[Dict[str, torch.Tensor]]
    val: List[Dict[str, torch.Tensor]]
    train: List[Dict[str, torch.Tensor]]
    test: List[Dict[str, torch.Tensor]]
    examples: List[Dict[str, torch.Tensor]]
    labels: List[str]
    counts: Dict[str, int]


def text_data(tokenizer, n_calib: int = 32, n_val: int = 32, n_distill: int = 512,
              n_eval: int = 256, batch: int = 32, distill_batch: int = 16,
              sentences: Sequence[int] = (1, 32), seed: int = 0,
              n_final_calib: int = 128) -> TextData:
    """The job's data from the offline corpus, tokenized with ``tokenizer``.

    The search prunes from the first ``n_calib`` calibration sentences, the final SparseGPT
    step from the first ``n_final_calib`` (SparseGPT wants more tokens than a layer's 1536
    inputs: MiniLM one-shot 50% held-out cosine 0.895 from 32 sentences, 0.927 from 128).

    The 1-sentence example is the evaluation sentence of median token length; the
    n-sentence one is the first n evaluation sentences (padded to the longest).
    """
    n_pool = max(n_calib, n_final_calib)
    sp = text_splits(n_calib=n_pool + n_val, n_distill=n_distill, n_eval=n_eval, seed=seed)
    calib, final, val = sp.calib[:n_calib], sp.calib[:n_final_calib], sp.calib[n_pool:]
    lengths = [len(tokenizer([s])["input_ids"][0]) for s in sp.eval]
    median = sorted(range(len(sp.eval)), key=lambda i: lengths[i])[len(sp.eval) // 2]
    examples, labels = [], []
    for n in sentences:
        texts = [sp.eval[median]] if n == 1 else sp.eval[:n]
        if len(texts) < n:
            raise ValueError(f"an example of {n} sentences needs n_eval >= {n}, got {n_eval}")
        examples.append(tokenize(tokenizer, texts, batch_size=n)[0])
        labels.append("1 sentence" if n == 1 else f"{n} sentences")
    return TextData(calib=tokenize(tokenizer, calib, batch),
                    final_calib=tokenize(tokenizer, final, batch),
                    val=tokenize(tokenizer, val, batch),
                    train=tokenize(tokenizer, sp.distill, distill_batch),
                    test=tokenize(tokenizer, sp.eval, batch), examples=examples, labels=labels,
                    counts={"calib": len(calib), "final_calib": len(final), "val": len(val),
                            "distill": len(sp.distill),
                            "eval": len(sp.eval),
                            "median_tokens_eval": int(statistics.median(lengths))})


def linear_names(model: torch.nn.Module, roles: Sequence[str]) -> List[str]:
    """Names of the model's nn.Linear layers whose name ends with one of ``roles``
    (``FFN``, ``ATTENTION``), in model order."""
    return [n for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and any(n.endswith(r) and
                                                      not (r == "output.dense" and
                                                           n.endswith("attention.output.dense"))
                                                      for r in roles)]


def job_config(model: torch.nn.Module, data: TextData, *, layers: str = "all",
               **overrides) -> DemoConfig:
    """The main job's settings (any DemoConfig field can be overridden)."""
    roles = {"ffn": FFN, "attention": ATTENTION, "all": FFN + ATTENTION}[layers]
    base = dict(target_speedup=(2.0, 1.5), required_speedup=(2.0, 1.5), strategy="amc",
                amc_episodes=40, max_ratio=0.9, relax_target=0.8, granularities=("fine", "2:4"),
                criterion="wanda", final_criterion="sparsegpt",
                layers=linear_names(model, roles), short_steps=0, netadapt_steps=3,
                max_iterations=12, max_search_drop=MAX_SEARCH_DROP, final_steps=64, lr=2e-4,
                distill_loss="cosine",
                sensitivity_ratios=(0.5,),
                settings=MeasureSettings(grid=JOB_GRID), timer=JOB_TIMER, windows=3,
                labels=data.labels)
    base.update(overrides)
    return DemoConfig(**base)
