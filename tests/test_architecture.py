"""The layer rule (docs/ARCHITECTURE.md, "Layers"): every module of sparsekern imports only
modules of its own rank or below, and no import cycle joins modules. Checked on the source:
every ``import`` statement, those inside functions and ``if`` blocks included, is an edge.

``from package import name`` is an edge to ``package.name`` when that is a module, else to
``package`` (its ``__init__``). A parent package's ``__init__`` that Python runs on the way
to a submodule is not an edge: a package ``__init__`` is a re-export list, ranked with the
package (and ``sparsekern/__init__`` above everything)."""
from __future__ import annotations

import ast
import pathlib
from typing import Dict, List, Set

import pytest

import sparsekern

ROOT = pathlib.Path(sparsekern.__file__).parent

#: Ranks, lowest first: a module may import its own rank or a lower one, never a higher one.
#: Keys are module-name prefixes (the longest matching prefix wins).
RANKS = {
    # 0: plain containers, the layout registry, the op's output/extension helpers
    "sparsekern.formats": 0,
    "sparsekern._output": 0,
    "sparsekern._extension": 0,
    "sparsekern._version": 0,
    "sparsekern._compile_cache": 0,  # the build's digest in torch.compile's cache keys
    "sparsekern._ops": 0,  # the op schemas (helper "rel", issue 16 item 3), below _extension
    "sparsekern._cli": 0,  # argparse checks shared by the command lines (stdlib only)
    "sparsekern._warn": 0,  # warnings' stacklevel at the user's line (stdlib only)
    "sparsekern.runtime": 0,  # process-wide malloc settings (stdlib only)
    # 1: kernels and the backends that bind them
    "sparsekern.triton": 1,
    "sparsekern.backends": 1,
    # 2: the op and its functional wrappers
    "sparsekern.ops": 2,
    "sparsekern._attention": 2,  # the attention op's Python side (fake, autograd, non-CPU)
    "sparsekern.functional": 2,
    # 3: modules and model-level swap, serialization
    "sparsekern.inputs": 3,
    "sparsekern._layers": 3,
    "sparsekern._packed_module": 3,
    "sparsekern.conv": 3,
    "sparsekern.nn": 3,
    "sparsekern.serialization": 3,
    # 3: timing primitives (shared by auto and bench, import nothing of sparsekern above 3)
    "sparsekern.timing": 3,
    # 4: pruning and the model zoo
    "sparsekern.prune": 4,
    "sparsekern.models": 4,
    # 5: latency-aware choice and the benchmark harness
    "sparsekern.auto": 5,
    "sparsekern.bench": 6,
    # 7: the demo, the command line, the public package
    "sparsekern.demo": 7,
    "sparsekern.__main__": 8,  # the command line: an entry point over the whole package
    "sparsekern": 8,
}

#: The core: nothing in it may import prune, auto, bench or demo (the rule of issue 16).
CORE = ("sparsekern.formats", "sparsekern.ops", "sparsekern.backends", "sparsekern.triton",
        "sparsekern.nn", "sparsekern.conv", "sparsekern.serialization", "sparsekern.functional",
        "sparsekern.inputs", "sparsekern._layers", "sparsekern._packed_module",
        "sparsekern._output", "sparsekern._extension", "sparsekern.timing")
ABOVE_CORE = ("sparsekern.prune", "sparsekern.auto", "sparsekern.bench", "sparsekern.demo")


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> Dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(source: str, name: str, is_package: bool, known: Set[str]) -> List[str]:
    """sparsekern modules imported anywhere in ``source`` (module ``name``)."""
    pkg = name if is_package else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # "sparsekern.formats.csc.CSC" -> the module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.append(t)
    return out


def graph() -> Dict[str, Set[str]]:
    mods = all_modules()
    known = set(mods)
    return {n: set(imports_of(p.read_text(), n, p.name == "__init__.py", known))
            for n, p in mods.items()}


def rank(name: str) -> int:
    """The rank of module ``name``: its longest prefix in RANKS (the bare package name
    ranks only the package's ``__init__``); ValueError for a module without one."""
    keys = [k for k in RANKS if name == k or (k != "sparsekern" and name.startswith(k + "."))]
    if not keys:
        raise ValueError(f"module {name} has no rank: add it (or its package) to RANKS in "
                         f"tests/test_architecture.py")
    return RANKS[max(keys, key=len)]


def cycles(g: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_rank():
    for name in all_modules():
        rank(name)  # raises ValueError (max of nothing) for an unranked module


def test_no_module_imports_upward():
    up = sorted(f"{a} (rank {rank(a)}) imports {b} (rank {rank(b)})"
                for a, deps in graph().items() for b in deps if rank(b) > rank(a))
    assert up == []


def test_core_imports_nothing_above_it():
    bad = sorted(f"{a} imports {b}" for a, deps in graph().items() if a.startswith(CORE)
                 for b in deps if b.startswith(ABOVE_CORE))
    assert bad == []


def test_no_import_cycles():
    assert cycles(graph()) == []


# -- the checker itself: it must see what it claims to see ------------------------------------
KNOWN = {"sparsekern", "sparsekern.nn", "sparsekern.auto", "sparsekern.auto.choose",
         "sparsekern.formats", "sparsekern.formats.csc"}


def test_walker_sees_function_level_and_conditional_imports():
    src = ("import torch\n"
           "def f():\n    from .auto.choose import decide_matrix\n"
           "if True:\n    import sparsekern.formats.csc\n"
           "from .formats import to_sparse\n")
    got = imports_of(src, "sparsekern.nn", False, KNOWN)
    assert sorted(got) == ["sparsekern.auto.choose", "sparsekern.formats", "sparsekern.formats.csc"]


def test_walker_resolves_relative_imports_in_packages():
    got = imports_of("from .. import nn\nfrom . import choose\n", "sparsekern.auto", True, KNOWN)
    assert sorted(got) == ["sparsekern.auto.choose", "sparsekern.nn"]


def test_upward_import_and_cycle_are_caught():
    g = {"sparsekern.nn": {"sparsekern.auto.choose"},
         "sparsekern.auto.choose": {"sparsekern.nn"}}
    assert rank("sparsekern.auto.choose") > rank("sparsekern.nn")
    assert cycles(g) == [["sparsekern.auto.choose", "sparsekern.nn"]]


def test_unranked_module_is_an_error():
    with pytest.raises(ValueError, match=r"module sparsekern._new has no rank: add it"):
        rank("sparsekern._new")
    with pytest.raises(ValueError, match=r"module elsewhere.module has no rank"):
        rank("elsewhere.module")


# -- functions short enough to read at once ----------------------------------------------------
MAX_FUNCTION_LINES = 80
#: Kernels are exempt (one kernel is one function).
KERNELS = {"sparsekern.triton.bsr.bsr_spmm_kernel", "sparsekern.triton.csc.csc_spmm_kernel",
           "sparsekern.triton.semi24.semi24_spmm_kernel"}
def code_lines(node) -> int:
    """Lines of a function from its ``def`` to its end, its docstring not counted (a long
    docstring documents; it does not make the code harder to read at once)."""
    body = node.body
    doc = (isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
           and isinstance(body[0].value.value, str) and len(body) > 1)
    skipped = (body[1].lineno - body[0].lineno) if doc else 0
    return node.end_lineno - node.lineno + 1 - skipped


def long_functions(limit: int = MAX_FUNCTION_LINES) -> Dict[str, int]:
    out = {}
    for name, path in all_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = code_lines(node)
                if lines > limit:
                    out[f"{name}.{node.name}"] = lines
    return out


def test_no_function_over_80_lines_outside_kernels():
    long = long_functions()
    assert {f: n for f, n in long.items() if f not in KERNELS} == {}


def test_code_lines_skips_only_the_docstring():
    fn = ast.parse('def f():\n    """doc\n    more"""\n    x = 1\n    return x\n').body[0]
    assert code_lines(fn) == 3  # def, x = 1, return x
    fn = ast.parse("def g():\n    x = 1\n    return x\n").body[0]
    assert code_lines(fn) == 3
