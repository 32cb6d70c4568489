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

With a quality floor (``AMCConfig.min_metric``) an episode whose metric is below the floor
is not eligible as the result, and the loop explores plans lighter than the budget:

    no action clipping; an action u = a_t / max_ratio below 1/2 leaves the layer whole,
        from 1/2 to 1 it takes the layer's paying ratios (those whose predicted format is
        faster than dense) in order, lightest first
    a warm-up episode prunes k random layers of those some ratio makes faster, each at a
        random paying ratio; k starts at 1, doubles after an eligible warm-up episode and
        halves after one below the floor (light plans first, then the edge of the floor)
    a plan already rated is drawn again (up to 20 times), so that the episodes rate
        different plans
    after the warm-up, local moves instead of the policy: each layer's logit is centred on
        its action in the incumbent (the episode that would be the result now, else the one
        with the best reward), at least 0.75 from 0 (a light ratio's centre moves up to the
        ratio at 0.75), plus sigma * eps, sigma not decayed: a layer flips between pruned
        and whole with probability ~7% at sigma 0.5; no REINFORCE. (The policy was tried
        first: on MiniLM under a 0.97 cosine floor, REINFORCE on one reward for 36 coupled
        actions, with Adam's momentum, drifted within 20 episodes in each of 8 trial runs
        with four reward / start variants: to every FFN layer or every layer pruned (3
        runs) or to the dense model (5); the few light plans that meet the floor score too
        little above the dense model to pull it.)
    the reward, recorded per episode (span = dense metric - floor; gain = the fraction of
        the way from the dense latency to the budget):
        below the floor:             -log(1 + (floor - metric) / span)   (speed ignored)
        eligible, budget missed:     gain, in [0, 1)
        eligible, budget met:        1 + (metric - floor) / span
    the result: the eligible episode with the best metric among those that meet the budget;
        if none does, the eligible episode with the lowest predicted latency (when it is
        faster than dense); if none is, no pruning at all (the model as it was before the
        search), the reason naming the floor and the best metric seen.

A layer's latency at a ratio is what sparsekern.auto.choose predicts for that pattern
(its fastest format, dense when none is faster), exactly as in NetAdapt.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..prune.granularity import NM, parse
from ..prune.pruner import calib_read, prune_model
from .choose import DEFAULT_MARGIN, LayerDecision
from .formats import DENSE
from .netadapt import (LayerPlan, NetAdaptResult, Targets, _State, budgets, final_finetune,
                       checked_metric, left_alone, table_layers, with_overrides)
from .table import LatencyTable

#: Features of a layer's state (see the module docstring).
STATE_SIZE = 7


#: Under a floor the local moves centre each layer's logit at least this far from 0: its
#: action flips (pruned <-> whole) with probability Phi(-1.5) ~ 7% at sigma 0.5.
FOLLOW_LOGIT = 0.75
#: Under a floor an episode whose plan was already rated is drawn again, up to this often.
REDRAWS = 20


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
    entry per episode (ratios, metric, reward, feasible: meets the budget, eligible: at or
    above the floor, predicted seconds, objective: the predicted latency over the budget,
    averaged over the shapes); ``best_episode`` is the index of the episode whose ratios
    were applied (None when none was); ``min_metric``: the floor (None: none); ``choice``:
    "budget" (the best eligible episode that meets the budget), "fastest" (none met it:
    the fastest eligible one) or "none" (nothing applied)."""

    best_episode: Optional[int] = None
    min_metric: Optional[float] = None
    choice: str = "none"

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update(best_episode=self.best_episode, min_metric=self.min_metric, choice=self.choice)
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
        self.pay: Dict[str, List[float]] = {}

    def paying(self, name: str) -> List[float]:
        """The ratios of the step grid (up to max_ratio, ascending) at which layer ``name``
        takes a format faster than dense."""
        if name not in self.pay:
            n_steps = int(math.floor(self.max_ratio / self.step + 1e-9))
            grid = [round(min(self.max_ratio, i * self.step), 6) for i in range(1, n_steps + 1)]
            self.pay[name] = [r for r in grid if self.decision(name, r).format != DENSE]
        return self.pay[name]

    def floored_ratio(self, name: str, u: float) -> float:
        """An action u in [0, 1] as a ratio, under a quality floor: below 1/2 the layer is
        not pruned; from 1/2 to 1 it takes its paying ratios in order (lightest first), so
        every action either prunes the layer into a faster format or leaves it whole."""
        pay = self.paying(name)
        if u < 0.5 or not pay:
            return 0.0
        return pay[min(len(pay) - 1, int((2.0 * u - 1.0) * len(pay)))]

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


@dataclass
class AMCConfig:
    """Settings of :func:`amc` (every field is also accepted as a keyword of it).

    Attributes:
        target_speedup, target_latency_s, final_finetune_fn, criterion, calib, layers,
            margin: as in :class:`~sparsekern.auto.netadapt.NetAdaptConfig`.
        granularity: one granularity with a free ratio ("fine" or (bm, bk) blocks); N:M
            fixes the ratio and leaves the agent nothing to choose.
        episodes: episodes in all, the first ``warmup_episodes`` with random ratios.
        max_ratio, ratio_step: the ratios an action can take (clipping works on the grid).
        sigma, sigma_decay: exploration noise of the policy's logit, decayed per episode
            (under a floor: of the local moves' logit, not decayed).
        lr, hidden: Adam's learning rate and the policy's hidden width.
        infeasible_penalty: subtracted from the reward of an episode that cannot meet the
            budget even with every layer at max_ratio (without a floor).
        min_metric: the quality floor: an episode whose eval_fn (unfine-tuned, higher is
            better) is below it is never the result; the search then also explores plans
            lighter than the budget and falls back to the fastest eligible one (see the
            module docstring). None: no floor: the episode with the best metric among
            those that meet the budget; when none does, nothing is applied (the model stays
            dense; ``choice`` "none").
        seed: seeds the policy, its noise and the final fine-tune.
        on_episode: called with each episode's history entry.
    """

    target_speedup: Optional[Targets] = None
    target_latency_s: Optional[Targets] = None
    final_finetune_fn: Optional[Callable[[nn.Module], None]] = None
    granularity: Any = "fine"
    criterion: str = "l1"
    calib: Any = None
    layers: Optional[Sequence[str]] = None
    episodes: int = 60
    warmup_episodes: int = 10
    max_ratio: float = 0.95
    ratio_step: float = 0.01
    sigma: float = 0.5
    sigma_decay: float = 0.97
    lr: float = 0.03
    hidden: int = 32
    infeasible_penalty: float = 1.0
    margin: float = DEFAULT_MARGIN
    min_metric: Optional[float] = None
    seed: int = 0
    on_episode: Optional[Callable[[dict], None]] = None


def amc(model: nn.Module, table: LatencyTable, eval_fn: Callable[[nn.Module], float],
        config: Optional[AMCConfig] = None, **overrides) -> AMCResult:
    """Prune ``model`` (in place) with ratios chosen by a learned policy under a latency
    budget; see the module docstring for the loop.

    Args:
        model, table, eval_fn: as for :func:`~sparsekern.auto.netadapt.netadapt` (eval_fn:
            higher is better; it rates each episode's pruned copy, unfine-tuned).
        config: an :class:`AMCConfig` (default: its defaults).
        **overrides: any field of AMCConfig by keyword (the keyword calls of earlier
            versions, e.g. ``amc(m, t, f, target_speedup=2.0, episodes=30)``, still work).
    """
    cfg = with_overrides(config, AMCConfig, overrides, "amc")
    return _Agent(model, table, eval_fn, cfg).run()


def _check_amc(cfg: AMCConfig):
    """The parsed granularity; ValueError naming a bad field."""
    g = parse(cfg.granularity)
    if isinstance(g, NM):
        raise ValueError(f"granularity {cfg.granularity!r} fixes the ratio (N:M); AMC chooses a "
                         f"ratio per layer: use 'fine' or (bm, bk) blocks")
    if not isinstance(cfg.episodes, int) or cfg.episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {cfg.episodes!r}")
    if not isinstance(cfg.warmup_episodes, int) or not 0 <= cfg.warmup_episodes <= cfg.episodes:
        raise ValueError(f"warmup_episodes must be an int in [0, episodes={cfg.episodes}], got "
                         f"{cfg.warmup_episodes!r}")
    if not 0 < cfg.max_ratio < 1 or not 0 < cfg.ratio_step < 1:
        raise ValueError(f"max_ratio and ratio_step must be in (0, 1); got {cfg.max_ratio!r}, "
                         f"{cfg.ratio_step!r}")
    f = cfg.min_metric
    if f is not None and (isinstance(f, bool) or not isinstance(f, (int, float)) or
                          not math.isfinite(f)):
        raise ValueError(f"min_metric must be None or a finite number (the lowest eval_fn "
                         f"value an episode may have to be the result), got {f!r}")
    return g


def choose_episode(history: Sequence[dict], min_metric: Optional[float], dense_objective: float
                   ) -> Tuple[Optional[dict], str]:
    """(the episode to apply or None, "budget" / "fastest" / "none") from AMC's history.

    "budget": the eligible episode (``metric >= min_metric``; every one without a floor)
    with the best metric among those that meet the budget (the first of equals). Else,
    with a floor only, "fastest": the eligible episode with the lowest ``objective`` (the
    predicted latency over the budget), when it is below ``dense_objective`` (the dense
    model's); ties go to the better metric. Else (None, "none").
    """
    eligible = [h for h in history if min_metric is None or h["metric"] >= min_metric]
    met = [h for h in eligible if h["feasible"]]
    if met:
        return max(met, key=lambda h: h["metric"]), "budget"
    faster = [h for h in eligible if h["objective"] < dense_objective - 1e-12]
    if min_metric is not None and faster:
        return min(faster, key=lambda h: (h["objective"], -h["metric"])), "fastest"
    return None, "none"


class _Agent:
    """One AMC run: the environment, the policy and each step of the episode loop."""

    def __init__(self, model: nn.Module, table: LatencyTable, eval_fn, cfg: AMCConfig):
        budget = budgets(table, cfg.target_speedup, cfg.target_latency_s)
        self.g = _check_amc(cfg)
        self.names = table_layers(table, cfg.layers, model)
        self.model, self.table, self.eval_fn, self.cfg = model, table, eval_fn, cfg
        self.floor = None if cfg.min_metric is None else float(cfg.min_metric)
        self.k, self.pick = 1, set()  # warm-up under a floor: layers to prune, this episode's
        self.incumbent: Optional[int] = None  # under a floor: the local moves' centre episode
        self.center: Dict[str, float] = {}  # ... and its logit per layer
        self.rated: set = set()  # the plans rated so far (ratios in layer order)
        self.metric_dense = float("nan")
        self.st = _State(table, budget, cfg.margin)
        self.env = _Env(self.st, self.names, self.g, cfg.max_ratio, cfg.ratio_step)
        self.modules = {n: model.get_submodule(n) for n in self.names}
        self.untouched = {n: self.st.actual(n, model.get_submodule(n)) for n in table.layers
                          if n not in self.names}
        self.gen = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.policy = Policy(cfg.hidden)
        self.opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr)
        self.rewards: List[float] = []
        self.history: List[dict] = []

    def run(self) -> AMCResult:
        self.before = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.metric_dense = metric_dense = checked_metric(self.eval_fn, self.model, dense=True)
        for ep in range(self.cfg.episodes):
            entry = self.episode(ep)
            self.history.append(entry)
            if self.cfg.on_episode:
                self.cfg.on_episode(entry)
        best, choice = choose_episode(self.history, self.floor, self.env.total_dense)
        if best is None:
            return self._infeasible(metric_dense)
        return self._apply(best, metric_dense, choice)

    def act(self, ep: int, t: int, name: str, chosen, prev: float, log_probs: list) -> float:
        """Layer t's ratio in episode ``ep``: random in warm-up, else the policy's sample
        (without a floor) or a local move around the incumbent (with one); on the ratio grid
        and clipped so that the budget stays reachable (without a floor), or mapped onto
        the layer's paying ratios (with one: _Env.floored_ratio)."""
        c = self.cfg
        committed = self.st.objective(self.st.total(chosen))  # later layers dense
        s = self.env.state(t, name, self.modules[name], committed, prev)
        if ep < c.warmup_episodes:
            u = self.explore(name)
        elif self.floor is not None:  # a local move around the incumbent (recenter)
            z = self.center.get(name, -FOLLOW_LOGIT) + c.sigma * torch.randn((), generator=self.gen)
            u = torch.sigmoid(z)
        else:
            noise = c.sigma * c.sigma_decay ** max(0, ep - c.warmup_episodes)
            mu = self.policy(s)
            z = mu.detach() + noise * torch.randn((), generator=self.gen)
            log_probs.append(-0.5 * ((z - mu) / noise) ** 2)  # up to a constant
            u = torch.sigmoid(z)
        if self.floor is not None:  # no clipping: plans lighter than the budget are explored
            return self.env.floored_ratio(name, float(u))
        r = round(float(c.max_ratio * u) / c.ratio_step) * c.ratio_step
        return min(c.max_ratio, max(r, self.env.min_ratio(t, chosen)))

    def explore(self, name: str) -> torch.Tensor:
        """A warm-up action in [0, 1] (a fraction of max_ratio): uniform; with a floor, 0
        (not pruned) unless the layer is one of this episode's picks (pick_layers), and
        then uniform in [0.5, 1] (one of its paying ratios: _Env.floored_ratio)."""
        u = torch.rand((), generator=self.gen)
        if self.floor is None:
            return u
        return 0.5 + 0.5 * u if name in self.pick else torch.zeros(())

    def paying_layers(self) -> List[str]:
        """The searchable layers that some ratio makes faster than dense."""
        return [n for n in self.names if self.env.paying(n)]

    def pick_layers(self) -> None:
        """With a floor, a warm-up episode prunes ``self.k`` random paying layers: k starts
        at 1, doubles after an eligible warm-up episode and halves after one below the floor,
        so the warm-up keeps to the edge of the floor (light plans first)."""
        pay = self.paying_layers()
        order = torch.randperm(len(pay), generator=self.gen).tolist()
        self.pick = {pay[i] for i in order[:min(self.k, len(pay))]}

    def recenter(self) -> None:
        """With a floor, before each episode after the warm-up: when the incumbent (the
        episode that would be the result now, else the one with the best reward) is new,
        each layer's centre becomes the logit of its action in it (target_logit)."""
        best, _ = choose_episode(self.history, self.floor, self.env.total_dense)
        if best is None and self.history:
            best = max(self.history, key=lambda h: h["reward"])
        if best is None or best["episode"] == self.incumbent:
            return
        self.incumbent = best["episode"]
        self.center = {n: self.target_logit(n, best["ratios"][n]) for n in self.names}

    def target_logit(self, name: str, ratio: float) -> float:
        """The logit z whose action sigmoid(z) gives ``ratio`` under a floor (the middle of
        its band, _Env.floored_ratio), at least FOLLOW_LOGIT from 0 (pruned: above, whole:
        below)."""
        pay = self.env.paying(name)
        if ratio <= 0 or ratio not in pay:
            return -FOLLOW_LOGIT
        u = 0.5 + 0.5 * (pay.index(ratio) + 0.5) / len(pay)
        return max(math.log(u / (1.0 - u)), FOLLOW_LOGIT)

    def plan(self, ep: int) -> Tuple[Dict[str, LayerDecision], Dict[str, float], list]:
        """One draw of every layer's ratio: (decisions, {layer: ratio}, log-probabilities)."""
        chosen: Dict[str, LayerDecision] = dict(self.untouched)
        ratios: Dict[str, float] = {}
        log_probs: list = []
        prev = 0.0
        for t, name in enumerate(self.names):
            r = self.act(ep, t, name, chosen, prev, log_probs)
            chosen[name] = self.env.decision(name, r)
            # a layer that stays dense gains nothing from zeros: it is not pruned at all
            ratios[name] = 0.0 if chosen[name].format == DENSE else r
            prev = r / self.cfg.max_ratio
        return chosen, ratios, log_probs

    def episode(self, ep: int) -> dict:
        """Choose every layer's ratio, rate the pruned copy, update the policy. Under a
        floor a plan already rated is drawn again (up to REDRAWS times): the warm-up and
        the local moves revisit the few light plans often."""
        warm = ep < self.cfg.warmup_episodes
        if self.floor is not None and warm:
            self.pick_layers()
        elif self.floor is not None:
            self.recenter()
        chosen, ratios, log_probs = self.plan(ep)
        for _ in range(REDRAWS if self.floor is not None else 0):
            if tuple(ratios.values()) not in self.rated:
                break
            if warm:
                self.pick_layers()
            chosen, ratios, log_probs = self.plan(ep)
        self.rated.add(tuple(ratios.values()))
        total = self.st.total(chosen)
        feasible = self.st.met(total)
        trial = copy.deepcopy(self.model)
        _prune(trial, ratios, self.g, self.cfg.criterion, self.cfg.calib)
        metric = checked_metric(self.eval_fn, trial)
        reward = self.reward(metric, total)
        self.learn(reward, log_probs)
        eligible = self.floor is None or metric >= self.floor
        entry = {"episode": ep, "ratios": ratios, "metric": metric, "reward": reward,
                 "feasible": feasible, "predicted_s": total,
                 "objective": self.st.objective(total), "eligible": eligible, "warmup": warm,
                 "formats": {n: chosen[n].format for n in self.names}}
        if self.floor is not None and warm:
            entry["warmup_layers"] = len(self.pick)
            n_pay = len(self.paying_layers())
            self.k = min(max(n_pay, 1), 2 * self.k) if eligible else max(1, self.k // 2)
        return entry

    def reward(self, metric: float, total: Dict[str, float]) -> float:
        """Without a floor: the metric, less infeasible_penalty when the budget is missed
        (the policy's reward). With one (the module docstring; the score that picks the
        incumbent when no episode is eligible): below the floor, -log(1 + shortfall /
        span), lower the further below whatever the speed; eligible, the fraction of the
        way from the dense latency to the budget, in [0, 1); eligible at the budget, 1 +
        the metric's share of the allowed drop."""
        if self.floor is None:
            return metric - (0.0 if self.st.met(total) else self.cfg.infeasible_penalty)
        span = max(self.metric_dense - self.floor, 1e-9)
        if metric < self.floor:
            return -math.log1p((self.floor - metric) / span)
        if self.st.met(total):
            return 1.0 + (metric - self.floor) / span
        gap = max(self.env.total_dense - 1.0, 1e-9)  # dense objective - the budget's (1)
        return min(max((self.env.total_dense - self.st.objective(total)) / gap, 0.0), 1.0)

    def learn(self, reward: float, log_probs: list) -> None:
        """REINFORCE step: advantage against the recent rewards, in units of their spread."""
        recent = self.rewards[-20:]
        if log_probs and len(recent) >= 2:
            mean = sum(recent) / len(recent)
            std = math.sqrt(sum((x - mean) ** 2 for x in recent) / len(recent))
            adv = (reward - mean) / (std + 1e-6)
            loss = -adv * torch.stack(log_probs).sum()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        self.rewards.append(reward)

    def _infeasible(self, metric_dense: float) -> AMCResult:
        """Nothing applied: the model as it was before the search (weights restored)."""
        st = self.st
        self.model.load_state_dict(self.before)
        if self.floor is None:
            why = (f"no episode met the budget (even max_ratio={self.cfg.max_ratio} on every "
                   f"layer is predicted too slow)")
        else:
            why = self._below_floor()
        return AMCResult({}, {n: LayerPlan() for n in self.names},
                         {n: st.actual(n, self.model.get_submodule(n)) for n in self.table.layers},
                         self.history, st.total({}), st.budget, False, why, metric_dense,
                         metric_dense, metric_dense, left_alone(self.table, self.model),
                         None, self.floor, "none")

    def _below_floor(self) -> str:
        """Why no episode was applied under a floor (the floor, the best metric seen)."""
        pruned = [h for h in self.history if h["objective"] < self.env.total_dense - 1e-12]
        if not pruned:
            return (f"no episode pruned a layer in a format faster than dense (metric floor "
                    f"{self.floor:.4g}): the model is left dense")
        top = max(pruned, key=lambda h: h["metric"])
        return (f"no episode reached the metric floor {self.floor:.4g} (dense "
                f"{self.metric_dense:.4g}; best metric seen {top['metric']:.4g}, episode "
                f"{top['episode']}, of {len(pruned)} that prune a layer): the model is left dense")

    def _why(self, best: dict, choice: str) -> str:
        """The reason of an applied episode."""
        c, floor = self.cfg, self.floor
        if choice == "budget":
            # Episodes are counted from 1 in text (result.best_episode is the 0-based index).
            return (f"best of {c.episodes} episodes (episode {best['episode'] + 1})" +
                    ("" if floor is None else f", metric {best['metric']:.4g} >= floor {floor:.4g}"))
        dense = self.table.predict()
        speed = " / ".join(f"{dense[s] / best['predicted_s'][s]:.3g}x" for s in self.table.shapes)
        below = sum(1 for h in self.history if h["metric"] < floor)
        return (f"no episode with metric >= floor {floor:.4g} met the budget ({below} of "
                f"{c.episodes} episodes fell below the floor): the fastest one above it, episode "
                f"{best['episode'] + 1} (metric {best['metric']:.4g}, predicted speedup {speed} at the "
                f"table's shapes)")

    def _apply(self, best: dict, metric_dense: float, choice: str) -> AMCResult:
        """Prune the model to the chosen episode's ratios, fine-tune, and the result."""
        st, c = self.st, self.cfg
        masks = _prune(self.model, best["ratios"], self.g, c.criterion, c.calib)
        metric_search = metric = checked_metric(self.eval_fn, self.model)
        if final_finetune(self.model, masks, c.final_finetune_fn, c.seed):
            metric = checked_metric(self.eval_fn, self.model)
        decisions = {n: st.actual(n, self.model.get_submodule(n)) for n in self.table.layers}
        total = st.total(decisions)
        plans = {n: LayerPlan(str(self.g) if best["ratios"][n] > 0 else None, best["ratios"][n])
                 for n in self.names}
        return AMCResult(masks, plans, decisions, self.history, total, st.budget, st.met(total),
                         self._why(best, choice), metric_dense, metric_search, metric,
                         left_alone(self.table, self.model), best["episode"], self.floor, choice)


def _prune(model: nn.Module, ratios: Dict[str, float], g, criterion, calib
           ) -> Dict[str, torch.Tensor]:
    """Prune ``model`` in place to {layer: ratio} (ratio 0: left alone); the masks."""
    todo = {n: r for n, r in ratios.items() if r > 0}
    if not todo:
        return {}
    return prune_model(model, todo, granularity=g, criterion=criterion,
                       calib=calib_read(g, criterion, calib))
