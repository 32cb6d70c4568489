"""The results document: CLI output files, JSON schema checks, tables, README rendering."""
import copy
import json
import os

import pytest

from sparsekern import _extension
from sparsekern.bench import __main__ as cli
from sparsekern.bench import cases, e2e, models, report
from sparsekern.bench.cases import Case, Shape

TINY = Shape("tiny", 64, 96, "test")
TINY_CASES = [Case("2:4", TINY, 1, 0.5), Case("2:4", TINY, 4, 0.5),
              Case("bsr", TINY, 1, 0.75, (16, 16)), Case("bsr", TINY, 1, 0.5, (16, 16)),
              Case("csc", TINY, 2, 0.9), Case("csc", TINY, 2, 0.9, activation="relu")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One tiny CLI run (tiny cases, a tiny encoder) shared by the tests of this module."""
    mp = pytest.MonkeyPatch()
    mp.setattr(cases, "matrix", lambda name: list(TINY_CASES))
    cfg = models.EncoderConfig("tiny", 64, 4, 128, 1)
    mp.setitem(models.MODELS, "tiny", (lambda: models.Encoder(cfg), cfg.hidden))
    mp.setattr(e2e, "QUICK_MODELS", ("tiny",))
    out = tmp_path_factory.mktemp("bench")
    try:
        rc = cli.main(["--quick", "--out", str(out), "--name", "t", "--min-time", "0.001",
                       "--no-progress", "--threads", "1"])
    finally:
        mp.undo()
    assert rc == 0
    return out


@pytest.fixture
def doc(run_dir):
    with open(run_dir / "t.json") as f:
        return json.load(f)


def test_cli_writes_json_markdown_and_plots(run_dir):
    names = sorted(os.listdir(run_dir))
    assert "t.json" in names and "t.md" in names
    assert {"t-2-4.png", "t-bsr16x16.png", "t-csc.png", "t-csc-relu.png"} <= set(names)
    for n in names:
        if n.endswith(".png"):
            with open(run_dir / n, "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_document_is_valid_and_complete(doc):
    assert report.document_problems(doc) == []
    assert doc["schema"] == report.SCHEMA and doc["mode"] == "quick" and doc["device"] == "cpu"
    assert [c["id"] for c in doc["cases"]] == [c.id for c in TINY_CASES]
    assert {(m["variant"], m["batch"]) for m in doc["models"]} == {
        (v.name, b) for v in e2e.VARIANTS for b in e2e.BATCHES}
    m = doc["machine"]
    assert m["cpu"]["model"] and m["cpu"]["usable_cpus"] >= 1
    assert m["versions"]["torch"] and "blas_info" in m["torch_blas"]
    assert doc["settings"]["threads"] == 1 and doc["settings"]["timer"]["min_time"] == 0.001
    assert doc["calibration"]["balance_flop_per_byte"] > 0


def test_load_validates(run_dir):
    assert report.load(str(run_dir / "t.json"))["name"] == "t"


def test_tampered_speedup_is_caught(doc):
    bad = copy.deepcopy(doc)
    bad["cases"][0]["speedup"]["best_dense"] = 99.0
    assert any("speedup['best_dense'] = 99.0" in p for p in report.document_problems(bad))
    with pytest.raises(ValueError, match="invalid results document"):
        report.check_document(bad)


def test_wrong_best_dense_is_caught(doc):
    bad = copy.deepcopy(doc)
    c = bad["cases"][0]
    c["best_dense"] = next(n for n, v in c["candidates"].items()
                           if v["kind"] == "dense" and n != c["best_dense"])
    assert any("is not the fastest" in p for p in report.document_problems(bad))


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.pop("machine"), "missing key 'machine'"),
    (lambda d: d.update(schema="other/9"), "schema 'other/9'"),
    (lambda d: d["cases"][0].update(N=True), "'N' is bool, expected int"),
    (lambda d: d["cases"][0]["candidates"]["sparsekern"].update(timing=None),
     "status ok needs a timing"),
    (lambda d: d["cases"][0]["candidates"]["torch.matmul"].update(kind="magic"),
     "kind 'magic'"),
    (lambda d: d["cases"][0]["candidates"]["torch.matmul"].update(status="skipped"),
     "status 'skipped' but a timing is present"),
    (lambda d: d["cases"][0].update(bound=123.0), "bound 123.0"),
    (lambda d: d["cases"][0]["cold"].update(speedup=99.0), "cold figures do not match"),
    (lambda d: d["models"][0].update(speedup=42.0), "speedup does not match"),
    (lambda d: d["models"][0].update(status="skipped", reason=""), "without a reason"),
])
def test_schema_problems_are_named(doc, mutate, match):
    bad = copy.deepcopy(doc)
    mutate(bad)
    assert any(match in p for p in report.document_problems(bad)), report.document_problems(bad)


def test_not_a_dict():
    assert report.document_problems([]) == ["document is list, expected a JSON object"]


def test_markdown_tables(doc, run_dir):
    md = (run_dir / "t.md").read_text()
    assert ("| layout | shape M×K | N | sparsity | backend | ISA | sparsekern ms | best dense "
            "| dense ms | vs dense | cold vs dense |") in md
    case = doc["cases"][0]
    assert case["isa"] in ("avx512", "avx2", "portable", None)
    assert case["isa"] is not None or case["backend"] != "cpu"
    cold = case["cold"]   # cold figures beside the warm ones, from the cold timings
    assert cold["speedup"] == cold["dense_s"] / cold["sparse_s"]
    assert case["candidates"]["sparsekern"]["timing_cold"]["reps"] >= 1
    assert "vs torch.sparse.csr" in md and "vs torch.sparse.bsr" in md
    assert md.count("\n| 2:4 | 64×96 |") == 2
    assert "## Models" in md and report.IDEAL_COLUMN in md and report.MODELS_NOTE in md
    assert "Amdahl limit" not in md  # it was exceeded by measured speedups: no bound
    table = report.cases_table(doc["cases"])
    assert len(table.splitlines()) == 2 + len(TINY_CASES)


def test_summary_table_takes_geomean_over_shapes():
    def case(variant, n, sp):
        return {"variant": variant, "sparsity": 0.9, "N": n, "speedup": {"best_dense": sp}}
    t = report.summary_table([case("csc", 1, 2.0), case("csc", 1, 8.0), case("csc", 8, None),
                              case("2:4", 8, 1.5)])
    lines = t.splitlines()
    assert lines[0] == "| layout | sparsity | N=1 | N=8 |"
    assert lines[2] == "| csc | 90% | 4x | — |"
    assert lines[3] == "| 2:4 | 90% | — | 1.5x |"


def test_render_readme_and_short(doc, run_dir, capsys):
    text = report.render_readme(doc)
    assert "| layout | sparsity |" in text and "Whole models" in text
    assert cli.main(["--render", str(run_dir / "t.json")]) == 0
    assert capsys.readouterr().out.strip() == text.strip()
    assert cli.main(["--render", str(run_dir / "t.json"), "--short"]) == 0
    assert "t: 6 cases" in capsys.readouterr().out


def test_formatting():
    assert report.fmt_x(1.2345) == "1.23x" and report.fmt_x(None) == "—"
    assert report.fmt_x(float("inf")) == "—" and report.fmt_x(250.4) == "250x"
    assert report.fmt_ms(0.0012345) == "1.23" and report.fmt_ms(None) == "—"
    assert report.fmt_ms(2.5) == "2500"


def test_write_json_replaces_infinities(tmp_path):
    p = report.write_json({"a": float("inf"), "b": [1.0, float("nan")]}, str(tmp_path / "x.json"))
    assert json.load(open(p)) == {"a": None, "b": [1.0, None]}


def test_cli_rejects_unknown_layout(capsys):
    with pytest.raises(SystemExit) as e:  # an argparse error now, before any work
        cli.main(["--quick", "--layout", "coo", "--no-progress"])
    assert e.value.code == 2
    assert "error: argument --layout: unknown layout 'coo'" in capsys.readouterr().err


def test_cli_rejects_cuda_without_a_gpu(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert cli.main(["--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.skipif(_extension._C is None, reason="sparsekern._C is not built")
@pytest.mark.parametrize("argv", [["--quick", "--no-progress"], ["--contention"]])
def test_cli_stops_on_a_bad_cpu_variable_before_timing(capsys, cpu_isa_env, argv):
    """Every kernel call would raise it: the run stops first, naming the variable."""
    cpu_isa_env("AVX2")
    assert cli.main(argv) == 2
    assert ("error: SPARSEKERN_CPU_ISA='AVX2' is not a CPU instruction set choice; expected "
            "one of 'portable', 'avx2', 'avx512', 'auto'") in capsys.readouterr().err


def test_default_name():
    assert cli.default_name("cpu", True, []) == "cpu-quick"
    assert cli.default_name("cpu", False, ["2:4", "csc"]) == "cpu-full-2-4-csc"
