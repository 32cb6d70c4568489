"""Run by test_prune_distill.py under torch.distributed.run (2 CPU ranks, gloo).

Each rank builds the same small model, prunes it, distills it on its own shard of the data
and writes what the test checks to ``<out>.rank<r>.json``.
"""
import copy
import json
import sys

import torch
import torch.distributed as dist
from torch import nn

import sparsekern as sk
from sparsekern import prune


def _identical(t: torch.Tensor) -> bool:
    """Whether every rank holds the same ``t`` (integer tensors compared as int64)."""
    t = t.detach().flatten()
    t = t.to(torch.int64) if not t.is_floating_point() else t
    everyone = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, t)
    return all(torch.equal(e, everyone[0]) for e in everyone)


def csc_phase(rank: int) -> dict:
    """A CSC-packed student (int16 row indices, which gloo cannot send): distill under DDP,
    a user's own DistributedDataParallel after sk.prepare_ddp, and ranks whose patterns
    differ (prepare_ddp's ValueError on every rank)."""
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    student = copy.deepcopy(teacher)
    prune.prune_model(student, 0.75)
    student = sk.sparsify(student, layout="csc")
    layers = [student[0], student[2]]
    pattern = [l.weight.to_dense() != 0 for l in layers]
    g = torch.Generator().manual_seed(2)
    data = [torch.randn(8, 16, generator=g) for _ in range(8)]
    losses = prune.distill(student, teacher, data, steps=6, lr=1e-2, progress=False)
    out = {"int16": all(l.indices.dtype == torch.int16 for l in layers),
           "losses": losses,
           "values_identical": all(_identical(l.values) for l in layers),
           "indices_identical": all(_identical(l.indices) for l in layers),
           # pruned positions stay zero (nothing outside the packed pattern)
           "pattern_kept": all(not bool(((l.weight.to_dense() != 0) & ~p).any())
                               for l, p in zip(layers, pattern))}
    user = copy.deepcopy(student)
    out["prepared"] = sk.prepare_ddp(user)
    ddp = nn.parallel.DistributedDataParallel(user)
    ddp(torch.randn(4, 16)).sum().backward()
    out["user_ddp_grads_identical"] = all(_identical(l.values.grad) for l in (user[0], user[2]))
    other = copy.deepcopy(teacher)
    prune.prune_model(other, 0.75 if rank == 0 else 0.5)
    other = sk.sparsify(other, layout="csc", max_density=1.0)
    try:
        sk.prepare_ddp(other)
        out["mismatch_error"] = None
    except ValueError as e:
        out["mismatch_error"] = str(e)
    return out


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    teacher = copy.deepcopy(model)
    masks = prune.prune_model(model, None, "2:4", "l1")
    g = torch.Generator().manual_seed(1)
    data = [torch.randn(8, 16, generator=g) for _ in range(8)]  # the ranks take 4 each
    losses = prune.distill(model, teacher, data, masks=masks, steps=12, lr=1e-2, progress=False)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    everyone = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, flat)
    mask_flat = torch.cat([m.flatten().float() for m in masks.values()])
    all_masks = [torch.empty_like(mask_flat) for _ in range(dist.get_world_size())]
    dist.all_gather(all_masks, mask_flat)
    zeros_held = all(bool((model.get_submodule(n).weight[~m] == 0).all())
                     for n, m in masks.items())
    moved = float((flat - torch.cat([p.detach().flatten() for p in teacher.parameters()]))
                  .abs().max())
    with open(f"{out}.rank{rank}.json", "w") as f:
        json.dump({"weights_identical": all(torch.equal(e, everyone[0]) for e in everyone),
                   "masks_identical": all(torch.equal(m, all_masks[0]) for m in all_masks),
                   "zeros_held": zeros_held, "losses": losses, "moved": moved,
                   "world": dist.get_world_size(), "csc": csc_phase(rank)}, f)
    # Both ranks reach the teardown together: a rank that destroyed its gloo group while the
    # other was still closing its pairs aborted once in CI ("terminate called without an
    # active exception", SIGABRT in rank 1 after the test's work was done).
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
