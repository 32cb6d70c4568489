"""sparsekern.auto times through the shared sparsekern.timing, never through the benchmark
harness (issue 16: timing in one place, no auto -> bench dependency for it); and
sparsekern.timing imports neither auto nor bench. Checked on the source (every import,
function-level ones included)."""
import ast
import pathlib

import sparsekern

ROOT = pathlib.Path(sparsekern.__file__).parent


def _imports(path: pathlib.Path):
    """Absolute module names imported by ``path`` (relative imports resolved)."""
    pkg = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])
    return _imports_of(path.read_text(), pkg)


def _imports_of(source: str, pkg: str):
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out += [base] + [f"{base}.{a.name}" for a in node.names]
    return out


def test_auto_times_through_sparsekern_timing_only():
    bad = {}
    for f in sorted((ROOT / "auto").glob("*.py")):
        hits = [m for m in _imports(f) if m.startswith(("sparsekern.bench.timing",
                                                        "sparsekern.bench.machine"))]
        if hits:
            bad[f.name] = hits
    assert bad == {}


def test_timing_imports_nothing_above_it():
    for f in sorted((ROOT / "timing").glob("*.py")):
        ups = [m for m in _imports(f) if m.startswith(("sparsekern.auto", "sparsekern.bench",
                                                       "sparsekern.demo", "sparsekern.prune"))]
        assert ups == [], f"{f.name} imports {ups}"


def test_the_import_walker_sees_function_level_imports():
    src = "def g():\n    from ..bench.timing import plan\n    import sparsekern.bench.machine\n"
    got = _imports_of(src, "sparsekern.auto")
    assert "sparsekern.bench.timing.plan" in got and "sparsekern.bench.machine" in got
