"""The on-disk cache: hit, miss, key changes, damaged files, the folder's location."""
import errno
import json
import os
import warnings

import pytest
import torch
from torch import nn

import sparsekern
from sparsekern.auto import measure, table
from sparsekern.auto.cache import DiskCache, cache_root
from sparsekern.auto.measure import Grid, MeasureSettings
from sparsekern.auto.signature import signature_of
from sparsekern.auto.table import LayerLatency


def test_root_is_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEKERN_CACHE", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x"
    monkeypatch.delenv("SPARSEKERN_CACHE")
    assert cache_root().parts[-2:] == (".cache", "sparsekern")


def test_miss_then_hit(tmp_path):
    c = DiskCache("t", root=tmp_path)
    key = {"a": 1, "b": [2, 3]}
    assert c.load(key) is None
    path = c.store(key, {"v": 5})
    assert path.exists() and path.parent == tmp_path / "t"
    assert c.load({"b": [2, 3], "a": 1}) == {"v": 5}  # key order does not matter
    assert (c.hits, c.misses) == (1, 1)


def test_other_key_misses(tmp_path):
    c = DiskCache("t", root=tmp_path)
    c.store({"a": 1}, {"v": 1})
    assert c.load({"a": 2}) is None
    assert c.load({"a": 1, "extra": None}) is None


def test_stored_key_must_match_exactly(tmp_path):
    c = DiskCache("t", root=tmp_path)
    path = c.store({"a": 1}, {"v": 1})
    blob = json.loads(path.read_text())
    blob["key"] = {"a": 99}  # same file name, other key: never a wrong hit
    path.write_text(json.dumps(blob))
    assert c.load({"a": 1}) is None


def test_damaged_file_is_a_miss(tmp_path):
    c = DiskCache("t", root=tmp_path)
    path = c.store({"a": 1}, {"v": 1})
    path.write_text("{not json")
    assert c.load({"a": 1}) is None
    c.store({"a": 1}, {"v": 2})
    assert c.load({"a": 1}) == {"v": 2}


def test_disabled_cache_stores_nothing(tmp_path):
    c = DiskCache("t", root=tmp_path, enabled=False)
    assert c.store({"a": 1}, {"v": 1}) is None
    assert c.load({"a": 1}) is None
    assert not (tmp_path / "t").exists()


def test_kind_is_checked(tmp_path):
    with pytest.raises(ValueError, match="kind must be a plain folder name, got 'a/b'"):
        DiskCache("a/b", root=tmp_path)


BY_ROOT = r"\(set by DiskCache\(root=\.\.\.\)\)"


def _stores_nothing_and_warns_once(c, match):
    """c.store warns (once, naming the folder and the error) and returns None; c.load misses."""
    with pytest.warns(RuntimeWarning, match=match):
        assert c.store({"a": 1}, {"v": 1}) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second write: no second warning
        assert c.store({"a": 2}, {"v": 2}) is None
        assert c.load({"a": 1}) is None


def test_a_file_as_the_cache_folder_is_no_cache(tmp_path, monkeypatch):
    """SPARSEKERN_CACHE naming a file: sparsify(layout="auto") timed every layer, then died
    with a raw NotADirectoryError from store. Now: a miss on reading, a warning naming the
    path, the variable and the error on writing, and nothing cached."""
    not_a_dir = tmp_path / "not_a_dir"
    not_a_dir.write_text("")
    monkeypatch.setenv("SPARSEKERN_CACHE", str(not_a_dir))
    _stores_nothing_and_warns_once(
        DiskCache("t"), rf"sparsekern cache: cannot write to '{not_a_dir}' \(set by "
                        rf"SPARSEKERN_CACHE\): NotADirectoryError: .*; nothing is cached; set "
                        rf"SPARSEKERN_CACHE to a writable folder")
    _stores_nothing_and_warns_once(  # a root given by the caller names the argument instead
        DiskCache("t", root=not_a_dir), rf"cannot write to '{not_a_dir}' {BY_ROOT}: "
                                         rf"NotADirectoryError: .*; nothing is cached$")
    assert not_a_dir.read_text() == ""


def test_a_read_only_cache_folder_is_no_cache(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):  # root: chmod cannot refuse it (see the test below)
            pytest.skip("this user may write to a read-only folder (root)")
        _stores_nothing_and_warns_once(DiskCache("t", root=folder),
                                       r"cannot write to .*: PermissionError: ")
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("where,err", [("mkstemp", errno.EACCES), ("dump", errno.ENOSPC),
                                       ("dump", errno.EROFS)])
def test_a_cache_folder_that_fails_a_write_is_no_cache(tmp_path, monkeypatch, where, err):
    """Permission denied, a full disk, a read-only file system (any OSError, simulated: the
    tests may run as root): a warning, no file left behind, the next lookup a miss."""
    from sparsekern.auto import cache as cache_mod

    def fail(*args, **kwargs):
        raise OSError(err, os.strerror(err))
    if where == "mkstemp":
        monkeypatch.setattr(cache_mod.tempfile, "mkstemp", fail)
    else:
        monkeypatch.setattr(cache_mod.json, "dump", fail)
    c = DiskCache("t", root=tmp_path)
    _stores_nothing_and_warns_once(c, rf"cannot write to '{tmp_path}' {BY_ROOT}: \w+Error: "
                                      rf"\[Errno {err}\] {os.strerror(err)}; nothing is cached$")
    assert list((tmp_path / "t").iterdir()) == []  # the temporary file was removed


# -- layer entries: measured once, re-measured when what they depend on changes --------------

@pytest.fixture
def counted(monkeypatch):
    """measure_signatures replaced by a counter returning a synthetic entry (no timing)."""
    calls = []

    def fake(sig, settings=None):
        calls.append(sig)
        return LayerLatency.synthetic(1e-3, {"csc": [(0.1, 2e-4)]}, sig.to_key()).entry

    monkeypatch.setattr(table, "measure_signatures",
                        lambda sigs, settings=None: [fake(g) for g in sigs])
    rechecks.clear()
    monkeypatch.setattr(table, "recheck_entry", fake_recheck)
    return calls


#: (signature, entry) of every re-check; RECHECK["agree"] is what the fake re-check says.
rechecks = []
RECHECK = {"agree": True}


def fake_recheck(sig, entry, settings=None):
    rechecks.append((sig, entry))
    return {"agree": RECHECK["agree"], "points": [], "why": "fake re-check"}


def _sig(in_shape=(1, 16), dtype=torch.float32):
    return signature_of(nn.Linear(16, 8).to(dtype), in_shape)


def test_layer_entry_measured_once(counted, tmp_path):
    c = DiskCache("latency", root=tmp_path)
    e1 = table.layer_entry(_sig(), cache=c)
    e2 = table.layer_entry(_sig(), cache=DiskCache("latency", root=tmp_path))  # a new process
    assert len(counted) == 1
    assert e1.entry == e2.entry


def test_layer_entry_survives_a_cache_it_cannot_write(counted, tmp_path, monkeypatch):
    """The measurement is returned (the user's work is not lost) and measured again next time."""
    not_a_dir = tmp_path / "not_a_dir"
    not_a_dir.write_text("")
    monkeypatch.setenv("SPARSEKERN_CACHE", str(not_a_dir))
    with pytest.warns(RuntimeWarning, match=r"\(set by SPARSEKERN_CACHE\): NotADirectoryError"):
        e1 = table.layer_entry(_sig(), cache=table.default_cache(None))
    with pytest.warns(RuntimeWarning):
        e2 = table.layer_entry(_sig(), cache=table.default_cache(None))
    # measured twice: the same figures (the fake timer's); what the load check saw may differ
    # (OthersMeter over a ~1 ms measurement: one 10 ms tick of another process reads as
    # many CPUs, which marks the entry busy, the safe side)
    same = lambda e: {k: v for k, v in e.entry.items() if k != "load"}
    assert same(e1) == same(e2) and len(counted) == 2


@pytest.mark.parametrize("change", ["input shape", "dtype", "grid", "version", "threads"])
def test_layer_entry_key_changes(counted, tmp_path, monkeypatch, change):
    c = DiskCache("latency", root=tmp_path)
    table.layer_entry(_sig(), cache=c)
    sig, settings = _sig(), MeasureSettings()
    if change == "input shape":
        sig = _sig((4, 16))
    elif change == "dtype":
        sig = _sig(dtype=torch.float64)
    elif change == "grid":
        settings = MeasureSettings(grid=Grid(sparsities=(0.5, 0.9)))
    elif change == "version":
        monkeypatch.setattr(sparsekern._version, "__version__", "999.0")
    else:
        other = torch.get_num_threads() + 1
        monkeypatch.setattr(torch, "get_num_threads", lambda: other)
    table.layer_entry(sig, settings, cache=c)
    assert len(counted) == 2


def test_build_table_reports_hits_and_misses(counted):
    # No ReLU: both 8x8 layers see inputs without zeros, so they share one table entry.
    model = nn.Sequential(nn.Linear(16, 8), nn.Identity(), nn.Linear(8, 8), nn.Identity(),
                          nn.Linear(8, 8))
    x = torch.randn(1, 16)
    t1 = table.build_table(model, x, measure_whole_model=False)
    assert t1.meta["cache"]["misses"] == 2 and t1.meta["cache"]["hits"] == 0  # "2", "4" share one
    t2 = table.build_table(model, x, measure_whole_model=False)
    assert t2.meta["cache"]["hits"] == 2 and t2.meta["cache"]["misses"] == 0
    assert len(counted) == 2
    t3 = table.build_table(model, x, measure_whole_model=False, cache=False)
    assert t3.meta["cache"] is None and len(counted) == 4


# -- re-check of cached entries, provenance --------------------------------------------------

def test_cached_entry_is_rechecked_before_reuse(counted, tmp_path):
    c = DiskCache("latency", root=tmp_path)
    first = table.layer_entry(_sig(), cache=c)
    assert first.provenance == "measured" and rechecks == []
    again = table.layer_entry(_sig(), cache=c)
    assert again.provenance == "re-checked" and len(rechecks) == 1 and len(counted) == 1
    assert again.recheck["why"] == "fake re-check"


def test_disagreeing_recheck_remeasures_and_replaces(counted, tmp_path, monkeypatch):
    c = DiskCache("latency", root=tmp_path)
    table.layer_entry(_sig(), cache=c)
    monkeypatch.setitem(RECHECK, "agree", False)
    e = table.layer_entry(_sig(), cache=c)
    assert e.provenance == "re-measured" and len(counted) == 2 and len(rechecks) == 1
    assert e.recheck["agree"] is False


def test_recheck_zero_reuses_as_cached(counted, tmp_path):
    c = DiskCache("latency", root=tmp_path)
    table.layer_entry(_sig(), MeasureSettings(recheck=0), cache=c)
    e = table.layer_entry(_sig(), MeasureSettings(recheck=0), cache=c)
    assert e.provenance == "cached" and rechecks == [] and len(counted) == 1


def test_table_meta_lists_entry_provenance(counted):
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    x = torch.randn(1, 16)
    t1 = table.build_table(model, x, measure_whole_model=False)
    assert t1.meta["entries"]["measured"] == ["0 @ [1, 16]", "2 @ [1, 16]"]
    t2 = table.build_table(model, x, measure_whole_model=False)
    assert t2.meta["entries"]["re-checked"] == ["0 @ [1, 16]", "2 @ [1, 16]"]
    assert "measured" not in t2.meta["entries"]


@pytest.mark.parametrize("bad, msg", [
    (dict(recheck=-1), "MeasureSettings.recheck must be >= 0, got -1"),
    (dict(recheck_tolerance=0.0), r"MeasureSettings.recheck_tolerance must be in \(0, 1\), got 0.0"),
    (dict(context="hot"), "MeasureSettings.context must be one of")])
def test_measure_settings_rejections(bad, msg):
    with pytest.raises(ValueError, match=msg):
        MeasureSettings(**bad)


# -- the cache key follows the extension's content, not its mtime ----------------------------

def test_extension_key_hashes_content_not_mtime(tmp_path, monkeypatch):
    import os
    import types

    from sparsekern import _extension
    from sparsekern.auto import fingerprint
    so = tmp_path / "_C.so"
    so.write_bytes(b"kernels v1")
    monkeypatch.setattr(_extension, "_C", types.SimpleNamespace(__file__=str(so)))
    k1 = fingerprint.extension_build()
    so.write_bytes(b"kernels v1")               # an identical rebuild: new mtime, same bytes
    os.utime(so, ns=(1, 10 ** 18))
    assert fingerprint.extension_build() == k1
    so.write_bytes(b"kernels v2")               # new kernels
    os.utime(so, ns=(2, 2 * 10 ** 18))
    k3 = fingerprint.extension_build()
    assert k3 != k1 and "sha256:" in k3
    so.unlink()
    assert fingerprint.extension_build().endswith(":unknown")


def test_a_recheck_that_fails_means_measure_again(counted, tmp_path, monkeypatch):
    c = DiskCache("latency", root=tmp_path)
    table.layer_entry(_sig(), cache=c)

    def broken(sig, entry, settings=None):
        raise KeyError("formats")
    monkeypatch.setattr(table, "recheck_entry", broken)
    e = table.layer_entry(_sig(), cache=c)
    assert e.provenance == "re-measured" and len(counted) == 2
    assert e.recheck["why"] == "re-check failed: KeyError: 'formats'"


def test_nothing_measured_on_a_busy_machine_is_cached(counted, tmp_path, monkeypatch, caplog):
    """An entry measured while other threads compete for the cores serves the call, with a
    warning, but is never stored: the next (quiet) run measures it again and caches it."""
    monkeypatch.setattr(table, "machine_busy", lambda *a: "1.0 other runnable threads")
    c = DiskCache("latency", root=tmp_path)
    with caplog.at_level("WARNING", logger=table.log.name):
        e1 = table.layer_entry(_sig(), cache=c)
    assert e1.provenance == "measured" and len(counted) == 1
    assert "busy machine (1.0 other runnable threads)" in caplog.text
    monkeypatch.setattr(table, "machine_busy", lambda *a: None)
    e2 = table.layer_entry(_sig(), cache=c)
    assert len(counted) == 2 and e2.provenance == "measured"  # not cached before: measured again
    e3 = table.layer_entry(_sig(), cache=c)
    assert len(counted) == 2 and e3.provenance != "measured"  # now it was


def test_machine_busy_reads_the_load_report(monkeypatch):
    from sparsekern.timing.load import judge
    monkeypatch.undo()  # the real machine_busy (conftest's autouse fixture replaces it)
    monkeypatch.setattr(table, "detect_load",
                        lambda **kw: judge(2, 2.5, 1.0, 0.0))
    assert table.machine_busy() == "1.0 other runnable threads"
    monkeypatch.setattr(table, "detect_load", lambda **kw: judge(2, 0.1, 0.0, 0.0))
    assert table.machine_busy() is None


def test_machine_busy_counts_others_during_the_measurement(monkeypatch):
    """A neighbour that ran during the measurement and stopped before the snapshot after it
    (the trial's case) is seen through OthersMeter's average."""
    from sparsekern.timing.load import judge
    monkeypatch.undo()
    monkeypatch.setattr(table, "detect_load", lambda **kw: judge(2, 0.1, 0.0, 0.0))
    assert table.machine_busy(0.9) == ("other processes used 0.90 CPUs on average during the "
                                       "measurement (limit 0.25)")
    assert table.machine_busy(0.1) is None and table.machine_busy(None) is None
