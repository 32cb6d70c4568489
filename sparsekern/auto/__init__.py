"""sparsekern.auto: latency-aware format choice and automatic pruning.

Measure once, decide from measurements::

    from sparsekern import auto
    table = auto.build_table(model, [x[:1], x[:64]])      # per layer: dense and every format
                                                          # over a grid of sparsities (cached)
    cfg = auto.NetAdaptConfig(target_speedup=2.0, finetune_fn=short_ft,
                              final_finetune_fn=long_ft, granularities=("fine", "2:4"))
    result = auto.netadapt(model, table, eval_fn, cfg)     # prunes model in place
    # or: result = auto.amc(model, table, eval_fn, auto.AMCConfig(target_speedup=2.0))
    # (keywords work too: auto.netadapt(model, table, eval_fn, target_speedup=2.0, steps=3))
    model = sk.sparsify(model, layout="auto", latency_table=table)   # fastest format per layer
    table.predict({n: (d.format, d.density) for n, d in model.sparsekern_decisions.items()})

Modules: formats (format names), patterns (stored fractions), signature (what a layer's
time depends on), cache (on-disk JSON cache), fingerprint (machine/software keys),
measure (timing one layer: every point paired with dense over several rounds; unstable
points left unmeasured and predicted by the bytes-bound model; cached entries re-checked
before reuse), table (LatencyTable, build_table), choose (per-layer format,
sparsify_auto), netadapt (the search), amc (a learned per-layer ratio policy under the same
table), verify (the table's prediction against the model, paired in time), plots.
"""
from .amc import AMCConfig, AMCResult, amc
from .cache import DiskCache, cache_root
from .choose import (DEFAULT_MARGIN, LayerDecision, decide, decide_matrix, sparsify_auto,
                     synthetic_table)
from .formats import DENSE, FormatSpec, parse_format
from .measure import Grid, MeasureSettings
from .netadapt import LayerPlan, NetAdaptConfig, NetAdaptResult, budgets, netadapt
from .table import LatencyTable, LayerLatency, build_table, layer_table
from .verify import paired_prediction

__all__ = ["DiskCache", "cache_root", "DEFAULT_MARGIN", "LayerDecision", "decide",
           "decide_matrix", "sparsify_auto", "synthetic_table", "DENSE", "FormatSpec",
           "parse_format", "Grid", "MeasureSettings", "LayerPlan", "NetAdaptResult", "budgets",
           "netadapt", "LatencyTable", "LayerLatency", "build_table", "layer_table", "amc",
           "AMCResult", "paired_prediction", "NetAdaptConfig", "AMCConfig"]
