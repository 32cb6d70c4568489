"""The demo's Python API and command line with a new user's inputs: tokenizer batches of
different lengths, one-shot iterators, bad settings and arguments (each rejected by name,
before any model runs), the labelled recovery's loss curve, the model's train/eval flags,
and the speedup check of a run that converts nothing. Tiny models, given latency tables,
no assertion on timing."""
import math

import pytest
import torch
from torch import nn

from sparsekern import demo
from sparsekern.auto.signature import input_label
from sparsekern.auto.table import LatencyTable, LayerLatency
from sparsekern.demo import minilm_job, report as demo_report
from sparsekern.demo.tasks import ClassificationTask, outputs
# The demo tests' tiny timer and fixtures (a private latency cache per test, one thread).
from tests.test_demo import TINY_TIMER, _private_cache, one_thread  # noqa: F401


# ----------------------------------------------------------------------------- helpers

def _table(names, shapes, paying=()):
    """CSC at 2% stored pays (x0.1) for the ``paying`` layers only."""
    def entry(n):
        fast = 1e-4 if n in paying else 2e-3
        return {s: LayerLatency.synthetic(1e-3, {"csc": [(0.02, fast), (0.5, 1.2e-3)]})
                for s in shapes}
    return LatencyTable(list(shapes), {n: entry(n) for n in names},
                        {s: 1e-4 for s in shapes}, {s: 1e-4 + 1e-3 * len(names) for s in shapes})


def _mlp_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(96, 64, generator=g)
    return X, X[:, :10].argmax(1)


def _mlp_cfg(tmp_path, shapes, **over):
    lines = []
    base = dict(target_speedup=2.0, table=_table(["fc1", "fc2", "head"], shapes, ("fc2",)),
                short_steps=1, final_steps=3, max_iterations=2, sensitivity_ratios=(0.5,),
                timer=TINY_TIMER, windows=1, layer_latency=False, out_dir=str(tmp_path / "out"),
                print_fn=lines.append)
    base.update(over)
    return demo.DemoConfig(**base), lines


def _token_batch(g, b, t, vocab=100):
    """A tokenizer-style batch: ids [b, t], the first row padded after t // 2 (id 0)."""
    ids = torch.randint(3, vocab, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.int64)
    mask[0, t // 2:] = 0
    ids[0, t // 2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


class TokenEcho(nn.Module):
    """A per-token model: input_ids [B, T] -> embeddings [B, T, 4]."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 4)

    def forward(self, input_ids, attention_mask=None):
        return self.emb(input_ids)


class NoRun(nn.Sequential):
    """A model that must not run: every check happens before any forward pass."""

    def __init__(self):
        super().__init__(nn.Linear(64, 10))

    def forward(self, *a, **k):
        pytest.fail("the model ran before the arguments were checked")


# ----------------------------------------------------------------------------- D1: token outputs

def test_token_shaped_outputs_are_mean_pooled_over_real_tokens():
    # was torch.cat of [B, T*H] rows: batches padded to different lengths could not be joined
    g = torch.Generator().manual_seed(0)
    model = TokenEcho()
    data = [_token_batch(g, 3, 5), _token_batch(g, 2, 8)]
    rows = outputs(model, data, "val")
    assert rows.shape == (5, 4)
    with torch.no_grad():
        e = model.emb(data[0]["input_ids"][0, :2]).mean(0)  # 2 real tokens of 5
    assert torch.allclose(rows[0], e, atol=1e-6)
    padded = {k: v.clone() for k, v in data[0].items()}
    padded["input_ids"][0, 2:] = 7  # what the padding holds never counts
    assert torch.allclose(outputs(model, [padded], "val")[0], e, atol=1e-6)
    ids = data[1]["input_ids"]  # token ids as a plain tensor: every token counts
    with torch.no_grad():
        assert torch.allclose(outputs(model, [ids])[1], model.emb(ids[1]).mean(0), atol=1e-6)


def test_outputs_keep_sample_vectors_and_name_batches_that_differ():
    lin = nn.Linear(3, 2)
    assert outputs(lin, [torch.randn(4, 3), torch.randn(2, 3)]).shape == (6, 2)
    seq = [torch.randn(2, 5, 3), torch.randn(2, 7, 3)]  # float inputs: no token ids to pool by
    with pytest.raises(ValueError, match=r"^val: the model's output has 10 values per sample on "
                                         r"batch 0 \(\[2, 5, 3\]\) but 14 on batch 1 "
                                         r"\(\[2, 7, 3\]\); expected one size"):
        outputs(lin, seq, "val")


def test_run_distills_a_bert_on_batches_of_different_lengths(tmp_path, one_thread):
    pytest.importorskip("transformers", reason="transformers is not installed (test extra)")
    from sparsekern.models.minilm import tiny_bert_encoder
    model = tiny_bert_encoder(seed=0, hidden=32, layers=1, intermediate=64).encoder  # [B, T, 32]
    g = torch.Generator().manual_seed(0)
    train, val, test = ([_token_batch(g, 4, 8), _token_batch(g, 4, 12)] for _ in range(3))
    xs = [_token_batch(g, 1, 8), _token_batch(g, 4, 8)]
    ffn = minilm_job.linear_names(model, minilm_job.FFN)
    names = minilm_job.linear_names(model, minilm_job.FFN + minilm_job.ATTENTION)
    cfg, _ = _mlp_cfg(tmp_path, [input_label(x) for x in xs], target_speedup=1.2, layers=ffn,
                      sensitivity_layers=ffn[:1], short_steps=0, final_steps=2,
                      table=_table(names, [input_label(x) for x in xs], ffn))
    r = demo.run(model, train, val, xs, cfg, test=test).report
    assert r["task"] == "distillation"
    assert r["quality"]["dense"] == {"mean_cosine": pytest.approx(1.0, abs=1e-5),
                                     "top1_agreement": 1.0}
    assert r["search"]["history"] and len(r["recovery_loss"]) in (0, 2)


# ----------------------------------------------------------------------------- D2: generators

def test_task_for_keeps_the_first_item_of_a_generator():
    # was: the item looked at to pick the task was consumed ("train is empty")
    x = torch.randn(4, 3)
    task = demo.task_for((b for b in [x]), (b for b in [x, x]))
    assert isinstance(task, demo.DistillTask) and len(task.train) == 1 and len(task.val) == 2
    y = torch.tensor([0, 1, 0, 1])
    task = demo.task_for((p for p in [(x, y)]), (p for p in [(x, y)]))
    assert isinstance(task, ClassificationTask)
    lin = nn.Linear(3, 2)
    assert task.metric(lin) == task.metric(lin)  # read twice: the same batches


def test_run_reads_one_shot_iterators_once(tmp_path, one_thread):
    # was "the loader yielded no samples": the first evaluation used the generators up
    X, Y = _mlp_data()
    pairs = [(X[i:i + 16], Y[i:i + 16]) for i in range(0, 96, 16)]
    torch.manual_seed(0)
    model = demo.DigitsMLP(hidden=32)
    shapes = ["[1, 64]", "[4, 64]"]
    cfg, lines = _mlp_cfg(tmp_path, shapes, target_speedup=[2.0, 2.0], criterion="wanda")
    res = demo.run(model, (p for p in pairs[:3]), (p for p in pairs[3:5]), [X[:1], X[:4]], cfg,
                   test=(p for p in pairs[5:]), calib=(x for x, _ in pairs[:2]))
    r = res.report
    with torch.no_grad():
        dense = float((model(pairs[5][0]).argmax(-1) == pairs[5][1]).float().mean())
    assert r["accuracy"]["dense"] == pytest.approx(dense)
    assert res.search.masks  # the table makes fc2 pay: pruned (wanda, from calib), recovered
    # D7: the labelled recovery's loss of every step
    assert len(r["recovery_loss"]) == 3 and all(math.isfinite(v) for v in r["recovery_loss"])
    assert any(line.startswith("recovery (classification, masks held, 3 steps") for line in lines)


# ----------------------------------------------------------------------------- D3: DemoConfig

@pytest.mark.parametrize("kwargs, message", [
    (dict(criterion="magic"), "criterion must be one of ['l1', 'l2', 'wanda', 'sparsegpt'] (a "
                              "weight pruning criterion), got 'magic'"),
    (dict(criterion="bn_scale"), "criterion must be one of ['l1', 'l2', 'wanda', 'sparsegpt']"),
    (dict(final_criterion="magic"), "final_criterion must be one of ['l1', 'l2', 'wanda', "
                                    "'sparsegpt'] (a weight pruning criterion), got 'magic'"),
    (dict(granularities=("weird",)), "granularities[0] must be a granularity the search can "
                                     "use: 'fine', 'N:M' (e.g. '2:4', N < M), or blocks (bm, bk) "
                                     "/ 'BMxBK' (e.g. (16, 16), '16x16'); got 'weird'"),
    (dict(granularities=("fine", "kernel")), "granularities[1] must be a granularity the "
                                             "search can use"),
    (dict(granularities="fine"), "granularities must be a non-empty list, e.g. ('fine', "
                                 "'2:4'), got 'fine'"),
    (dict(netadapt_steps=0), "netadapt_steps must be an int >= 1, got 0"),
    (dict(amc_episodes=0), "amc_episodes must be an int >= 1, got 0"),
    (dict(max_iterations=0), "max_iterations must be an int >= 1, got 0"),
    (dict(sensitivity_ratios=[1.5]), "sensitivity_ratios[0] must be a ratio in [0, 1) (the "
                                     "fraction of weights removed), got 1.5"),
    (dict(sensitivity_ratios=0.5), "sensitivity_ratios must be a non-empty list of ratios"),
    (dict(margin=-1), "margin must be in [0, 1), got -1"),
    (dict(min_cosine=2), "min_cosine must be in [-1, 1], got 2"),
    (dict(min_top1=1.5), "min_top1 must be in [0, 1], got 1.5"),
    (dict(max_ratio="x"), "max_ratio must be in (0, 1), got 'x'"),
    (dict(target_speedup="fast"), "target_speedup must be a finite number > 0 (a speedup over "
                                  "dense), got 'fast'"),
    (dict(target_speedup={"[1, 64]": 0}), "target_speedup['[1, 64]'] must be a finite number "
                                          "> 0"),
    (dict(required_speedup=[2, -1]), "required_speedup[1] must be a finite number > 0"),
    (dict(layers="fc1"), "layers must be None or a non-empty list of names (str), got 'fc1'"),
    (dict(seed=1.5), "seed must be an int, got 1.5"),
])
def test_config_rejects_each_bad_field_by_name(kwargs, message):
    with pytest.raises(ValueError) as e:
        demo.DemoConfig(**kwargs)
    assert str(e.value).startswith(message), str(e.value)


def test_config_rejects_a_bad_callable_and_settings_object():
    with pytest.raises(TypeError, match=r"^print_fn must be a callable taking one line \(str\), "
                                        r"got int 3"):
        demo.DemoConfig(print_fn=3)
    with pytest.raises(TypeError, match=r"^timer must be a TimerSettings, got dict"):
        demo.DemoConfig(timer={})


# ----------------------------------------------------------------------------- D4: run's arguments

def _no_work(monkeypatch):
    monkeypatch.setattr(demo.pipeline, "baseline", lambda st: pytest.fail("work started"))


@pytest.mark.parametrize("case, message", [
    ("set_later", "target_speedup must be a finite number > 0 (a speedup over dense), got "
                  "'fast'"),
    ("dict_key", "target_speedup is keyed by ['[2, 32]']; expected one value per example "
                 "input, keyed by its shape ['[1, 64]', '[4, 64]'] or by its name in labels "
                 "['one', 'four']"),
    ("labels", "labels has 1 names ['one'] for 2 example inputs ['[1, 64]', '[4, 64]']; "
               "expected one name per example input"),
    ("layers", "layers names ['nope'], which the model does not have; expected names of its "
               "layers, e.g. ['0']"),
    ("empty_val", "val is empty: give at least one batch"),
    ("one_sample", "val holds 1 sample in 1 batch(es); expected at least 2 samples"),
])
def test_run_rejects_bad_arguments_before_any_work(case, message, tmp_path, monkeypatch):
    _no_work(monkeypatch)
    X, Y = _mlp_data()
    pairs = [(X[:16], Y[:16])]
    cfg, _ = _mlp_cfg(tmp_path, ["[1, 64]", "[4, 64]"], table=None,
                      labels=None if case == "labels" else ["one", "four"])
    train, val = pairs, pairs
    if case == "set_later":
        cfg.target_speedup = "fast"
    elif case == "dict_key":
        cfg.target_speedup = {"[2, 32]": 2.0}
    elif case == "labels":
        cfg.labels = ["one"]
    elif case == "layers":
        cfg.layers = ["nope"]
    elif case == "empty_val":
        val = []
    elif case == "one_sample":
        train, val = [X[:4]], [X[:1]]
    with pytest.raises(ValueError) as e:
        demo.run(NoRun(), train, val, [X[:1], X[:4]], cfg)
    assert str(e.value).startswith(message), str(e.value)
    assert not (tmp_path / "out").exists()


def test_run_rejects_an_out_dir_that_is_a_file(tmp_path, monkeypatch):
    _no_work(monkeypatch)
    afile = tmp_path / "afile"
    afile.write_text("")
    X, Y = _mlp_data()
    cfg, _ = _mlp_cfg(tmp_path, ["[1, 64]"], table=None, out_dir=str(afile))
    with pytest.raises(ValueError, match=r"^out_dir: .*afile' exists and is not a folder; "
                                         r"expected a folder \(existing or new\)$"):
        demo.run(NoRun(), [(X[:16], Y[:16])], [(X[:16], Y[:16])], [X[:1]], cfg)


def test_speedups_may_be_keyed_by_shape_or_by_name():
    per_shape = demo.pipeline.per_shape
    shapes = ["[1, 64]", "[4, 64]"]
    assert per_shape({"[4, 64]": 2, "[1, 64]": 3}, shapes, "t") == {"[1, 64]": 3.0, "[4, 64]": 2.0}
    assert per_shape({"one": 3, "four": 2}, shapes, "t", ["one", "four"]) == \
        {"[1, 64]": 3.0, "[4, 64]": 2.0}
    with pytest.raises(ValueError, match=r"^t is keyed by \['one'\]; expected one value per"):
        per_shape({"one": 3}, shapes, "t", ["one", "four"])


# ----------------------------------------------------------------------------- D5: the CLI

@pytest.mark.parametrize("argv, message", [
    (["--granularity", "weird"], "argument --granularity: expected 'fine', 'N:M' (e.g. '2:4', "
                                 "N < M), or blocks (bm, bk) / 'BMxBK' (e.g. (16, 16), "
                                 "'16x16'); got 'weird'"),
    (["--granularity", "fine", "--granularity", "kernel"], "argument --granularity: expected "),
    (["--criterion", "apoz"], "argument --criterion: invalid choice: 'apoz' (choose from"),
    (["--final-criterion", "bn_scale"], "argument --final-criterion: invalid choice: "
                                        "'bn_scale' (choose from"),
    (["--seed", "1e3"], "argument --seed: expected an integer in [-2**63, 2**64 - 1], got '1e3'"),
])
def test_cli_checks_the_search_options_before_any_work(argv, message, tmp_path, capsys,
                                                       monkeypatch):
    # --granularity weird was a traceback minutes in (after training, table and sensitivity)
    from sparsekern.__main__ import main
    from sparsekern.demo import cli
    monkeypatch.setattr(cli, "detect_load", lambda: pytest.fail("work started"))
    with pytest.raises(SystemExit) as e:
        main(["demo", "--model", "mlp", "--quick", "--out", str(tmp_path / "out"), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: sparsekern demo") and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("sparsekern demo: error: " + message), err
    assert not (tmp_path / "out").exists()


def test_cli_passes_a_block_granularity_on():
    import argparse
    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    assert p.parse_args(["--granularity", "16x16", "--granularity", "2:4"]).granularity == \
        ["16x16", "2:4"]


# ----------------------------------------------------------------------------- D7: recovery loss

def test_classification_recovery_returns_every_step_loss():
    # was []: the report said "0 steps" and recovery_loss []
    torch.manual_seed(0)
    X, Y = _mlp_data()
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    task = ClassificationTask([(X[:32], Y[:32]), (X[32:64], Y[32:64])], [(X[64:], Y[64:])])
    w = model[0].weight.detach().clone()
    with torch.no_grad():
        first = float(nn.functional.cross_entropy(model(X[:32]), Y[:32]))
    curve = task.recover(model, steps=5, lr=1e-2)
    assert len(curve) == 5 and curve[0] == pytest.approx(first, rel=1e-5)
    assert not torch.equal(w, model[0].weight)
    assert task.recover(model, steps=0, lr=1e-2) == []


# ----------------------------------------------------------------------------- D8: train flags

def test_run_restores_every_module_flag(tmp_path, one_thread, monkeypatch):
    # was: model.eval() on the user's model, left in eval mode
    X, Y = _mlp_data()
    pairs = [(X[i:i + 16], Y[i:i + 16]) for i in range(0, 64, 16)]
    model = demo.DigitsMLP(hidden=16).train()
    model.fc2.eval()
    flags = {n: m.training for n, m in model.named_modules()}
    cfg, _ = _mlp_cfg(tmp_path, ["[1, 64]"], target_speedup=1.0)
    demo.run(model, pairs[:2], pairs[2:], [X[:1]], cfg)
    assert {n: m.training for n, m in model.named_modules()} == flags

    def boom(st):
        assert not st.dense.training  # the run itself sees eval mode
        raise RuntimeError("boom")
    monkeypatch.setattr(demo.pipeline, "sensitivity", boom)
    with pytest.raises(RuntimeError, match="boom"):
        demo.run(model, pairs[:2], pairs[2:], [X[:1]], cfg)
    assert {n: m.training for n, m in model.named_modules()} == flags


# ----------------------------------------------------------------------------- speedup check

def test_speedup_check_of_a_run_that_converts_nothing():
    # was "[OK] speedup 6.60x" while no layer was converted (timing noise)
    lat = {"speedup": 6.6}
    none = demo_report.speedup_check(lat, 2.0, converted=0)
    assert none["ok"] is False and none["applicable"] is False and none["measured"] == 6.6
    assert demo_report.speedup_check(lat, 1.0, converted=0)["ok"] is True  # 1x meets 1x
    assert demo_report.speedup_check(lat, 2.0, converted=1)["ok"] is True
    lines = []
    r = {"shapes": ["s"], "latency": {"s": {"label": "1 sentence"}},
         "checks": {"speedup": {"s": none}, "quality": {}, "auto_not_slower": {},
                    "prediction": {}, "measurement": {"too_busy": False}}}
    demo_report.print_checks(r, lines.append)
    assert "  [FAIL] speedup at 1 sentence: not applicable: no layer converted (the sparse " \
           "model is the dense model, 1x); required 2x" in lines


@pytest.mark.parametrize("field,value", [("criterion", "wanda"), ("final_criterion", "sparsegpt")])
def test_a_criterion_that_reads_data_without_calib_is_refused_up_front(tmp_path, field, value):
    X, y = _mlp_data()
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    cfg, lines = _mlp_cfg(tmp_path, ["[1, 64]"], **{field: value})
    with pytest.raises(ValueError, match=rf"config\.{field} '{value}' needs calibration data: "
                                         rf"pass calib=\.\.\. \(batches of model inputs\)"):
        demo.run(model, [(X[:32], y[:32])], [(X[32:64], y[32:64])], [X[:1]], cfg)
    assert not lines  # refused before any work


def test_float_targets_are_said_to_be_ignored():
    from sparsekern.demo.tasks import DistillTask, task_for
    X = torch.randn(8, 4)
    with pytest.warns(UserWarning, match=r"train's items are \(inputs, torch.float32 tensor\) "
                                         r"pairs: .* these float targets are ignored") as w:
        task = task_for([(X, X[:, :1])], [X])
    assert isinstance(task, DistillTask) and w[0].filename == __file__


def test_a_batch_the_model_cannot_take_is_named():
    from sparsekern.demo.tasks import outputs
    model = nn.Sequential(nn.Linear(32, 8))
    with pytest.raises(RuntimeError, match=r"^val batch 1: the model failed on it: mat1 and "
                                           r"mat2 shapes cannot be multiplied"):
        outputs(model, [torch.randn(4, 32), torch.randn(4, 31)], "val")
    emb = nn.Embedding(10, 4)
    with pytest.raises(IndexError, match=r"^test batch 0: the model failed on it: index out "
                                         r"of range"):
        outputs(emb, [torch.tensor([[3, 12]])], "test")
