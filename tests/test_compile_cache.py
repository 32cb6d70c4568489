"""torch.compile's on-disk caches never serve a graph traced through another sparsekern build
(sparsekern/_compile_cache.py). CI once failed this way: a training step compiled by an older
build, kept in /tmp/torchinductor_<user>, was served to a newer build and called an op the
newer build no longer had."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import sparsekern
from sparsekern import _compile_cache

PKG = pathlib.Path(sparsekern.__file__).resolve().parent

#: A compiled training step through spmm; prints the AOTAutograd cache counters as JSON.
STEP = textwrap.dedent("""
    import json, torch
    import sparsekern as sk
    torch.manual_seed(0)
    lin = torch.nn.Linear(12, 8)
    with torch.no_grad():
        lin.weight.mul_((torch.rand(8, 12) > 0.6).float())
    layer = sk.SparseLinear.from_dense(lin, layout="csc")
    x = torch.randn(4, 12, requires_grad=True)
    torch.compile(layer, fullgraph=True)(x).pow(2).sum().backward()
    c = torch._dynamo.utils.counters["aot_autograd"]
    assert sk.__file__.startswith(__import__("os").getcwd()), sk.__file__
    print(json.dumps({"hit": c["autograd_cache_hit"], "miss": c["autograd_cache_miss"],
                      "tag": torch.compiler.config.cache_key_tag}))
""")


def test_tagged_keeps_the_users_tag_and_replaces_an_older_digest():
    assert _compile_cache.tagged("", "ab12") == "sparsekern=ab12"
    assert _compile_cache.tagged("mine", "ab12") == "mine;sparsekern=ab12"
    assert _compile_cache.tagged("mine;sparsekern=00ff", "ab12") == "mine;sparsekern=ab12"
    assert _compile_cache.tagged("sparsekern=ab12", "ab12") == "sparsekern=ab12"


def test_import_puts_the_build_digest_in_the_cache_key_tag():
    tag = torch.compiler.config.cache_key_tag
    assert "sparsekern=" in tag
    assert _compile_cache.install() == tag  # idempotent


def test_digest_changes_with_any_source_byte_and_with_the_compiled_library(tmp_path):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "a.py").write_text("x = 1\n")
    (root / "sub" / "b.py").write_text("y = 2\n")
    lib = tmp_path / "_C.so"
    lib.write_bytes(b"\x7fELF" + bytes(100))
    d0 = _compile_cache.build_digest(root, lib)
    assert _compile_cache.build_digest(root, lib) == d0
    (root / "sub" / "b.py").write_text("y = 3\n")
    d1 = _compile_cache.build_digest(root, lib)
    assert d1 != d0
    lib.write_bytes(b"\x7fELF" + bytes(99) + b"\1")
    assert _compile_cache.build_digest(root, lib) != d1
    assert _compile_cache.build_digest(root, None) != d1


def _copy_package(dest: pathlib.Path) -> pathlib.Path:
    shutil.copytree(PKG, dest / "sparsekern",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _run_step(pythonpath: pathlib.Path, cache_dir: pathlib.Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), TORCHINDUCTOR_CACHE_DIR=str(cache_dir),
               TORCHINDUCTOR_FX_GRAPH_CACHE="1", TORCHINDUCTOR_AUTOGRAD_CACHE="1")
    env.pop("TORCH_COMPILE_CACHE_KEY_TAG", None)
    # cwd: `python -c` puts it first on sys.path, and the checkout's own package must not win.
    out = subprocess.run([sys.executable, "-c", STEP], env=env, cwd=pythonpath,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(torch.compiler, "config"), reason="torch without cache tags")
def test_a_changed_build_misses_the_cache_another_build_filled(tmp_path):
    """Two copies of the package that differ by one comment share one cache directory: the
    second copy must compile afresh, while a rerun of the first hits (so the cache is on)."""
    cache = tmp_path / "cache"
    first = _copy_package(tmp_path / "first")
    second = _copy_package(tmp_path / "second")
    ops = second / "sparsekern" / "_ops.py"
    ops.write_text(ops.read_text() + "\n# another build\n")

    filled = _run_step(first, cache)
    assert filled["miss"] >= 1, filled
    again = _run_step(first, cache)
    assert again["hit"] >= 1 and again["tag"] == filled["tag"], (filled, again)
    other = _run_step(second, cache)
    assert other["hit"] == 0 and other["miss"] >= 1, (filled, other)
    assert other["tag"] != filled["tag"]
