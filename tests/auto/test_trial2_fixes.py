"""Fixes from the second new-user trial: tied layers left alone, the kernel path in the cache
key, damaged cache entries and table files, a cache folder given as a path, eval_fn's
non-finite values. No real timing: measurements and re-checks are fakes."""
import json
import math

import pytest
import torch
from torch import nn

from sparsekern.auto import measure, table
from sparsekern.auto.amc import amc
from sparsekern.auto.cache import DiskCache
from sparsekern.auto.measure import MeasureSettings, recheck_entry
from sparsekern.auto.netadapt import netadapt, table_layers
from sparsekern.auto.signature import signature_of
from sparsekern.auto.table import LatencyTable, LayerLatency


@pytest.fixture
def counted(monkeypatch):
    calls = []

    def fake(sig):
        calls.append(sig)
        e = LayerLatency.synthetic(1e-3, {"csc": [(0.1, 2e-4)]}, sig.to_key()).entry
        e["formats"]["csc"][0]["ratio"] = 0.2
        return e
    monkeypatch.setattr(table, "measure_signatures", lambda sigs, settings=None: [fake(g) for g in sigs])
    monkeypatch.setattr(table, "machine_busy", lambda *a: None)
    return calls


def _sig():
    return signature_of(nn.Linear(16, 8), (1, 16))


NOCHECK = MeasureSettings(recheck=0)


# -- D1: tied layers ----------------------------------------------------------------------

class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(10, 8)
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, ids):
        return self.head(torch.relu(self.fc(self.wte(ids))))


def test_build_table_leaves_a_tied_layer_out(counted):
    t = table.build_table(Tied(), torch.tensor([[1, 2, 3]]), settings=NOCHECK,
                          measure_whole_model=False, cache=False)
    assert list(t.layers) == ["fc"]
    assert "tied to 'wte.weight'" in t.meta["left_alone"]["head"]


def _tied_table():
    e = lambda d, c: {"s": LayerLatency.synthetic(d, c)}
    return LatencyTable(["s"], {"fc": e(1.0, {"csc": [(0.0, 0.1), (1.0, 1.1)]}),
                                "head": e(4.0, {"csc": [(0.0, 0.2), (1.0, 4.2)]})},
                        {"s": 0.1}, {"s": 5.1})


def test_searches_never_prune_a_tied_layer():
    m = Tied()
    assert table_layers(_tied_table(), None, m) == ["fc"]
    with pytest.raises(ValueError, match=r"layers \['head'\] cannot be searched: head: its "
                                         r"weight is tied to 'wte.weight'"):
        table_layers(_tied_table(), ["head"], m)
    r = netadapt(m, _tied_table(), lambda mm: 1.0, target_speedup=3.0, max_iterations=5)
    assert "head" not in r.plans and "tied to 'wte.weight'" in r.left_alone["head"]
    assert not (m.wte.weight == 0).any()
    m2 = Tied()
    r2 = amc(m2, _tied_table(), lambda mm: 1.0, target_speedup=1.2, episodes=3, warmup_episodes=1)
    assert "head" not in r2.plans and "head" in r2.left_alone
    assert not (m2.wte.weight == 0).any()


# -- D3: the kernel path in force is part of the key ----------------------------------------

@pytest.mark.parametrize("change", ["isa", "pool", "scatter", "broadcast", "prefetch"])
def test_another_kernel_path_is_a_miss_and_keeps_the_other_entry(counted, tmp_path,
                                                                 monkeypatch, change):
    from sparsekern.timing import machine
    c = DiskCache("latency", root=tmp_path)
    table.layer_entry(_sig(), NOCHECK, cache=c)
    with monkeypatch.context() as mp:
        if change == "isa":
            mp.setattr(machine, "extension_isa", lambda: "portable-test")
        elif change == "pool":
            mp.setattr(machine, "extension_pool", lambda: "own-test")
        else:  # as reload_env() records what the C++ side read
            import sparsekern.backends as backends
            mp.setattr(backends, f"_{change}_value", f"{change}-test")
        assert table.layer_entry(_sig(), NOCHECK, cache=c).provenance == "measured"
    assert len(counted) == 2
    assert table.layer_entry(_sig(), NOCHECK, cache=c).provenance == "cached"  # not overwritten
    assert len(counted) == 2


def test_the_scatter_key_is_what_the_kernels_read_not_the_environment_now(monkeypatch):
    """SPARSEKERN_CPU_SCATTER set after import (without reload_env) changes nothing the
    kernels run, so it must not change the cache key either (an entry timed on the old path
    would be filed under the new one)."""
    from sparsekern.auto.fingerprint import kernel_path
    import sparsekern.backends as backends
    before = kernel_path()["scatter"]
    monkeypatch.setenv("SPARSEKERN_CPU_SCATTER", "scalar" if before != "scalar" else "vector")
    assert kernel_path()["scatter"] == before
    monkeypatch.setattr(backends, "_scatter_value", "vector")
    assert kernel_path()["scatter"] == "vector"


@pytest.mark.parametrize("var,fixture,key,choices", [
    ("SPARSEKERN_CPU_BROADCAST", "cpu_broadcast_env", "broadcast", ("load", "register")),
    # it changes how fast the n:4 GEMVs run
    ("SPARSEKERN_CPU_PREFETCH", "cpu_prefetch_env", "prefetch", ("never", "always")),
])
def test_the_kernel_switch_keys_are_what_the_kernels_read(var, fixture, key, choices, request,
                                                           monkeypatch):
    """SPARSEKERN_CPU_BROADCAST / SPARSEKERN_CPU_PREFETCH likewise: set without reload_env they
    change nothing; after reload_env the key names the choice."""
    from sparsekern.auto.fingerprint import kernel_path
    set_env = request.getfixturevalue(fixture)
    before = kernel_path()[key]
    other = choices[0] if before != choices[0] else choices[1]
    monkeypatch.setenv(var, other)
    assert kernel_path()[key] == before
    set_env(other)
    assert kernel_path()[key] == other


# -- D4: damaged or edited cache entries are misses, with a warning naming the file --------

def _edit(root, fn):
    files = list((root / "latency").glob("*.json"))
    assert files
    for f in files:
        d = json.loads(f.read_text())
        fn(d["value"])
        f.write_text(json.dumps(d))
    return files[0]


@pytest.mark.parametrize("edit, why", [
    (lambda v: v["dense"].__setitem__("median_s", "fast"),
     "dense median_s must be a finite positive number of seconds, got 'fast'"),
    (lambda v: v["dense"].__setitem__("median_s", 0.0), "got 0.0"),
    (lambda v: v.__setitem__("dense", None), "'dense' must be a dict with 'median_s', got None"),
    (lambda v: v.__setitem__("formats", []), "'formats' must map format names"),
    (lambda v: v.clear(), "'dense' must be a dict"),
    (lambda v: v["formats"]["csc"].__setitem__(0, "oops"), "formats['csc'][0] must be a point"),
    (lambda v: v["formats"]["csc"][0].__setitem__("median_s", 1e-12),
     "formats['csc'][0]: median_s 1e-12 is 1e-09x dense's 0.001 but its ratio says 0.2x"),
    (lambda v: v["formats"]["csc"][0].__setitem__("density", "x"),
     "density must be a number in [0, 1], got 'x'"),
    (lambda v: v["signature"].__setitem__("in_features", 99), "its signature"),
])
@pytest.mark.parametrize("recheck", [0, 3])
def test_damaged_cache_entry_is_a_miss(counted, tmp_path, monkeypatch, edit, why, recheck):
    monkeypatch.setattr(table, "recheck_entry",
                        lambda s, e, settings=None: {"agree": True, "points": [], "why": "ok"})
    s = MeasureSettings(recheck=recheck)
    c = DiskCache("latency", root=tmp_path)
    table.layer_entry(_sig(), s, cache=c)
    f = _edit(tmp_path, edit)
    c2 = DiskCache("latency", root=tmp_path)
    with pytest.warns(RuntimeWarning) as w:
        e = table.layer_entry(_sig(), s, cache=c2)
    msg = str(w[0].message)
    assert str(f) in msg and why in msg and "counts as a miss" in msg
    assert e.provenance == "measured" and len(counted) == 2 and (c2.hits, c2.misses) == (0, 1)
    assert table.layer_entry(_sig(), s, cache=c2).provenance != "measured"  # replaced


def test_recheck_compares_what_the_choice_reads(monkeypatch):
    """The cached csc time says 0.15x dense (its stored ratio, untouched, says 0.2x); a
    re-timing at 0.2x must disagree."""
    def fake(jobs, x, device, s, context, bound_ratio=None, dense_floor=None):
        return {n: {"median_s": (1.0 if n == "dense" else 0.2) * 1e-3, "iqr_s": 0.0,
                    "ratio": 1.0 if n == "dense" else 0.2, "stable": True, "why": ""}
                for n in jobs}
    monkeypatch.setattr(measure, "time_entry_jobs", fake)
    e = {"dense": {"median_s": 1e-3}, "formats": {"csc": [
        {"sparsity": 0.9, "density": 0.1, "status": "ok", "median_s": 1.5e-4, "ratio": 0.2}]}}
    res = recheck_entry(_sig(), e, MeasureSettings(recheck=1))
    assert not res["agree"] and "now 0.2x dense, cached 0.15x (33% off" in res["why"]


# -- D5: a folder as the cache -------------------------------------------------------------

def test_cache_folder_as_a_path(counted, tmp_path):
    m = nn.Sequential(nn.Linear(16, 8))
    for folder in (str(tmp_path / "a"), tmp_path / "b"):
        t = table.build_table(m, torch.randn(1, 16), settings=NOCHECK, cache=folder,
                              measure_whole_model=False)
        assert t.meta["cache"]["folder"] == str(folder) + "/latency"
        assert list((tmp_path / str(folder)).glob("latency/*.json"))
    with pytest.raises(TypeError, match=r"cache must be a DiskCache, a folder \(str or "
                                        r"os.PathLike\), None .* or False .*, got int: 3"):
        table.build_table(m, torch.randn(1, 16), cache=3)


# -- D6: LatencyTable.load names the first thing wrong ---------------------------------------

def _good_table():
    e = LayerLatency.synthetic(1e-3, {"csc": [(0.1, 2e-4)]})
    return LatencyTable(["[1, 64]", "[8, 64]"], {"0": {"[1, 64]": e, "[8, 64]": e}},
                        {"[1, 64]": 0.0, "[8, 64]": 0.0}, {"[1, 64]": None, "[8, 64]": None})


@pytest.mark.parametrize("edit, why", [
    (lambda d: d.__setitem__("shapes", ["[2, 64]", "[8, 64]"]),
     r"layers\['0'\] has entries at \['\[1, 64\]', '\[8, 64\]'\], expected one at each of the "
     r"table's shapes \['\[2, 64\]', '\[8, 64\]'\]"),
    (lambda d: d["layers"]["0"]["[1, 64]"]["formats"].__setitem__("csc", ["oops"]),
     r"layers\['0'\]\['\[1, 64\]'\] is not a latency entry: formats\['csc'\]\[0\] must be a "
     r"point \(a dict\), got 'oops'"),
    (lambda d: d["layers"]["0"]["[1, 64]"]["formats"]["csc"][0].__setitem__("density", "x"),
     r"density must be a number in \[0, 1\], got 'x'"),
    (lambda d: d["other_s"].__setitem__("[1, 64]", "abc"),
     r"other_s\['\[1, 64\]'\] must be a finite non-negative number of seconds, got 'abc'"),
    (lambda d: d["layers"]["0"]["[1, 64]"]["dense"].__setitem__("median_s", float("nan")),
     r"dense median_s must be a finite positive number of seconds, got nan"),
])
def test_load_rejects_edited_tables(tmp_path, edit, why):
    d = _good_table().to_dict()
    edit(d)
    p = tmp_path / "t.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=rf"LatencyTable.load: '{p}' is not a saved latency "
                                         rf"table: .*{why}"):
        LatencyTable.load(p)


def test_load_accepts_a_saved_table(tmp_path):
    _good_table().save(tmp_path / "t.json")
    t = LatencyTable.load(tmp_path / "t.json")
    assert t.predict({"0": ("csc", 0.1)})["[1, 64]"] == pytest.approx(2e-4)


# -- eval_fn returning a non-finite value ---------------------------------------------------

@pytest.mark.parametrize("search", [netadapt, amc])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -math.inf])
def test_a_non_finite_metric_of_the_dense_model_is_an_error(search, value):
    with pytest.raises(ValueError, match=rf"eval_fn\(model\) returned {value!r} on the dense "
                                         rf"model; expected a finite number"):
        search(Tied(), _tied_table(), lambda m: value, target_speedup=1.2)
