"""prune.distill: its numeric settings are checked, and under torch.distributed the ranks
agree on their data (``shard_data``), their step count and their buffers.

Run as a script (``torch.distributed.run``, 2 CPU ranks, gloo), this file is the worker of
:func:`test_ddp_data_steps_buffers_and_a_wrapped_student`: each rank writes what the test
checks to ``<out>.rank<r>.json``.
"""
import copy
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import sparsekern as sk
from sparsekern import prune
from sparsekern.prune.distill import _check_shares, _Feed, _fingerprint

ROOT = Path(__file__).resolve().parents[2]
NAN, INF = float("nan"), float("inf")


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))


def _data(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 8, generator=g) for _ in range(n)]


def _distill(**kw):
    teacher = _mlp()
    model = copy.deepcopy(teacher)
    prune.prune_model(model, 0.5, granularity="fine", criterion="l1")
    kw.setdefault("steps", 2)
    return prune.distill(model, teacher, _data(), progress=False, **kw)


# --- the settings: each bad value named with what was expected --------------------------

@pytest.mark.parametrize("lr", [INF, NAN, 0, -1e-3, True])
def test_lr_must_be_finite_and_positive(lr):
    with pytest.raises(ValueError) as e:
        _distill(lr=lr)
    assert str(e.value) == f"lr must be a positive number, got {lr!r}; expected a finite " \
                           f"value > 0"


@pytest.mark.parametrize("norm", [-1.0, 0.0, NAN, INF])
def test_max_grad_norm_must_be_none_or_finite_and_positive(norm):
    with pytest.raises(ValueError) as e:
        _distill(max_grad_norm=norm)
    assert str(e.value) == f"max_grad_norm must be None (no clipping) or a positive number, " \
                           f"got {norm!r}; expected a finite value > 0"


def test_max_grad_norm_none_turns_clipping_off():
    assert len(_distill(max_grad_norm=None)) == 2


@pytest.mark.parametrize("weight", [NAN, -1.0, INF, "1"])
def test_layer_weight_must_be_finite_and_not_negative(weight):
    with pytest.raises(ValueError) as e:
        _distill(layers=["0"], layer_weight=weight)
    assert str(e.value) == f"layer_weight must be a non-negative number, got {weight!r}; " \
                           f"expected a finite value >= 0"


def test_layer_weight_zero_is_allowed():
    assert len(_distill(layers=["0"], layer_weight=0.0)) == 2


@pytest.mark.parametrize("decay", [-0.1, NAN, INF])
def test_weight_decay_must_be_finite_and_not_negative(decay):
    with pytest.raises(ValueError) as e:
        _distill(weight_decay=decay)
    assert str(e.value) == f"weight_decay must be a non-negative number, got {decay!r}; " \
                           f"expected a finite value >= 0"


@pytest.mark.parametrize("warmup,steps,top", [(-1, 4, "steps=4"), (5, 4, "steps=4"),
                                              (2.5, 4, "steps=4"), (True, 4, "steps=4"),
                                              (-1, None, "steps"),
                                              (4, None, "steps=3")])  # default: 3 items
def test_warmup_must_be_an_int_in_0_to_steps(warmup, steps, top):
    with pytest.raises(ValueError) as e:
        _distill(warmup=warmup, steps=steps)
    assert str(e.value) == f"warmup must be an int in [0, {top}] (steps of linear " \
                           f"learning-rate warmup before the cosine decay), got {warmup!r}"


def test_warmup_of_every_step_still_reaches_the_peak_learning_rate():
    from sparsekern.prune.distill import _cosine
    assert len(_distill(warmup=2, steps=2)) == 2
    f = _cosine(4, 4)
    assert [f(t) for t in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_shard_data_must_be_a_bool():
    with pytest.raises(TypeError) as e:
        _distill(shard_data="yes")
    assert str(e.value) == "shard_data must be True (split data across the ranks) or False " \
                           "(each rank's data is its own), got 'yes'"


@pytest.mark.parametrize("lr", [INF, NAN, 0, -1.0])
def test_train_lr_must_be_finite_and_positive(lr):
    loader = [(torch.randn(4, 8), torch.randint(0, 8, (4,)))]
    with pytest.raises(ValueError) as e:
        prune.train(_mlp(), loader, lr=lr, progress=False)
    assert str(e.value) == f"lr must be positive, got {lr!r}; expected a finite number > 0"


# --- the data of one rank, and the ranks' agreement (no process group needed) ---------

def test_a_peeked_generator_still_gives_every_item_once():
    data = _data(4)
    feed = _Feed((x for x in data), rank=1, world=2, shard=True)
    assert feed.count is None and feed.has_items()  # peeked items 0 and 1
    items = feed.cycle()
    assert next(items) is data[1] and next(items) is data[3]
    with pytest.raises(ValueError, match=r"^data ran out after 2 batches: a one-shot"):
        next(items)


def test_a_rank_takes_every_world_th_item_or_all_of_its_own():
    data = _data(5)
    assert _Feed(data, 0, 2, shard=True).count == 3
    assert _Feed(data, 1, 2, shard=True).count == 2
    assert _Feed(data, 1, 2, shard=False).count == 5
    assert _Feed(data[0], 1, 2, shard=True).count == 0  # one batch: rank 1 has none


def test_fingerprints_tell_shards_apart():
    data = _data(4)
    same = _fingerprint(_Feed(data, 0, 2, True)) == _fingerprint(_Feed(list(data), 1, 2, True))
    assert same
    flipped = [data[0].flip(0)] + data[1:]  # the same values in another order
    assert _fingerprint(_Feed(data, 0, 2, True)) != _fingerprint(_Feed(flipped, 0, 2, True))
    assert _fingerprint(_Feed(data, 0, 2, True)) != _fingerprint(_Feed(data[:3], 0, 2, True))
    ids = torch.arange(8).view(2, 4)
    kinds = [{"input_ids": ids}, sk.Args(ids), (ids, torch.zeros(2))]
    prints = [_fingerprint(_Feed([k], 0, 2, True)) for k in kinds]
    assert len({tuple(p) for p in prints}) == 3  # the item's kind counts too


def _rows(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_ranks_with_different_data_are_told_to_pass_shard_data_false():
    with pytest.raises(ValueError) as e:
        _check_shares(_rows([2, 1, 4, 7, 1.5, 2.5], [2, 1, 4, 7, 0.5, 2.5]), shard=True)
    assert str(e.value) == (
        "data: the ranks passed different data (the first item or length of ranks [1] differs "
        "from rank 0's); with shard_data=True (the default) every rank passes the same full "
        "data and takes every world-size-th item of it. Pass shard_data=False when the data "
        "is already split per rank (DistributedSampler): each rank then trains on its own "
        "data as given")
    # nan in the data is the same data; shard_data=False compares no data
    _check_shares(_rows([2, 1, 4, 7, NAN, 2], [2, 1, 4, 7, NAN, 2]), shard=True)
    _check_shares(_rows([2, 1, 4, 7, 1, 2], [2, 1, 0, 0, 0, 0]), shard=False)


def test_a_rank_without_items_is_named_with_every_rank_s_count():
    with pytest.raises(ValueError) as e:
        _check_shares(_rows([1, 1, 1, 7, 1, 2], [0, 0, 1, 7, 1, 2]), shard=True)
    assert str(e.value) == (
        "data has no item for rank 1 of 2 (items per rank: [1, 0]); with shard_data=True each "
        "rank takes every world-size-th item of the same data: give at least 2 batches, or "
        "shard_data=False for each rank to train on all of its own data")
    with pytest.raises(ValueError) as e:  # -1: no length (a generator), peeked
        _check_shares(_rows([-1, 1, 0, 0, 0, 0], [-1, 0, 0, 0, 0, 0], [3, 1, 0, 0, 0, 0]),
                      shard=False)
    assert str(e.value) == (
        "data has no item for rank 1 of 3 (items per rank: [1+, 0, 3]); with "
        "shard_data=False each rank trains on its own data: give every rank at least one "
        "batch")


# --- 2 CPU ranks under torch.distributed.run ----------------------------------------

def test_ddp_data_steps_buffers_and_a_wrapped_student(tmp_path):
    out = tmp_path / "args"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", __file__, str(out)]
    for attempt in (1, 2):
        try:  # a hang fails the test instead of blocking CI
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=120)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"2-rank distill did not finish in 120 s (a hang): {e.stdout} "
                        f"{e.stderr}")
        # one more run only for gloo's teardown abort (see test_prune_distill.py)
        if proc.returncode == 0 or "terminate called without an active exception" not in (
                proc.stderr + proc.stdout):
            break
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = [json.loads((tmp_path / f"args.rank{r}.json").read_text()) for r in (0, 1)]
    # shard_data=False: each rank's student sees exactly its own shard, once
    assert r0["own_shard"] == {"steps": 4, "seen": [0, 2, 4, 6]}
    assert r1["own_shard"] == {"steps": 4, "seen": [1, 3, 5, 7]}
    # the default (shard_data=True): every world-th item of the same data
    assert r0["full_data"]["seen"] == [0, 2, 4, 6] and r1["full_data"]["seen"] == [1, 3, 5, 7]
    # already sharded with shard_data=True: the same error on both ranks, no hang
    for r in (r0, r1):
        assert r["sharded_twice"].startswith("data: the ranks passed different data (the "
                                             "first item or length of ranks [1] differs")
        assert "Pass shard_data=False when the data is already split per rank" in \
            r["sharded_twice"]
    # unequal shares: the smallest on every rank, a warning on rank 0 only
    assert r0["uneven"]["steps"] == r1["uneven"]["steps"] == 3
    assert r0["uneven"]["warnings"] == [
        "distill: the ranks take unequal numbers of items of data (per rank: [3, 5]); every "
        "rank runs 3 steps, one pass over the smallest share, and the 2 extra items are "
        "dropped (as DistributedSampler(drop_last=True) drops them); pass steps= to cycle "
        "through every item"]
    assert r1["uneven"]["warnings"] == []
    assert r0["odd_full"]["steps"] == r1["odd_full"]["steps"] == 2  # 5 items: 3 and 2
    assert "per rank: [3, 2]" in r0["odd_full"]["warnings"][0]
    # a rank without items: the same error on every rank, before any training collective
    for r in (r0, r1):
        assert r["empty_rank"] == (
            "data has no item for rank 1 of 2 (items per rank: [2, 0]); with shard_data=False "
            "each rank trains on its own data: give every rank at least one batch")
        assert r["empty_rank_steps"] == r["empty_rank"]  # explicit steps: checked too
        assert r["one_batch"].startswith("data has no item for rank 1 of 2 (items per rank: "
                                         "[1, 0]); with shard_data=True")
        assert r["generator"] == {"steps": 2, "seen": 2}
        assert r["generator_no_steps"] == ("steps is required when data has no length (e.g. a "
                                           "generator; ranks [0, 1] have no len)")
    # a batch failing on one rank mid-training: that rank's error, the other told which
    assert r1["ran_out"].startswith("ValueError: data ran out after 2 batches")
    assert r0["ran_out"].startswith(
        "RuntimeError: distill stopped at step 3: rank(s) [1] failed reading its batch (rank "
        "1: ValueError: data ran out after 2 batches")
    assert r1["empty_batch"].startswith("ValueError: data batch 1 ")
    assert r0["empty_batch"].startswith("RuntimeError: distill stopped at step 1: rank(s) [1] "
                                        "failed reading its batch (rank 1: ValueError: data "
                                        "batch 1 ")
    for r in (r0, r1):
        # train_mode: every buffer (BatchNorm running stats) the same on every rank
        assert r["bn"]["differing"] == [] and r["bn"]["moved"]
        # a student the user wrapped in DDP takes the masks of the plain model
        assert r["wrapped"] == {"steps": 3, "zeros_held": True, "identical": True}


# --- the worker --------------------------------------------------------------------------

def _identical(t: torch.Tensor) -> bool:
    import torch.distributed as dist
    t = t.detach().flatten().to(torch.float64)
    everyone = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, t)
    return all(torch.equal(e, everyone[0]) for e in everyone)


def _ids(n: int) -> list:
    """n batches of one row whose column 0 is the batch's id."""
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(3))
    x[:, 0] = torch.arange(n, dtype=torch.float32)
    return [x[i:i + 1] for i in range(n)]


def _run(data, **kw) -> dict:
    """distill a fresh pruned MLP on ``data``; the ids (column 0) its student saw."""
    teacher = _mlp()
    model = copy.deepcopy(teacher)
    prune.prune_model(model, 0.5, granularity="fine", criterion="l1")
    ids: list = []
    model[0].register_forward_pre_hook(lambda m, a: ids.append(int(a[0][0, 0])))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = prune.distill(model, teacher, data, lr=1e-2, progress=False, **kw)
    said = [str(w.message) for w in caught if "distill:" in str(w.message)]
    return {"steps": len(losses), "seen": ids, "warnings": said}


def _error(data, **kw) -> str:
    try:
        _run(data, **kw)
    except ValueError as e:
        return str(e)
    return "no error"


def _failure(data, **kw) -> str:
    """The error (type: message) distill raised on this rank."""
    try:
        _run(data, **kw)
    except (ValueError, RuntimeError) as e:
        return f"{type(e).__name__}: {e}"
    return "no error"


def _bn(rank: int) -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    teacher = copy.deepcopy(model)
    masks = prune.prune_model(model, 0.5, granularity="fine", criterion="l1")
    g = torch.Generator().manual_seed(4)
    data = [torch.randn(4, 3, 8, 8, generator=g) for _ in range(4)]  # ranks take 2 each
    prune.distill(model, teacher, data, masks=masks, steps=4, train_mode=True, progress=False)
    return {"differing": [k for k, v in model.state_dict().items() if not _identical(v)],
            "moved": bool((model[1].running_mean != 0).any())}


def _wrapped() -> dict:
    teacher = _mlp()
    model = copy.deepcopy(teacher)
    masks = prune.prune_model(model, 0.5, granularity="fine", criterion="l1")
    losses = prune.distill(nn.parallel.DistributedDataParallel(model), teacher, _data(4),
                           masks=masks, steps=3, lr=1e-2, progress=False)
    zeros = all(bool((model.get_submodule(n).weight[~m] == 0).all()) for n, m in masks.items())
    return {"steps": len(losses), "zeros_held": zeros,
            "identical": all(_identical(p) for p in model.parameters())}


def main(out: str) -> None:
    import torch.distributed as dist
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    ids = _ids(8)
    own = ids[rank::2]  # as a DistributedSampler(shuffle=False) splits them
    res = {"own_shard": {k: v for k, v in _run(own, shard_data=False).items()
                         if k != "warnings"},
           "full_data": _run(ids),
           "sharded_twice": _error(own),
           "uneven": _run(_ids(3) if rank == 0 else _ids(5), shard_data=False),
           "odd_full": _run(_ids(5)),
           "empty_rank": _error(ids[:2] if rank == 0 else [], shard_data=False),
           "empty_rank_steps": _error(ids[:2] if rank == 0 else [], shard_data=False, steps=2),
           "one_batch": _error(ids[0]),
           "generator_no_steps": _error(x for x in ids)}
    # failures found mid-training on one rank stop every rank (no rank left in a collective)
    res["ran_out"] = _failure((x for x in ids[:5]), steps=3)  # rank 1 takes 2 of the 5
    res["empty_batch"] = _failure([ids[0], ids[1][:0], ids[2], ids[3]])  # rank 1's first
    gen = _run((x for x in ids[:4]), steps=2)
    res["generator"] = {"steps": gen["steps"], "seen": len(gen["seen"])}
    res["bn"] = _bn(rank)
    res["wrapped"] = _wrapped()
    with open(f"{out}.rank{rank}.json", "w") as f:
        json.dump(res, f)
    dist.barrier()  # both ranks reach the teardown together (see ddp_distill_worker.py)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
