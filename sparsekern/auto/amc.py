"""AMC-style automatic pruning: a small learned policy picks every layer's ratio at once.

He et al., "AMC: AutoML for Model Compression and Acceleration on Mobile Devices" (ECCV
2018), resource-constrained variant, with the latency table of sparsekern.auto as the
resource model and REINFORCE (a Gaussian policy with a moving-average baseline) in place
of DDPG — the same loop, a smaller agent:

    for each episode:
        for each layer t, in order:
            state s_t = (t / L, log M, log K, the layer's share of the dense latency, the
                         latency committed so far / budget, the dense latency still to come
                         / budget, the previous action)
            action a_t = max_ratio * sigmoid(mu(s_t) + sigma * eps)   (random in warm-up)
            a_t = max(a_t, a_min): the smallest ratio with which the budget can still be
                  met if every later layer is pruned to max_ratio (AMC's action clipping)
            a layer whose predicted format at a_t is dense is left unpruned (its zeros
            would cost accuracy and buy no latency)
        prune a copy of the model to the ratios (no fine-tune), reward = eval_fn(copy)
        policy gradient on (reward - baseline) * sum_t log pi(a_t | s_t)
    the best feasible episode's ratios are applied, then the final fine-tune.

A layer's latency at a ratio is what sparsekern.auto.choose predicts for that pattern
(its fastest format, dense when none is faster), exactly as in NetAdapt.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..prune.granularity import NM, parse
from ..prune.pruner import prune_model
from .choose import DEFAULT_MARGIN, LayerDecision
from .formats import DENSE
from .netadapt import LayerPlan, NetAdaptResult, Targets, _State, budgets, final_finetune
from .table import LatencyTable

#: Features of a layer's state (see the module docstring).
STATE_SIZE = 7


class Policy(nn.Module):
    """state [STATE_SIZE] -> the mean logit of the layer's ratio."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(STATE_SIZE, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        with torch.no_grad():  # start near ratio = max_ratio / 2, everywhere
            self.net[-1].weight.mul_(0.1)
            self.net[-1].bias.zero_()

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state).squeeze(-1)


@dataclass
class AMCResult(NetAdaptResult):
    """A :class:`~sparsekern.auto.netadapt.NetAdaptResult` whose ``history`` holds one
    entry per episode (ratios, reward, feasible, predicted seconds); ``best_episode`` is
    the index of the episode whose ratios were applied (None when none was feasible)."""

    best_episode: Optional[int] = None

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["best_episode"] = self.best_episode
        return d


class _Env:
    """Latency bookkeeping of one episode: the prefix's decisions, the clipping bound."""

    def __init__(self, st: _State, names: Sequence[str], g, max_ratio: float, step: float):
        self.st, self.names, self.g, self.max_ratio, self.step = st, list(names), g, max_ratio, step
        self.dense = {n: st.planned(n, g, 0.0) for n in self.names}
        self.most = {n: st.planned(n, g, max_ratio) for n in self.names}
        shapes = st.table.shapes
        per_layer = {n: sum(self.dense[n].predicted_s[s] / st.budget[s] for s in shapes) /
                     len(shapes) for n in self.names}
        self.dense_share = per_layer
        self.total_dense = st.objective(st.total(self.dense))
        self.cache: Dict[tuple, LayerDecision] = {}

    def decision(self, name: str, ratio: float) -> LayerDecision:
        key = (name, round(ratio, 6))
        if key not in self.cache:
            self.cache[key] = self.st.planned(name, self.g, ratio)
        return self.cache[key]

    def state(self, t: int, name: str, module: nn.Module, committed: float, prev: float
              ) -> torch.Tensor:
        W = module.weight
        M, K = W.shape[0], W[0].numel()
        rest = sum(self.dense_share[n] for n in self.names[t + 1:])
        return torch.tensor([t / max(1, len(self.names)), math.log(M) / 10, math.log(K) / 10,
                             self.dense_share[name] / self.total_dense, committed, rest, prev],
                            dtype=torch.float32)

    def min_ratio(self, t: int, chosen: Dict[str, LayerDecision]) -> float:
        """The smallest ratio of layer t (on the step grid) with which the budget is met
        when every later layer is at max_ratio; max_ratio when none is."""
        later = {n: self.most[n] for n in self.names[t + 1:]}
        name = self.names[t]
        n_steps = int(math.floor(self.max_ratio / self.step + 1e-9))
        for i in range(n_steps + 1):
            r = min(self.max_ratio, i * self.step)
            d = self.decision(name, r)
            if self.st.met(self.st.total({**chosen, name: d, **later})):
                return r
        return self.max_ratio


def amc(model: nn.Module, table: LatencyTable, eval_fn: Callable[[nn.Module], float],
        target_speedup: Optional[Targets] = None, target_latency_s: Optional[Targets] = None,
        *, final_finetune_fn: Optional[Callable[[nn.Module], None]] = None,
        granularity="fine", criterion: str = "l1", calib=None,
        layers: Optional[Sequence[str]] = None, episodes: int = 60, warmup_episodes: int = 10,
        max_ratio: float = 0.95, ratio_step: float = 0.01, sigma: float = 0.5,
        sigma_decay: float = 0.97, lr: float = 0.03, hidden: int = 32,
        infeasible_penalty: float = 1.0, margin: float = DEFAULT_MARGIN, seed: int = 0,
        on_episode: Optional[Callable[[dict], None]] = None) -> AMCResult:
    """Prune ``model`` (in place) with ratios chosen by a learned policy under a latency
    budget; see the module docstring for the loop.

    Args:
        model, table, eval_fn, target_speedup, target_latency_s, final_finetune_fn,
        criterion, calib, layers, margin: as for :func:`~sparsekern.auto.netadapt.netadapt`
            (eval_fn: higher is better; it rates each episode's pruned copy, unfine-tuned).
        granularity: one granularity with a free ratio ("fine" or (bm, bk) blocks); N:M
            fixes the ratio and leaves the agent nothing to choose.
        episodes: episodes in all, the first ``warmup_episodes`` with random ratios.
        max_ratio, ratio_step: the ratios an action can take (clipping works on the grid).
        sigma, sigma_decay: exploration noise of the policy's logit, decayed per episode.
        lr, hidden: Adam's learning rate and the policy's hidden width.
        infeasible_penalty: subtracted from the reward of an episode that cannot meet the
            budget even with every layer at max_ratio.
        seed: seeds the policy, its noise and the final fine-tune.
        on_episode: called with each episode's history entry.
    """
    budget = budgets(table, target_speedup, target_latency_s)
    g = parse(granularity)
    if isinstance(g, NM):
        raise ValueError(f"granularity {granularity!r} fixes the ratio (N:M); AMC chooses a "
                         f"ratio per layer: use 'fine' or (bm, bk) blocks")
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    if not isinstance(warmup_episodes, int) or not 0 <= warmup_episodes <= episodes:
        raise ValueError(f"warmup_episodes must be an int in [0, episodes={episodes}], got "
                         f"{warmup_episodes!r}")
    if not 0 < max_ratio < 1 or not 0 < ratio_step < 1:
        raise ValueError(f"max_ratio and ratio_step must be in (0, 1); got {max_ratio!r}, "
                         f"{ratio_step!r}")
    names = list(table.layers) if layers is None else list(layers)
    unknown = [n for n in names if n not in table.layers]
    if unknown:
        raise ValueError(f"layers {unknown} are not in the latency table (it has "
                         f"{list(table.layers)})")
    st = _State(table, budget, margin)
    env = _Env(st, names, g, max_ratio, ratio_step)
    modules = {n: model.get_submodule(n) for n in names}
    untouched = {n: st.actual(n, model.get_submodule(n)) for n in table.layers if n not in names}
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    policy = Policy(hidden)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    rewards: List[float] = []
    metric_dense = float(eval_fn(model))
    history: List[dict] = []
    best: Optional[dict] = None
    for ep in range(episodes):
        chosen: Dict[str, LayerDecision] = dict(untouched)
        ratios: Dict[str, float] = {}
        log_probs = []
        prev = 0.0
        noise = sigma * sigma_decay ** max(0, ep - warmup_episodes)
        for t, name in enumerate(names):
            committed = st.objective(st.total(chosen))  # later layers dense
            s = env.state(t, name, modules[name], committed, prev)
            if ep < warmup_episodes:
                raw = torch.rand((), generator=gen) * max_ratio
            else:
                mu = policy(s)
                z = mu.detach() + noise * torch.randn((), generator=gen)
                log_probs.append(-0.5 * ((z - mu) / noise) ** 2)  # up to a constant
                raw = max_ratio * torch.sigmoid(z)
            r = round(float(raw) / ratio_step) * ratio_step
            r = min(max_ratio, max(r, env.min_ratio(t, chosen)))
            chosen[name] = env.decision(name, r)
            # a layer that stays dense gains nothing from zeros: it is not pruned at all
            ratios[name] = 0.0 if chosen[name].format == DENSE else r
            prev = r / max_ratio
        total = st.total(chosen)
        feasible = st.met(total)
        trial = copy.deepcopy(model)
        _prune(trial, ratios, g, criterion, calib)
        metric = float(eval_fn(trial))
        reward = metric - (0.0 if feasible else infeasible_penalty)
        recent = rewards[-20:]
        if log_probs and len(recent) >= 2:
            # advantage against the recent rewards, in units of their spread
            mean = sum(recent) / len(recent)
            std = math.sqrt(sum((x - mean) ** 2 for x in recent) / len(recent))
            adv = (reward - mean) / (std + 1e-6)
            loss = -adv * torch.stack(log_probs).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        rewards.append(reward)
        entry = {"episode": ep, "ratios": ratios, "metric": metric, "reward": reward,
                 "feasible": feasible, "predicted_s": total, "warmup": ep < warmup_episodes,
                 "formats": {n: chosen[n].format for n in names}}
        history.append(entry)
        if on_episode:
            on_episode(entry)
        if feasible and (best is None or metric > best["metric"]):
            best = entry
    if best is None:
        return AMCResult({}, {n: LayerPlan() for n in names},
                         {n: st.actual(n, model.get_submodule(n)) for n in table.layers},
                         history, st.total({}), budget, False,
                         f"no episode met the budget (even max_ratio={max_ratio} on every layer "
                         f"is predicted too slow)", metric_dense, metric_dense, metric_dense, None)
    masks = _prune(model, best["ratios"], g, criterion, calib)
    metric_search = float(eval_fn(model))
    metric = metric_search
    if final_finetune(model, masks, final_finetune_fn, seed):
        metric = float(eval_fn(model))
    decisions = {n: st.actual(n, model.get_submodule(n)) for n in table.layers}
    total = st.total(decisions)
    plans = {n: LayerPlan(str(g) if best["ratios"][n] > 0 else None, best["ratios"][n])
             for n in names}
    return AMCResult(masks, plans, decisions, history, total, budget, st.met(total),
                     f"best of {episodes} episodes (episode {best['episode']})", metric_dense,
                     metric_search, metric, best["episode"])


def _prune(model: nn.Module, ratios: Dict[str, float], g, criterion, calib
           ) -> Dict[str, torch.Tensor]:
    """Prune ``model`` in place to {layer: ratio} (ratio 0: left alone); the masks."""
    todo = {n: r for n, r in ratios.items() if r > 0}
    if not todo:
        return {}
    return prune_model(model, todo, granularity=g, criterion=criterion, calib=calib)
