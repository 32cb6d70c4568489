"""The results document (JSON), its checks, and its Markdown tables.

Document schema ``sparsekern-bench/1`` (every figure a run measured; times in seconds)::

    {"schema": "sparsekern-bench/1", "name": str, "mode": "quick" | "full" | "custom",
     "device": "cpu" | "cuda", "command": str, "started": ISO time, "elapsed_s": float,
     "settings": {...RunSettings, "threads": int}, "machine": {...machine.facts()},
     "calibration": {"gemm_gflops", "copy_gbps", "balance_flop_per_byte", ...},
     "cases": [case record (sparsekern.bench.runner)],
     "models": [model record (sparsekern.bench.e2e)],
     "training": [forward+backward record (sparsekern.bench.training)],   # optional
     "load": LoadReport dict, "dense_env": {...}, "warnings": [str],    # optional
     "selftime": {"triton": [...] | {"error": str}, "cuda": ...}   # optional, GPU runs}

``check_document`` re-derives every speedup from the raw times, so a hand-edited or
inconsistent file is caught. ``render_readme`` turns a document into the README section.
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, Iterable, List, Optional, Sequence

from . import metrics

SCHEMA = "sparsekern-bench/1"

TOP_KEYS = {"schema": str, "name": str, "mode": str, "device": str, "command": str,
            "started": str, "elapsed_s": (int, float), "settings": dict, "machine": dict,
            "calibration": dict, "cases": list, "models": list}
CASE_KEYS = {"id": str, "layout": str, "variant": str, "sparsity": (int, float), "shape": str,
             "M": int, "K": int, "N": int, "device": str, "dtype": str, "backend": str,
             "format_bytes": int, "stored": int, "candidates": dict, "speedup": dict,
             "bytes": dict, "bound": (int, float), "memory_bound": bool}
MODEL_KEYS = {"model": str, "variant": str, "batch": int, "status": str}
TIMING_KEYS = ("median_s", "q1_s", "q3_s", "iqr_s", "min_s", "reps")


# ----------------------------------------------------------------------------- checks
def _type_ok(value, typ) -> bool:
    types = typ if isinstance(typ, tuple) else (typ,)
    if isinstance(value, bool) and bool not in types:  # bool is an int to isinstance
        return False
    return isinstance(value, types)


def _check_keys(obj: dict, spec: dict, where: str, problems: List[str]) -> None:
    for key, typ in spec.items():
        if key not in obj:
            problems.append(f"{where}: missing key {key!r}")
        elif not _type_ok(obj[key], typ):
            names = "/".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
            problems.append(f"{where}: {key!r} is {type(obj[key]).__name__}, expected {names}")


def _close(a: Optional[float], b: Optional[float]) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)


def case_problems(case: dict, where: str = "case") -> List[str]:
    problems: List[str] = []
    _check_keys(case, CASE_KEYS, where, problems)
    if problems:
        return problems
    cands = case["candidates"]
    if metrics.SPARSE not in cands:
        problems.append(f"{where}: no {metrics.SPARSE!r} candidate")
    for name, c in cands.items():
        w = f"{where} candidate {name!r}"
        if c.get("kind") not in metrics.KINDS:
            problems.append(f"{w}: kind {c.get('kind')!r} not in {metrics.KINDS}")
        if c.get("status") not in metrics.STATUSES:
            problems.append(f"{w}: status {c.get('status')!r} not in {metrics.STATUSES}")
        t = c.get("timing")
        if c.get("status") == "ok":
            if not isinstance(t, dict) or any(k not in t for k in TIMING_KEYS):
                problems.append(f"{w}: status ok needs a timing with {TIMING_KEYS}")
            elif not (t["median_s"] > 0 and t["q1_s"] <= t["median_s"] <= t["q3_s"]):
                problems.append(f"{w}: timing is not ordered q1 <= median <= q3 with median > 0")
        elif t is not None:
            problems.append(f"{w}: status {c.get('status')!r} but a timing is present")
        elif not c.get("reason"):
            problems.append(f"{w}: status {c.get('status')!r} without a reason")
    want = metrics.speedups(cands)
    for key, val in want.items():
        if not _close(case["speedup"].get(key), val):
            problems.append(f"{where}: speedup[{key!r}] = {case['speedup'].get(key)} but the "
                            f"times give {val}")
    if case.get("best_dense") != metrics.best_dense(cands)[0]:
        problems.append(f"{where}: best_dense {case.get('best_dense')!r} is not the fastest "
                        f"timed dense candidate {metrics.best_dense(cands)[0]!r}")
    if "cold" in case and case["cold"] != metrics.cold_figures(cands):
        problems.append(f"{where}: cold figures do not match the candidates' cold timings")
    b = case["bytes"]
    if b.get("sparse", 0) > 0 and not _close(case["bound"], b["dense"] / b["sparse"]):
        problems.append(f"{where}: bound {case['bound']} != bytes dense/sparse")
    return problems


def model_problems(rec: dict, where: str = "model") -> List[str]:
    problems: List[str] = []
    _check_keys(rec, MODEL_KEYS, where, problems)
    if problems:
        return problems
    if rec["status"] == "ok":
        for k in ("dense", "sparse"):
            if not isinstance(rec.get(k), dict) or "median_s" not in rec[k]:
                problems.append(f"{where}: status ok needs a {k!r} timing")
        if not problems and not _close(rec.get("speedup"), metrics.speedup(
                rec["dense"]["median_s"], rec["sparse"]["median_s"])):
            problems.append(f"{where}: speedup does not match dense/sparse medians")
    elif not rec.get("reason"):
        problems.append(f"{where}: status {rec['status']!r} without a reason")
    return problems


def document_problems(doc: dict) -> List[str]:
    """Every way ``doc`` departs from the schema (empty list: valid)."""
    if not isinstance(doc, dict):
        return [f"document is {type(doc).__name__}, expected a JSON object"]
    problems: List[str] = []
    _check_keys(doc, TOP_KEYS, "document", problems)
    if doc.get("schema") not in (None, SCHEMA) and isinstance(doc.get("schema"), str):
        problems.append(f"document: schema {doc['schema']!r}, expected {SCHEMA!r}")
    for i, case in enumerate(doc.get("cases") or []):
        problems += case_problems(case, f"cases[{i}] {case.get('id', '?')}")
    for i, rec in enumerate(doc.get("models") or []):
        problems += model_problems(rec, f"models[{i}]")
    return problems


def check_document(doc: dict) -> dict:
    """Return ``doc`` if valid, else raise ValueError listing the first problems."""
    problems = document_problems(doc)
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ValueError("invalid results document: " + "; ".join(problems[:10]) + more)
    return doc


# ----------------------------------------------------------------------------- files
def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def write_json(doc: dict, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(_jsonable(doc), f, indent=1, sort_keys=False)
        f.write("\n")
    return path


def load(path: str) -> dict:
    with open(path) as f:
        return check_document(json.load(f))


# ----------------------------------------------------------------------------- formatting
def fmt_x(x: Optional[float]) -> str:
    """A speedup: 3 significant figures and an x, or an em dash when missing."""
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.3g}x" if x < 100 else f"{x:.0f}x"


def fmt_ms(seconds: Optional[float]) -> str:
    if seconds is None:
        return "—"
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 1000 else f"{ms:.0f}"


def fmt_rate(x: Optional[float]) -> str:
    return "—" if x is None else (f"{x:.3g}" if x < 1000 else f"{x:.0f}")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(" ---: " if r else " --- " for r in right) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def peer_names(cases: Sequence[dict]) -> List[str]:
    """Peers that appear in any case, in first-seen order."""
    seen: Dict[str, None] = {}
    for c in cases:
        for name, cand in c["candidates"].items():
            if cand.get("kind") == "peer":
                seen.setdefault(name, None)
    return list(seen)


def _sparse_cell(case: dict) -> str:
    c = case["candidates"].get(metrics.SPARSE, {})
    if c.get("status") == "ok":
        t = c["timing"]
        return f"{fmt_ms(t['median_s'])} ±{100 * t['iqr_s'] / (2 * t['median_s']):.0f}%"
    return {"skipped": "not timed", "failed": "failed", "wrong": "WRONG"}.get(c.get("status"), "—")


def cases_table(cases: Sequence[dict]) -> str:
    """One row per case: times, speedups vs best dense and each peer, rates, bound."""
    peers = peer_names(cases)
    header = (["layout", "shape M×K", "N", "sparsity", "backend", "ISA", "sparsekern ms",
               "best dense", "dense ms", "vs dense", "cold vs dense"]
              + [f"vs {p}" for p in peers] + ["GB/s", "GFLOP/s", "bound"])
    rows = []
    for c in cases:
        bd = c.get("best_dense")
        bd_t = metrics.median_s(c["candidates"][bd]) if bd else None
        rows.append([c["variant"], f"{c['M']}×{c['K']}", c["N"], f"{round(100 * c['sparsity'])}%",
                     c["backend"], c.get("isa") or "—", _sparse_cell(c), bd or "—",
                     fmt_ms(bd_t), f"**{fmt_x(c['speedup'].get('best_dense'))}**",
                     fmt_x((c.get("cold") or {}).get("speedup"))]
                    + [fmt_x(c["speedup"].get(p)) for p in peers]
                    + [fmt_rate(c.get("gbps")), fmt_rate(c.get("gflops")),
                       fmt_x(c["bound"]) if c.get("memory_bound") else "—"])
    right = [False, False, True, True, False, False, True, False] + [True] * (len(header) - 8)
    return _table(header, rows, right)


#: The column of ``amdahl_limit`` (1 / (1 - the dense model's hook-measured Linear share)).
IDEAL_COLUMN = "ideal at hook-measured Linear share (est.)"
#: Printed under every models table: what that column is, and why it is no bound.
MODELS_NOTE = (f"{IDEAL_COLUMN} = 1 / (1 - Linear share (dense)): the whole-model speedup if "
               "the Linear layers took no time and everything else took the time it takes in "
               "the dense model, at the share that forward hooks measured in a separate pass. "
               "An estimate, not a bound: a measured speedup can exceed it, since the other "
               "ops often run faster in the sparse model (fewer weight bytes pass through the "
               "caches), the hooks add time outside the layers (the share reads low), and the "
               "share and the latencies come from different passes.")


def models_table(recs: Sequence[dict]) -> str:
    header = ["model", "variant", "batch", "sparse layers", "dense ms", "sparse ms", "speedup",
              "Linear layers speedup", "Linear share (dense)", "outside sparse layers",
              IDEAL_COLUMN]
    rows = []
    for r in recs:
        layers = ", ".join(f"{n} {k}" for k, n in sorted(r.get("layers", {}).items()))
        ok = r["status"] == "ok"
        rows.append([r["model"], r["variant"], r["batch"], layers,
                     fmt_ms(r["dense"]["median_s"]) if ok else "—",
                     fmt_ms(r["sparse"]["median_s"]) if ok else r["status"],
                     f"**{fmt_x(r['speedup'])}**" if ok else "—",
                     fmt_x(r.get("linear_speedup")),
                     _pct(r.get("dense_linear_share")),
                     f"{100 * r['sparse_outside_share']:.0f}%" if ok else "—",
                     fmt_x(r.get("amdahl_limit"))])
    return _table(header, rows, [False, False, True, False] + [True] * 7)


def _pct(x: Optional[float]) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def summary_table(cases: Sequence[dict]) -> str:
    """Geometric-mean speedup vs best dense over shapes: rows layout x sparsity, columns N."""
    Ns = sorted({c["N"] for c in cases})
    keys: Dict[tuple, Dict[int, List[float]]] = {}
    for c in cases:
        k = (c["variant"], round(100 * c["sparsity"]))
        keys.setdefault(k, {}).setdefault(c["N"], []).append(c["speedup"].get("best_dense"))
    rows = []
    for (variant, pct), by_n in keys.items():
        rows.append([variant, f"{pct}%"] + [fmt_x(metrics.geomean(by_n.get(n, []))) for n in Ns])
    return _table(["layout", "sparsity"] + [f"N={n}" for n in Ns], rows,
                  [False, True] + [True] * len(Ns))


def notes(doc: dict) -> List[str]:
    """Reasons for candidates that were not timed (each distinct reason once)."""
    seen: Dict[str, None] = {}
    for c in doc.get("cases", []):
        for name, cand in c["candidates"].items():
            if cand.get("status") != "ok" and cand.get("reason"):
                seen.setdefault(f"{name}: {cand['reason']}", None)
    for r in doc.get("models", []):
        if r.get("status") != "ok" and r.get("reason"):
            seen.setdefault(f"{r['model']} {r['variant']}: {r['reason']}", None)
    return list(seen)


def machine_line(doc: dict) -> str:
    m = doc.get("machine", {})
    cpu = m.get("cpu", {})
    v = m.get("versions", {})
    blas = m.get("torch_blas", {}).get("blas_info", "?")
    threads = doc.get("settings", {}).get("threads")
    parts = [f"{cpu.get('model', '?')} ({cpu.get('usable_cpus', '?')} CPUs, "
             f"ISA {'/'.join(cpu.get('isa_flags', [])[:6]) or '?'})",
             f"{threads} thread{'' if threads == 1 else 's'}", f"torch {v.get('torch', '?')} (BLAS {blas})",
             f"numpy {v.get('numpy', '?')}"]
    if m.get("gpu"):
        parts.insert(0, m["gpu"].get("name", "GPU"))
        parts.append(f"triton {v.get('triton', '?')}")
    backends = m.get("backends", {})
    avail = [n for n, b in backends.items() if b.get("available")]
    if avail:
        parts.append(f"sparsekern backends: {', '.join(avail)}")
    return "; ".join(parts)


def full_report(doc: dict) -> str:
    """The Markdown file written beside the JSON: every row, every model, every note."""
    out = [f"# sparsekern benchmark: {doc['name']} ({doc['mode']}, {doc['device']})", "",
           f"{doc['started']}, {doc['elapsed_s']:.0f} s. {machine_line(doc)}.", "",
           "Speedup = best dense time / sparsekern time (both medians of the same run; > 1: "
           "sparsekern is faster), warm (back to back) and cold (`cold vs dense`: each "
           "sample after a cache flush, run on the thread pool the timed call uses); the "
           "candidates take turns in blocks, each starting with untimed calls, so none is "
           "timed beside another library's spinning threads; `vs <peer>` = peer time / "
           "sparsekern time. ISA: the "
           "CPU kernel path that ran. ± is half the "
           "inter-quartile range. GB/s counts the format's bytes + x + y; GFLOP/s counts 2 flops "
           "per stored value per column; bound = dense bytes / sparse bytes, shown for "
           "memory-bound rows.", ""]
    if doc.get("warnings"):
        out += ["**Warnings:**", ""] + [f"- {w}" for w in doc["warnings"]] + [""]
    if doc["cases"]:
        out += ["## Layers: speedup vs best dense (geometric mean over shapes)", "",
                summary_table(doc["cases"]), "", "## Every case", "", cases_table(doc["cases"]), ""]
    if doc["models"]:
        out += ["## Models", "", models_table(doc["models"]), "", MODELS_NOTE, ""]
    if doc.get("training"):
        from .training import markdown as training_table
        out += ["## Training step: forward + backward + SGD (SparseLinear vs nn.Linear, warm)",
                "",
                training_table(doc["training"]), ""]
    if doc.get("selftime"):
        out += ["## GPU kernel self-times", "", "```",
                json.dumps(doc["selftime"], indent=1)[:4000], "```", ""]
    n = notes(doc)
    if n:
        out += ["## Not timed", ""] + [f"- {x}" for x in n] + [""]
    return "\n".join(out)


def render_readme(doc: dict) -> str:
    """The README's results section for ``doc`` (summary + models + where it came from)."""
    out = [f"Measured on {machine_line(doc)}; `{doc['command']}` ({doc['mode']} run, "
           f"{doc['started'][:10]}).", "",
           "Layer speedup over the best dense baseline (fastest of torch F.linear / matmul "
           + ("and NumPy BLAS" if doc["device"] == "cpu" else "via cuBLAS")
           + "), geometric mean over the model shapes:", "", summary_table(doc["cases"])]
    if doc["models"]:
        out += ["", "Whole models (batch = tokens per forward):", "", models_table(doc["models"]),
                "", MODELS_NOTE]
    return "\n".join(out) + "\n"


def short_table(doc: dict, limit: int = 12) -> str:
    """A few lines for a terminal: the summary table and the model speedups."""
    out = [f"{doc['name']}: {len(doc['cases'])} cases, {len(doc['models'])} model rows, "
           f"{doc['elapsed_s']:.0f} s", summary_table(doc["cases"]) if doc["cases"] else ""]
    for r in doc["models"][:limit]:
        out.append(f"  {r['model']:<12} {r['variant']:<14} batch {r['batch']:<4} "
                   f"{fmt_x(r.get('speedup')) if r['status'] == 'ok' else r['status']}")
    return "\n".join(x for x in out if x)
