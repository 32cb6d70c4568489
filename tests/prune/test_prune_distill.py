"""prune.distill: recovery against the dense teacher, masks held, DDP on 2 CPU ranks."""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern import prune
from sparsekern.prune.distill import _cosine

ROOT = Path(__file__).resolve().parents[2]


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


def _data(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(16, 16, generator=g) for _ in range(n)]


def test_distill_lowers_the_loss_and_keeps_pruned_weights_zero():
    teacher = _mlp()
    model = copy.deepcopy(teacher)
    masks = prune.prune_model(model, None, "2:4", "l1")
    before = {n: model.get_submodule(n).weight.detach().clone() for n in masks}
    losses = prune.distill(model, teacher, _data(), masks=masks, steps=60, lr=3e-3,
                           progress=False)
    assert len(losses) == 60
    assert sum(losses[-6:]) / 6 < 0.5 * sum(losses[:6]) / 6
    for n, keep in masks.items():
        w = model.get_submodule(n).weight.detach()
        assert (w[~keep] == 0).all()
        assert not torch.equal(w, before[n])  # the kept weights did learn
    for p, q in zip(teacher.parameters(), _mlp().parameters()):
        assert torch.equal(p, q)  # the teacher is untouched



def test_a_generator_feeds_distill_once_and_running_out_says_so():
    """A one-shot iterator cannot be cycled: more steps than batches said 'data is empty',
    although it had batches."""
    teacher = _mlp()
    model = copy.deepcopy(teacher)
    masks = prune.prune_model(model, None, "2:4", "l1")
    data = _data(3)
    losses = prune.distill(copy.deepcopy(model), teacher, (x for x in data), masks=masks,
                           steps=3, progress=False)
    assert losses == prune.distill(copy.deepcopy(model), teacher, data, masks=masks, steps=3,
                                   progress=False)
    with pytest.raises(ValueError, match=r"data ran out after 3 batches: a one-shot iterator "
                                         r"\(a generator\) cannot be read again; give steps "
                                         r"<= 3, or a list or DataLoader"):
        prune.distill(model, teacher, (x for x in data), masks=masks, steps=4, progress=False)

def test_distill_on_every_item_kind_and_intermediate_layers():
    pytest.importorskip("transformers", reason="transformers is not installed")
    from sparsekern.models.minilm import tiny_bert_encoder
    teacher = tiny_bert_encoder()
    teacher.train()
    teacher.encoder.eval()
    model = copy.deepcopy(teacher)
    flags = {n: m.training for n, m in model.named_modules()}
    ids = torch.randint(0, 100, (4, 8), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    masks = prune.prune_model(model, 0.5, "fine", "sparsegpt", calib=[batch])
    data = [batch, (batch, torch.zeros(4)), sk.Args(ids, torch.ones_like(ids))]
    inter = ["encoder.encoder.layer.0.output"]
    losses = prune.distill(model, teacher, data, masks=masks, steps=9, lr=1e-3, loss="cosine",
                           layers=inter, progress=False)
    assert len(losses) == 9 and all(l >= 0 for l in losses)
    assert {n: m.training for n, m in model.named_modules()} == flags
    for n, keep in masks.items():
        assert (model.get_submodule(n).weight[~keep] == 0).all()


def test_default_masks_hold_the_current_zeros_and_default_steps_is_one_pass():
    teacher = _mlp()
    model = copy.deepcopy(teacher)
    prune.prune_model(model, 0.5, "fine", "l1")
    zeros = {n: m.weight == 0 for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    losses = prune.distill(model, teacher, _data(5), lr=1e-2, progress=False)
    assert len(losses) == 5
    for n, z in zeros.items():
        assert (model.get_submodule(n).weight[z] == 0).all()


def test_mismatched_teacher_and_bad_masks_are_rejected():
    model, data = _mlp(), _data(2)
    other = nn.Sequential(nn.Linear(16, 5))
    with pytest.raises(ValueError, match=r"final output: the student's output has shape "
                                         r"\[16, 8\] but the teacher's has \[16, 5\]; distill "
                                         r"needs a teacher with the same outputs"):
        prune.distill(model, other, data, masks={}, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"mask for layer '0' has shape \[4, 4\]; expected the "
                                         r"weight's shape \[32, 16\]"):
        prune.distill(model, _mlp(), data, masks={"0": torch.ones(4, 4, dtype=torch.bool)},
                      steps=1, progress=False)
    with pytest.raises(ValueError, match=r"mask for layer 'fc9': Sequential has no layer of "
                                         r"that name"):
        prune.distill(model, _mlp(), data, masks={"fc9": torch.ones(1, dtype=torch.bool)},
                      steps=1, progress=False)
    with pytest.raises(ValueError, match=r"layers: the teacher has no module named '1'"):
        prune.distill(model, nn.Sequential(nn.Linear(16, 8)), data, masks={}, steps=1,
                      layers=["1"], progress=False)
    with pytest.raises(ValueError, match=r"teacher is the student itself"):
        prune.distill(model, model, data, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"loss must be one of \('mse', 'cosine'\), got 'l1'"):
        prune.distill(model, _mlp(), data, loss="l1", progress=False)
    with pytest.raises(ValueError, match=r"steps must be a positive int, got 0"):
        prune.distill(model, _mlp(), data, steps=0, progress=False)
    with pytest.raises(ValueError, match=r"lr must be a positive number, got -1"):
        prune.distill(model, _mlp(), data, lr=-1, progress=False)
    with pytest.raises(TypeError, match=r"data batch 0 is a str; expected a tensor"):
        prune.distill(model, _mlp(), ["x"], steps=1, progress=False)
    with pytest.raises(ValueError, match=r"data is empty"):
        prune.distill(model, _mlp(), [], steps=1, progress=False)
    with pytest.raises(ValueError, match=r"steps is required when data has no length"):
        prune.distill(model, _mlp(), (x for x in data), progress=False)

    class Dicty(nn.Module):
        def forward(self, x):
            return {"n": 3}

    with pytest.raises(TypeError, match=r"the teacher returned a dict; expected a tensor, a "
                                        r"Mapping/ModelOutput holding one"):
        prune.distill(model, Dicty(), data, masks={}, steps=1, progress=False)


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_a_rejected_run_leaves_no_hook_or_moving_mask_behind():
    # layers= named in the student but not in the teacher: the student's capture hook
    # stayed registered (every later forward stored its output); an all-frozen student:
    # the same, plus torch's bare "optimizer got an empty parameter list"
    teacher = _mlp()
    model = copy.deepcopy(teacher)
    masks = prune.prune_model(model, None, "2:4", "l1")
    ref = copy.deepcopy(model)
    data = _data(2)
    with pytest.raises(ValueError, match=r"layers: the teacher has no module named '1'"):
        prune.distill(model, nn.Sequential(nn.Linear(16, 8)), data, masks=masks, steps=1,
                      layers=["1"], progress=False)
    assert _hooks(model) == 0
    frozen = copy.deepcopy(model).requires_grad_(False)
    with pytest.raises(ValueError, match=r"distill: the student has no parameter with "
                                         r"requires_grad=True; unfreeze the layers to train "
                                         r"\(model.requires_grad_\(True\)\) or pass optimizer="):
        prune.distill(frozen, teacher, data, masks=masks, steps=1, layers=["1"],
                      mask_update=prune.MaskUpdate(), progress=False)
    assert _hooks(frozen) == 0
    assert not nn.utils.parametrize.is_parametrized(frozen)
    x = torch.randn(5, 16)
    assert torch.equal(model(x), ref(x)) and torch.equal(frozen(x), ref(x))


def test_one_layer_name_as_a_string_is_one_name():
    # layers="1" was read as the names '1' ... character by character ("no module named 't'"
    # for "transformer.h.0"), unlike prune_model and sparsify, which take one name
    from collections import OrderedDict
    teacher = nn.Sequential(OrderedDict(zip(("fc1", "act", "fc2"), _mlp())))
    model = copy.deepcopy(teacher)
    masks = prune.prune_model(model, None, "2:4", "l1")
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    torch.manual_seed(0)
    la = prune.distill(a, teacher, _data(), masks=masks, steps=3, layers="fc1", progress=False)
    torch.manual_seed(0)
    lb = prune.distill(b, teacher, _data(), masks=masks, steps=3, layers=["fc1"],
                       progress=False)
    assert la == lb
    x = torch.randn(5, 16)
    assert torch.equal(a(x), b(x))


def test_cosine_schedule_with_warmup():
    f = _cosine(10, 2)
    assert f(0) == pytest.approx(1 / 3) and f(1) == pytest.approx(2 / 3)
    assert f(2) == pytest.approx(1.0)
    assert f(9) < f(5) < f(2) and f(9) > 0
    assert prune.DEFAULT_DISTILL_LR < 1e-4  # below pre-training's learning rate


def test_ddp_two_cpu_ranks_keep_weights_and_masks_identical(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(ROOT / "tests" / "prune" / "ddp_distill_worker.py"), str(out)]
    for attempt in (1, 2):
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=240)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"2-rank DDP distill did not finish in 240 s: {e.stdout} {e.stderr}")
        # One more run only for gloo's teardown abort, seen once in CI (a rank's C++
        # runtime terminating in std::terminate, no Python error); any other failure, or
        # this one twice, fails the test.
        if proc.returncode == 0 or "terminate called without an active exception" not in (
                proc.stderr + proc.stdout):
            break
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"ddp.rank{r}.json").read_text()) for r in (0, 1)]
    for r in results:
        assert r["world"] == 2
        assert r["weights_identical"] and r["masks_identical"] and r["zeros_held"]
        assert r["moved"] > 0  # the weights did train
        assert len(r["losses"]) == 12
    assert results[0]["losses"] == results[1]["losses"]  # averaged over the ranks
    # the CSC student: int16 row indices, which gloo cannot send (sk.prepare_ddp)
    csc = [r["csc"] for r in results]
    for c in csc:
        assert c["int16"] and c["values_identical"] and c["indices_identical"]
        assert c["pattern_kept"] and c["user_ddp_grads_identical"]
        assert c["prepared"] == ["0.indices", "2.indices"]
        assert c["mismatch_error"] is not None
        assert "rank 1 holds" in c["mismatch_error"] and "expected the same packed" in \
            c["mismatch_error"]
    assert csc[0]["losses"] == csc[1]["losses"] and len(csc[0]["losses"]) == 6


def test_eval_fn_keeps_the_best_rated_weights():
    """A student made worse by its steps keeps the best rated weights: a fake rating (a
    script of values, no timing), each rated state recorded to compare with the result."""
    teacher = _mlp()
    model = copy.deepcopy(teacher)
    masks = prune.prune_model(model, None, "2:4", "l1")
    script, states = iter([0.5, 0.9, 0.3, 0.2]), []

    def rating(m):
        states.append({k: v.detach().clone() for k, v in m.state_dict().items()})
        assert not m.training  # rated in eval mode, trained in train mode between
        return next(script)
    model.train()  # distill's default train_mode=False puts it in eval mode for the steps
    history = []
    losses = prune.distill(model, teacher, _data(), masks=masks, steps=6, lr=3e-3,
                           eval_fn=rating, eval_every=2, history=history, progress=False)
    assert len(losses) == 6 and [s for s, _ in history] == [0, 2, 4, 6]
    assert [m for _, m in history] == [0.5, 0.9, 0.3, 0.2]
    for k, v in model.state_dict().items():  # the weights rated 0.9 (after step 2)
        assert torch.equal(v, states[1][k])
    assert not torch.equal(states[1]["0.weight"], states[3]["0.weight"])
    for n, keep in masks.items():
        assert (model.get_submodule(n).weight[~keep] == 0).all()
    assert model.training  # the caller's flags are back


def test_eval_fn_keeps_the_starting_weights_when_no_step_helps():
    teacher = _mlp()
    model = copy.deepcopy(teacher)
    prune.prune_model(model, 0.5, "fine", "l1")
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    script = iter([1.0, 0.4, 0.6])  # steps 0, 3 (every 3), 5 (the last)
    history = []
    prune.distill(model, teacher, _data(), steps=5, lr=3e-3, eval_fn=lambda m: next(script),
                  eval_every=3, history=history, progress=False)
    assert [s for s, _ in history] == [0, 3, 5]
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())


def test_eval_fn_settings_are_checked():
    teacher = _mlp()
    model = copy.deepcopy(teacher)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"eval_every must be a positive int \(steps between "
                                             r"ratings\) when eval_fn is given, else 0, got "):
            prune.distill(model, teacher, _data(), steps=2, eval_fn=lambda m: 0.0,
                          eval_every=bad, progress=False)
    with pytest.raises(TypeError, match="eval_fn must be a callable model -> float "
                                        r"\(higher is better\), got float"):
        prune.distill(model, teacher, _data(), steps=2, eval_fn=0.5, eval_every=1,
                      progress=False)


def _sparsified_with_stored_zeros(layout, seed=0):
    """A two-layer MLP pruned 90% fine, packed as ``layout``: BSR 8x8 stores the zeros inside
    its kept blocks, 2:4 (pruned 2:4, then a few more zeros) the spare slots of sparse groups."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16))
    if layout == "2:4":
        prune.prune_model(model, granularity="2:4")
        with torch.no_grad():
            for m in (model[0], model[2]):
                m.weight[torch.rand(m.weight.shape) < 0.3] = 0.0
        packed = sk.sparsify(copy.deepcopy(model), layout="2:4")
    else:
        prune.prune_model(model, 0.9, "fine")
        packed = sk.sparsify(copy.deepcopy(model), layout="bsr", blocksize=(8, 8),
                             max_density=1.0)
    zeros = {n: m.values.detach() == 0 for n, m in packed.named_modules()
             if isinstance(m, sk.SparseLinear)}
    assert len(zeros) == 2 and all(z.any() and not z.all() for z in zeros.values())
    return model, packed, zeros


def _teacher(dense, seed=1):
    """A teacher that differs from the pruned student (the pruned model itself would give a
    zero loss and zero gradients: nothing would move, held or not)."""
    torch.manual_seed(seed)
    t = copy.deepcopy(dense)
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return t


def _train_steps(model, steps=3, lr=0.1):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(8, 32)).pow(2).sum().backward()
        opt.step()


@pytest.mark.parametrize("layout", ["bsr", "2:4"])
def test_stored_zeros_of_packed_layers_stay_zero(layout):
    """Fine-tuning a sparsified model trains every stored value: the zeros a format stores
    (inside BSR blocks, 2:4's spare slots) came back to life. distill and fine_tune hold them
    (with masks=None and with given masks), StoredZeroHolder does in a plain loop, and
    without it they do revive (so the checks below can fail)."""
    dense, packed, zeros = _sparsified_with_stored_zeros(layout)

    def revived(model):
        return sum(int((m.values.detach()[zeros[n]] != 0).sum()) for n, m in
                   model.named_modules() if n in zeros)

    plain = copy.deepcopy(packed)
    _train_steps(plain)
    assert revived(plain) > 0
    held = copy.deepcopy(packed)
    with prune.StoredZeroHolder(held):
        _train_steps(held)
    assert revived(held) == 0
    assert all(not torch.equal(a.values, b.values) for a, b in
               zip(held.modules(), packed.modules()) if isinstance(a, sk.SparseLinear))

    data = [torch.randn(8, 32) for _ in range(4)]
    student = copy.deepcopy(packed)
    losses = prune.distill(student, _teacher(dense), data, steps=4, lr=1e-2, progress=False)
    assert len(losses) == 4 and revived(student) == 0 and losses[0] > 0
    assert any(not torch.equal(a.values, b.values) for a, b in
               zip(student.modules(), packed.modules()) if isinstance(a, sk.SparseLinear))
    tuned = copy.deepcopy(packed)
    loader = [(x, torch.randint(0, 16, (8,))) for x in data]
    prune.fine_tune(tuned, loader, epochs=2, lr=1e-2, progress=False)
    assert revived(tuned) == 0
    free = copy.deepcopy(packed)
    prune.fine_tune(free, loader, epochs=2, lr=1e-2, masks={}, progress=False)
    assert revived(free) > 0  # {} holds nothing, as documented


def test_train_restores_each_modules_own_flag():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    model.train()
    model[1].eval()
    loader = [(torch.randn(3, 4), torch.randint(0, 2, (3,)))]
    prune.train(model, loader, epochs=1, progress=False)
    assert model.training and model[0].training and not model[1].training


def test_distill_with_empty_masks_holds_nothing_as_fine_tune_does():
    """masks={} means nothing held, the zeros packed layers store included (fine_tune's
    meaning too); None and given masks hold them."""
    dense, packed, zeros = _sparsified_with_stored_zeros("bsr")
    student = copy.deepcopy(packed)
    prune.distill(student, _teacher(dense), [torch.randn(8, 32) for _ in range(3)], masks={},
                  steps=3, lr=1e-2, progress=False)
    revived = sum(int((m.values.detach()[zeros[n]] != 0).sum()) for n, m in
                  student.named_modules() if n in zeros)
    assert revived > 0


def test_a_batch_whose_mask_does_not_fit_or_that_is_empty_is_named():
    # a Hugging Face model took an attention_mask of another shape than the input_ids and
    # distill ran on (the padding could not be told apart); an empty batch gave NaN losses
    pytest.importorskip("transformers")
    from sparsekern.models.minilm import tiny_bert_encoder
    enc = tiny_bert_encoder().encoder
    ids = torch.randint(0, 100, (4, 10))
    good = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    bad = {"input_ids": ids, "attention_mask": torch.ones(4, 9, dtype=torch.long)}
    student = copy.deepcopy(enc)
    with pytest.raises(ValueError, match=r"data batch 1 has attention_mask of shape \[4, 9\] but "
                                         r"input_ids of shape \[4, 10\]"):
        prune.distill(student, enc, [good, bad], steps=2, progress=False)
    with pytest.raises(ValueError, match=r"data batch 0 has shape \{'input_ids': \[0, 10\]\}, "
                                         r"which holds no data"):
        prune.distill(student, enc, [{"input_ids": ids[:0]}], steps=1, progress=False)


def test_a_compiled_student_takes_the_masks_and_layer_names_of_the_model_it_wraps():
    # prune_model(student) names its layers "0", torch.compile(student) "_orig_mod.0": distill
    # of the compiled student refused the masks prune_model had just returned
    torch.manual_seed(torch.seed() % 2**31)
    teacher = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    student = copy.deepcopy(teacher)
    masks = prune.prune_model(student, 0.5, "fine")
    compiled = torch.compile(student, backend="eager")
    data = [torch.randn(8, 16) for _ in range(3)]
    before = student[0].weight.detach().clone()
    losses = prune.distill(compiled, teacher, data, masks=masks, steps=3, lr=1e-2,
                           layers=["0"], progress=False)
    assert len(losses) == 3 and not torch.equal(student[0].weight, before)
    for n, m in masks.items():
        assert bool((dict(student.named_modules())[n].weight[~m] == 0).all())
    prefixed = {"_orig_mod." + n: m for n, m in masks.items()}  # the wrapper's own names
    prune.distill(compiled, teacher, data, masks=prefixed, steps=2, progress=False)
    for n, m in masks.items():
        assert bool((dict(student.named_modules())[n].weight[~m] == 0).all())


@pytest.mark.parametrize("kind", [tuple, list])
def test_a_top_level_input_ids_mask_pair_is_refused_as_calibration_refuses_it(kind):
    # distill(student, teacher, (ids, mask)) read the pair as two batches: a model that takes
    # input_ids alone trained on the mask as a batch of token ids, without an error
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Embedding(100, 16), nn.Linear(16, 16), nn.ReLU(),
                            nn.Linear(16, 4))
    student = copy.deepcopy(teacher)
    ids = torch.randint(2, 100, (4, 10))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with pytest.raises(TypeError, match=rf"data is a {kind.__name__} of two tensors, "
                                        r"\[4, 10\] torch.int64 and \[4, 10\] torch.int64: "
                                        r"it could be two batches.*sparsekern.Args"):
        prune.distill(student, teacher, kind((ids, mask)), steps=2, progress=False)
    # what the message offers runs; so do a tuple of two float batches and (inputs, targets)
    assert len(prune.distill(student, teacher, [ids, ids.flip(0)], steps=2,
                             progress=False)) == 2
    mlp = _mlp()
    x = _data(2)
    assert len(prune.distill(copy.deepcopy(mlp), mlp, tuple(x), steps=2, progress=False)) == 2
    assert len(prune.distill(copy.deepcopy(mlp), mlp, [(x[0], torch.zeros(16).long())],
                             steps=2, progress=False)) == 2


def test_args_with_a_positional_attention_mask_distill_over_the_real_tokens_only():
    # Args(input_ids, attention_mask) compared the padding tokens too; the dict form does not
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    torch.manual_seed(0)
    teacher = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        vocab_size=100, pad_token_id=0)).eval()
    student = copy.deepcopy(teacher)
    prune.prune_model(student, 0.5)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(3, 100, (4, 12), generator=g)
    mask = (torch.arange(12) < torch.randint(3, 12, (4, 1), generator=g)).long()
    ids[mask == 0] = 0
    losses = {k: prune.distill(copy.deepcopy(student), teacher, [item], steps=1, lr=1e-12,
                               progress=False)[0]
              for k, item in {"dict": {"input_ids": ids, "attention_mask": mask},
                              "args": sk.Args(ids, mask),
                              "args_kw": sk.Args(ids, attention_mask=mask)}.items()}
    with torch.no_grad():  # reference: the MSE of the logits over the real tokens
        d = (student(ids, mask).logits - teacher(ids, mask).logits) ** 2
    want = float(d[mask.bool()].mean())
    assert abs(float(d.mean()) - want) > 1e-3 * want  # padding would change the loss
    for k, got in losses.items():
        assert got == pytest.approx(want, rel=1e-5), k
