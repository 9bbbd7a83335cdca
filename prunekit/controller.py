"""The PruningController: owns the masks during training and runs a strategy's events on its schedule.

    ctrl = PruningController(model, graph, pk.get_strategy("chex"), pk.Budget(sparsity=0.5),
                             steps_per_epoch=len(loader), epochs=epochs, seed=0)
    ctrl.start(optimizer)                    # initial masks (CHEX: S - delta_0 by L1 norm)
    for x, y in loader:
        loss(model(x), y).backward()
        ctrl.after_backward()                # grads of pruned positions -> 0 (optional, cheap)
        optimizer.step()
        ctrl.after_optimizer_step()          # weights + optimizer state of pruned positions -> 0; events

One event: snapshot the MRU values of live elements, resolve the budget to a global sparsity S (a MACs
target by bisection over S with the strategy's own allocation), ``allocate`` at S - prune_slack,
``prune`` every group among its active channels (a group allocated more than it has active keeps them all),
then ``regrow`` the allocation's excess over the active channels plus, when the strategy asks for a regrow
fraction d, the difference of ``allocate`` at S - d (groups held by a MACs bisection stay held in both).
Newly pruned elements are zeroed, regrown ones get their MRU values back, and the optimizer state of both
is zeroed. ``events`` records each event, with per-group counts (``groups``). Decisions draw from one
seeded generator; under torch.distributed the masks of rank 0 are broadcast so every rank prunes the same
channels.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import torch
from torch import nn

from prunekit.graphs import ChannelGraph
from prunekit.graphs.graph import lookup_tensor
from prunekit.graphs.trace import unwrap

from .latency_budget import Probe, Timer
from .masks import apply_masks
from .slimming import slim
from .strategy import Budget, MRUStore, PruningState, Schedule, Strategy, as_index

__all__ = ["PruningController", "StrategyError"]


class StrategyError(ValueError):
    """A strategy broke the Strategy contract (a wrong return type, shape or count); names the strategy,
    the method and the group."""

log = logging.getLogger("prunekit")

# optimizers whose step keeps a weight at exactly zero when it, its gradient and its state are zero
ZERO_PRESERVING = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)
MACS_TOLERANCE = 0.01  # a MACs budget is hit within 1% (relative) when the allocation granularity allows


class PruningController:
    """Masks, MRU store, step counter and schedule of one pruning run (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        graph: ChannelGraph,
        strategy: Strategy,
        budget: Budget,
        steps_per_epoch: int,
        epochs: int,
        seed: int = 0,
        latency_timer: Timer | None = None,
    ):
        if isinstance(strategy, str):
            raise TypeError(
                f"strategy must be a Strategy instance; use prunekit.get_strategy({strategy!r}, **params)"
            )
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a prunekit.Strategy instance, got {type(strategy).__name__}")
        if not isinstance(budget, Budget):
            raise TypeError(f"budget must be a prunekit.Budget, e.g. Budget(sparsity=0.5); got {budget!r}")
        if int(steps_per_epoch) < 1 or int(epochs) < 1:
            raise ValueError(f"steps_per_epoch and epochs must be >= 1, got {steps_per_epoch} and {epochs}")
        if budget.latency is not None and latency_timer is None:
            raise ValueError(
                "a latency budget needs latency_timer=: a callable timing models on the run's device, e.g. "
                "prunekit.latency_budget.LatencyTimer(env, example_batch) (prunekit run builds one)"
            )
        self.model = unwrap(model)
        self.graph = graph
        self.strategy = strategy
        self.budget = budget
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.mru = MRUStore(self.model, graph)
        self.keep: dict[str, torch.Tensor] = graph.full_keep()
        self.step = 0
        self.events: list[dict[str, Any]] = []
        self.event_seconds = 0.0
        self.sparsity: float | None = budget.sparsity  # the last resolved global sparsity
        self.optimizer: torch.optim.Optimizer | None = None
        self.schedule = strategy.schedule(self.steps_per_epoch, self.epochs)
        if not isinstance(self.schedule, Schedule):
            raise TypeError(f"{type(strategy).__name__}.schedule() must return a prunekit.strategy.Schedule")
        self._started = False
        # masks materialized per pruned tensor (1 = live), multiplied in with one fused call per kind
        self._params: list[torch.Tensor] = []
        self._param_masks: list[torch.Tensor] = []
        self._buffers: list[torch.Tensor] = []
        self._buffer_masks: list[torch.Tensor] = []
        self._grads_masked = False  # after_backward ran since the last enforce
        self._dense_macs: int | None = None
        self.held: dict[str, int] = {}  # MACs budgets: groups held at a count (see resolve_sparsity)
        self.latency_timer = latency_timer
        # the rounding allocations use: the budget's, or for round_to="auto" the one timed fastest (1 until then)
        self.round_to: int = 1 if budget.round_to == "auto" else int(budget.round_to)
        self.round_to_chosen = budget.round_to != "auto"
        # latency budgets: the last measured resolution (MACs fraction, ratio, ms, ...), reused between events
        self.latency: dict[str, Any] | None = None

    def __repr__(self) -> str:
        kept = sum(int(m.sum()) for m in self.keep.values())
        return (
            f"PruningController({self.strategy!r}, {self.budget.describe()}, step {self.step}, "
            f"{kept}/{self.graph.total_channels} channels, {len(self.events)} events)"
        )

    # -- the training-loop hooks ---------------------------------------------------------------------

    def start(self, optimizer: torch.optim.Optimizer | None = None, resuming: bool = False) -> None:
        """Call once before training: runs the step-0 event (initial masks) if the schedule has one.
        ``resuming=True``: ``load_state_dict`` follows and restores the masks, so the step-0 event is skipped
        (for a latency budget it would time candidates only to be overwritten)."""
        self.optimizer = optimizer
        self._started = True
        if 0 in self.schedule and self.step == 0 and not resuming:
            self._event()
        else:
            self._rebuild()

    @torch.no_grad()
    def after_backward(self) -> None:
        """Zero the gradients of pruned positions (call after ``loss.backward()``)."""
        self._check_device()
        grads = [(p.grad, m) for p, m in zip(self._params, self._param_masks) if p.grad is not None]
        if grads:
            torch._foreach_mul_([g for g, _ in grads], [m for _, m in grads])
        self._grads_masked = True

    def after_optimizer_step(self) -> None:
        """Call after every ``optimizer.step()``: re-zero pruned weights and optimizer state, advance the
        step counter and run the event scheduled at the new step, if any.

        When ``after_backward`` zeroed this step's gradients and the optimizer is SGD, Adam or AdamW, the
        weights and optimizer state of pruned positions are still exactly zero (each of these updates a zero
        weight with a zero gradient and zero state to zero, weight decay included), so only the buffers are
        re-zeroed: the full ``enforce`` costs a pass over every pruned tensor and its optimizer state."""
        if not self._started:
            raise RuntimeError("call PruningController.start(optimizer) once before training")
        if self._grads_masked and type(self.optimizer) in ZERO_PRESERVING:
            self._enforce_buffers()
            self._grads_masked = False
        else:
            self.enforce()
        self.step += 1
        if self.step in self.schedule:
            self._event()

    @torch.no_grad()
    def enforce(self) -> None:
        """Zero every pruned position in the weights, buffers, gradients and optimizer state.

        Pruned tensors are multiplied by their 0/1 masks with one fused ``torch._foreach_mul_`` per kind
        of tensor (a per-slice ``index_fill_`` costs one kernel launch per tensor and dimension, which is
        most of a small model's step on a GPU)."""
        self._check_device()
        if self._params:
            torch._foreach_mul_(self._params, self._param_masks)
        self._enforce_buffers()
        if not self._grads_masked:  # after_backward already did it for this step
            self.after_backward()
        self._grads_masked = False
        if self.optimizer is not None and self._params:
            states, masks = [], []
            opt_state = self.optimizer.state
            for p, m in zip(self._params, self._param_masks):
                st = opt_state.get(p)
                if st:
                    for v in st.values():
                        if isinstance(v, torch.Tensor) and v.shape == p.shape:
                            states.append(v)
                            masks.append(m if v.dtype == m.dtype and v.device == m.device else m.to(v))
            if states:
                torch._foreach_mul_(states, masks)

    @torch.no_grad()
    def _enforce_buffers(self) -> None:
        self._check_device()
        if self._buffers:
            torch._foreach_mul_(self._buffers, self._buffer_masks)

    # -- events --------------------------------------------------------------------------------------

    def state(self) -> PruningState:
        """The strategy's view of the run right now."""
        return PruningState(
            model=self.model,
            graph=self.graph,
            keep=self.keep,
            generator=self.generator,
            mru=self.mru,
            step=self.step,
            steps_per_epoch=self.steps_per_epoch,
            epochs=self.epochs,
            event_index=len(self.events),
        )

    def _event(self) -> None:
        t0 = time.perf_counter()
        name = type(self.strategy).__name__
        old = self.keep
        state = self.state()
        self.mru.snapshot(self.model, old)
        target = self.resolve_sparsity(state)
        state.sparsity = target
        slack = float(self.strategy.prune_slack(state))
        if not 0.0 <= slack < 1.0:
            raise StrategyError(f"{name}.prune_slack() must be in [0, 1), got {slack}")
        s_prune = max(0.0, target - slack)
        held = self.held if slack == 0 else None
        counts = self._allocate(state, s_prune, held)
        # the prune step keeps only active channels: a group allocated more than it has active keeps all of
        # them, and the excess is regrown below (chosen by ``regrow`` like any regrowth, never kept silently)
        active = {g.id: int(old[g.id].sum()) for g in self.graph.groups}
        prune_k = {g: min(k, active[g]) for g, k in counts.items()}
        new: dict[str, torch.Tensor] = {}
        for grp in self.graph.groups:
            k = prune_k[grp.id]
            mask = self._prune_mask(self.strategy.prune(state, grp, k), grp.id, grp.size, k)
            if int(mask.sum()) != k:
                raise StrategyError(
                    f"{name}.prune() kept {int(mask.sum())} channels of group {grp.id!r}; "
                    f"the allocation asked for exactly {k}"
                )
            if bool((mask & ~old[grp.id]).any()):
                raise StrategyError(
                    f"{name}.prune() kept channels of group {grp.id!r} that were not active "
                    f"({torch.nonzero(mask & ~old[grp.id]).flatten().tolist()[:8]}); prune chooses among the "
                    "active channels, and pruned channels come back only through regrow()"
                )
            new[grp.id] = mask
        delta = float(self.strategy.regrow_fraction(state))
        if not 0.0 <= delta < 1.0:
            raise StrategyError(f"{name}.regrow_fraction() must be in [0, 1), got {delta}")
        # regrow count of group l: the regrow allocation at S - delta beyond k_l, plus the prune step's excess
        wider = self._allocate(state, max(0.0, s_prune - delta), held) if delta > 0 else counts
        asked = {g: max(0, wider[g] - counts[g]) + counts[g] - prune_k[g] for g in counts}
        kept_by_prune = {g: int(m.sum()) for g, m in new.items()}
        regrown_by = dict.fromkeys(new, 0)
        if any(asked.values()):
            state.keep = new
            final = {}
            for grp in self.graph.groups:
                mask = new[grp.id]
                count = min(asked[grp.id], int((~mask).sum()))
                if count:
                    idx = self._regrow_index(self.strategy.regrow(state, grp, count), grp.id, count)
                    self._check_regrow(grp.id, idx, mask, count)
                    mask = mask.clone()
                    mask[idx] = True
                    regrown_by[grp.id] = len(idx)
                final[grp.id] = mask
            new = final
        new = self._broadcast(new)
        pruned_now = sum(int((old[g] & ~new[g]).sum()) for g in new)
        self._set_keep(new, old)
        seconds = time.perf_counter() - t0
        self.event_seconds += seconds
        kept = {g: int(m.sum()) for g, m in new.items()}
        regrown = sum(regrown_by.values())
        groups = {
            g: {
                "allocated": counts[g],
                "active_before": active[g],
                "kept_by_prune": kept_by_prune[g],
                "pruned": active[g] - kept_by_prune[g],
                "regrown": regrown_by[g],
                "active_after": kept[g],
            }
            for g in kept
        }
        event = {
            "step": self.step,
            "epoch": self.step / self.steps_per_epoch,
            "kind": "start" if self.step == 0 else ("prune+regrow" if delta > 0 or regrown else "prune"),
            "sparsity": target,
            "prune_sparsity": s_prune,
            "regrow_fraction": delta,
            "held_groups": len(self.held) if slack == 0 else 0,
            "round_to": self.round_to,
            "pruned": pruned_now,
            "regrown": regrown,
            "kept_total": sum(kept.values()),
            "channels_total": self.graph.total_channels,
            "macs_fraction": self.macs_fraction(new),
            "kept": kept,
            "groups": groups,
            "seconds": seconds,
        }
        if self.budget.latency is not None and self.latency is not None:  # the last timed resolution ("step")
            event["latency"] = {k: v for k, v in self.latency.items() if k != "seconds"}
            event["latency_seconds"] = self.latency["seconds"]  # differs between DDP ranks: not in the digest
        self.events.append(event)
        log.debug(
            "%s event at step %d: kept %d/%d channels (%.3fs)",
            name, self.step, event["kept_total"], event["channels_total"], seconds,
        )

    def _who(self, method: str) -> str:
        cls = type(self.strategy)
        named = f"strategy {cls.name!r} " if getattr(cls, "name", "") else "strategy "
        return f"{named}({cls.__module__}.{cls.__qualname__}.{method}())"

    def _prune_mask(self, result: Any, gid: str, size: int, k: int) -> torch.Tensor:
        """What ``prune`` returned as a bool mask of the group's size, or a StrategyError saying what it was."""
        expected = (
            f"expected a bool tensor of shape ({size},) with {k} True (the channels kept), e.g. "
            f"prunekit.strategy.top_k_mask(scores, keep)"
        )
        try:
            mask = result if isinstance(result, torch.Tensor) else torch.as_tensor(result)
        except (TypeError, ValueError, RuntimeError):
            kind = f"{type(result).__module__}.{type(result).__qualname__}"
            raise StrategyError(f"{self._who('prune')} returned a {kind} for group {gid!r}; {expected}") from None
        if mask.dtype != torch.bool or tuple(mask.shape) != (size,):
            raise StrategyError(
                f"{self._who('prune')} returned a {mask.dtype} tensor of shape {tuple(mask.shape)} for group "
                f"{gid!r}; {expected}"
            )
        return mask.cpu()

    def _regrow_index(self, result: Any, gid: str, count: int) -> torch.Tensor:
        """What ``regrow`` returned as channel indices, or a StrategyError saying what it was."""
        try:
            idx = as_index(result)
        except (TypeError, ValueError, RuntimeError):
            kind = f"{type(result).__module__}.{type(result).__qualname__}"
            raise StrategyError(
                f"{self._who('regrow')} returned a {kind} for group {gid!r}; expected at most {count} channel "
                "indices (a LongTensor, a list of ints or a bool mask)"
            ) from None
        if idx.dtype.is_floating_point:
            raise StrategyError(
                f"{self._who('regrow')} returned {idx.dtype} values for group {gid!r}; expected channel indices "
                "(a LongTensor, a list of ints or a bool mask)"
            )
        return idx

    def _check_regrow(self, gid: str, idx: torch.Tensor, mask: torch.Tensor, count: int) -> None:
        name = type(self.strategy).__name__
        if len(idx) > count:
            raise StrategyError(f"{name}.regrow() returned {len(idx)} channels for group {gid!r}; at most {count}")
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(mask)):
            raise StrategyError(f"{name}.regrow() returned channel indices outside group {gid!r} (size {len(mask)})")
        if len(torch.unique(idx)) != len(idx):
            raise StrategyError(f"{name}.regrow() returned a channel twice for group {gid!r}")
        if bool(mask[idx].any()):
            raise StrategyError(f"{name}.regrow() returned channels of group {gid!r} that are not pruned")

    def _allocate(
        self, state: PruningState, sparsity: float, held: dict[str, int] | None = None, round_to: int | None = None
    ) -> dict[str, int]:
        name = type(self.strategy).__name__
        r = self.round_to if round_to is None else round_to
        counts = self.strategy.allocate(state, self.budget.with_sparsity(sparsity, round_to=r))
        if held:
            counts = {**counts, **held}
        out = {}
        for grp in self.graph.groups:
            if grp.id not in counts:
                raise StrategyError(f"{name}.allocate() gave no channel count for group {grp.id!r}")
            k = counts[grp.id]
            if isinstance(k, bool) or int(k) != k or not 1 <= int(k) <= grp.size:
                raise StrategyError(
                    f"{name}.allocate() gave group {grp.id!r} {k!r} channels; it must be an integer in "
                    f"[1, {grp.size}]"
                )
            out[grp.id] = int(k)
        return out

    # -- budgets -------------------------------------------------------------------------------------

    def dense_macs(self) -> int:
        if self._dense_macs is None:
            self._dense_macs = int(self.graph.macs())
        return self._dense_macs

    def macs_fraction(self, keep: dict[str, torch.Tensor] | None = None) -> float:
        """Conv/linear MACs under ``keep`` (default: the current masks) as a fraction of the dense model's."""
        dense = self.dense_macs()
        return float(self.graph.macs(self.keep if keep is None else keep)) / dense if dense else 1.0

    def _counts_keep(self, counts: dict[str, int]) -> dict[str, torch.Tensor]:
        """Keep masks with the first ``counts[g]`` channels of each group (what widths alone decide)."""
        keep = {}
        for grp in self.graph.groups:
            m = torch.zeros(grp.size, dtype=torch.bool)
            m[: counts[grp.id]] = True
            keep[grp.id] = m
        return keep

    def _counts_macs(self, counts: dict[str, int]) -> float:
        return self.macs_fraction(self._counts_keep(counts))

    def resolve_sparsity(self, state: PruningState | None = None) -> float:
        """The global channel sparsity of the budget: ``budget.sparsity``; for a MACs budget the sparsity
        at which the strategy's allocation keeps ``budget.macs`` of the dense MACs; for a latency budget the
        sparsity whose slimmed model keeps ``budget.latency`` of the dense latency, measured with
        ``latency_timer`` (see ``_resolve_latency``).

        MACs budgets are solved by bisection over the sparsity given to ``strategy.allocate``. When one
        allocation step removes too many MACs at once to land within 1% (one channel of a wide residual
        group at full resolution can be 1-2% of a CIFAR ResNet), the groups that changed at that step are
        held at their wider count and the bisection goes on with the others (``self.held``), up to 8
        times; the closest reachable value is used, with a warning when it is still more than 1% off."""
        self.held = {}
        if self.budget.sparsity is not None:
            self.sparsity = self.budget.sparsity
            return self.budget.sparsity
        state = state or self.state()
        if self.dense_macs() == 0:
            raise ValueError(
                "a MACs or latency budget needs conv/linear layers on the prunable channels; use sparsity="
            )
        if self.budget.latency is not None:
            s = self._resolve_latency(state)
        else:
            s, self.held, _ = self._solve_macs(state, float(self.budget.macs), self.round_to)  # type: ignore[arg-type]
        self.sparsity = s
        return s

    def macs_floor(self, state: PruningState, round_to: int) -> float:
        """The smallest MACs fraction the strategy's allocation reaches (every group at its minimum)."""
        return self._counts_macs(self._allocate(state, 1.0 - 1e-9, None, round_to))

    def _solve_macs(
        self, state: PruningState, target: float, round_to: int, warn: bool = True
    ) -> tuple[float, dict[str, int], float]:
        """(sparsity, held groups, MACs fraction reached) of the MACs target ``target`` with ``round_to``."""
        held: dict[str, int] = {}

        def frac(s: float) -> float:
            return self._counts_macs(self._allocate(state, s, held, round_to))

        lo, hi = 0.0, 1.0 - 1e-9
        f_lo, f_hi = frac(lo), frac(hi)
        if f_lo <= target:
            return 0.0, {}, f_lo
        if f_hi > target * (1 + MACS_TOLERANCE):
            raise ValueError(
                f"the MACs budget keeps {target:.3g} of the dense MACs, but pruning every group down to its "
                f"minimum still keeps {f_hi:.3g} (frozen channels and round_to={round_to} set the "
                f"floor); ask for macs >= {f_hi:.3g} or use a smaller round_to"
            )
        best: tuple[float, float, float, dict[str, int]] = (float("inf"), 0.0, 1.0, {})
        for _ in range(8):
            hi, f_hi = 1.0 - 1e-9, frac(1.0 - 1e-9)
            if f_hi > target:  # holding groups left nothing below the target: keep the best so far
                break
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                f = frac(mid)
                if f > target:
                    lo, f_lo = mid, f
                else:
                    hi, f_hi = mid, f
                if hi - lo < 1e-9:
                    break
            for s, f in ((lo, f_lo), (hi, f_hi)):
                if abs(f - target) < best[0]:
                    best = (abs(f - target), s, f, dict(held))
            if best[0] <= MACS_TOLERANCE * target:
                break
            c_lo, c_hi = self._allocate(state, lo, held, round_to), self._allocate(state, hi, held, round_to)
            changed = {g: c_lo[g] for g in c_lo if c_lo[g] != c_hi[g] and g not in held}
            if not changed:
                break
            held.update(changed)
        err, s, f, held = best
        if warn and err > MACS_TOLERANCE * target:
            log.warning(
                "MACs budget %.4f: the closest reachable fraction with this model's group sizes is %.4f",
                target, f,
            )
        return s, held, f

    def _resolve_latency(self, state: PruningState) -> float:
        """The sparsity of a latency budget (see prunekit.latency_budget): timed at the first event and at the
        last scheduled one; events in between reuse the MACs fraction of the last measurement."""
        from .latency_budget import (
            ROUND_TO_CANDIDATES,
            LatencyBudgetError,
            rank_round_to,
            slope_of,
            solve_latency,
            timed,
        )

        target = float(self.budget.latency)  # type: ignore[arg-type]
        last = self.step >= self.schedule.steps[-1]
        if self.latency is not None and not last:
            s, self.held, _ = self._solve_macs(state, self.latency["macs"], self.round_to, warn=False)
            return s
        t0 = time.perf_counter()
        timer = self.latency_timer
        assert timer is not None
        dense = self._slim_counts({g.id: g.size for g in self.graph.groups})
        cache: dict[tuple[int, tuple[tuple[str, int], ...]], Probe] = {}
        calls = 0

        def candidate(m: float, r: int) -> tuple[float, dict[str, int], float, dict[str, int]]:
            s, held, f = self._solve_macs(state, max(m, self.macs_floor(state, r)), r, warn=False)
            return s, held, f, self._allocate(state, s, held, r)

        def probe(m: float, r: int) -> Probe:
            nonlocal calls
            s, held, f, counts = candidate(m, r)
            key = (r, tuple(sorted(counts.items())))
            if key not in cache:
                calls += 1
                (dense_ms, ms), (_, ratio) = timed(timer([dense, self._slim_counts(counts)]))
                cache[key] = Probe(f, ratio, ms, dense_ms, r, s, held)
            return cache[key]

        start = self.latency["macs"] if self.latency is not None else None
        tried: dict[int, dict[str, float]] = {}
        if not self.round_to_chosen:
            try:  # the MACs fraction at which the candidates are compared: where round_to 1 meets the target
                at = solve_latency(lambda m: probe(m, 1), target, self.macs_floor(state, 1), start)[0].macs
            except LatencyBudgetError:  # out of reach with round_to 1: compare at its floor (a coarser may reach)
                at = self.macs_floor(state, 1)
            widest = max(g.size for g in self.graph.groups)
            options: dict[int, tuple[float, dict[str, int], float, dict[str, int]]] = {}
            for r in ROUND_TO_CANDIDATES:
                if r < widest or r == 1:
                    c = candidate(at, r)
                    if all(c[3] != o[3] for o in options.values()):  # same widths as a finer rounding: skip
                        options[r] = c
            calls += 1
            ms, ratios = timed(timer([dense, *(self._slim_counts(c[3]) for c in options.values())]))
            each = {
                r: Probe(c[2], q, t, ms[0], r, c[0], c[1])
                for (r, c), t, q in zip(options.items(), ms[1:], ratios[1:], strict=True)
            }
            ranking = rank_round_to(each, slope_of(list(cache.values())), at)
            tried = {r: {"macs": p.macs, "ratio": p.ratio} for r, p in each.items()}
            start = at
        else:
            ranking = [self.round_to]
        for i, r in enumerate(ranking):
            try:
                best, probes = solve_latency(lambda m, r=r: probe(m, r), target, self.macs_floor(state, r), start)
                break
            except LatencyBudgetError:
                if i + 1 == len(ranking):
                    raise
        self.round_to, self.round_to_chosen = r, True
        if abs(best.ratio - target) > 0.1 * target:
            log.warning(
                "latency budget %.3g: the closest measured candidate keeps %.3g of the dense latency",
                target, best.ratio,
            )
        self.held = dict(best.held)
        self.latency = {
            **best.summary(),
            "target": target,
            "target_ms": target * best.dense_ms,
            "probes": len(probes),
            "timer_calls": calls,
            "round_to_candidates": tried or (self.latency or {}).get("round_to_candidates", {}),
            "seconds": time.perf_counter() - t0,
            "step": self.step,
        }
        log.info(
            "latency budget %.3g at step %d: %.3g ms of %.3g ms dense (ratio %.3f) at %.3f of the MACs, round_to %d "
            "(%d timer calls, %.1fs)",
            target, self.step, best.ms, best.dense_ms, best.ratio, best.macs, self.round_to, calls,
            self.latency["seconds"],
        )
        return best.sparsity

    def _slim_counts(self, counts: dict[str, int]) -> nn.Module:
        """The model slimmed to these group widths (first channels kept; the widths alone set its speed), on
        the CPU without gradients: what a latency timer measures."""
        with torch.no_grad():
            small = slim(self.model, self.graph, self._counts_keep(counts))
        for p in small.parameters():
            p.grad = None
            p.requires_grad_(False)
        return small.eval()

    # -- masks ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def _set_keep(self, new: dict[str, torch.Tensor], old: dict[str, torch.Tensor]) -> None:
        new = self.graph.validate_keep(new)
        new = {g.id: new.get(g.id, torch.ones(g.size, dtype=torch.bool)) for g in self.graph.groups}
        apply_masks(self.model, self.graph, new)
        back = self.mru.restore(self.model, old, new)
        if self.strategy.regrow_init == "zero":
            self._zero_regrown_filters(old, new)
        self.keep = new
        self._rebuild()
        self.enforce()
        if self.optimizer is not None:  # regrown channels start from zero optimizer state
            for key, mask in back.items():
                t = lookup_tensor(self.model, *key)
                st = self.optimizer.state.get(t, {}) if isinstance(t, nn.Parameter) else {}
                for v in st.values():
                    if isinstance(v, torch.Tensor) and v.shape == t.shape:
                        v.masked_fill_(mask.to(v.device), 0)

    def _zero_regrown_filters(self, old: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> None:
        """``regrow_init = "zero"``: the filters (producer weights and biases) of channels that came back start
        at zero. Their norm parameters and the consumers' input columns keep their MRU values: with those at
        zero too, the channel would get no gradient at all (a zero filter under a zero BN scale, read by zero
        columns, is a fixed point of training). Even so, a zero filter followed by BN and ReLU learns only
        when its BN shift is positive (the ReLU passes no gradient at 0): see docs/strategies.md."""
        for grp in self.graph.groups:
            came = new[grp.id] & ~old.get(grp.id, torch.ones(grp.size, dtype=torch.bool))
            if not bool(came.any()):
                continue
            for m in grp.members:
                hit = came[m.channels]
                if m.role in ("out", "dw") and bool(hit.any()):
                    t = lookup_tensor(self.model, m.module, m.param)
                    t.index_fill_(m.dim, m.positions[hit].to(t.device), 0)

    def _rebuild(self) -> None:
        params, pmasks, buffers, bmasks = [], [], [], []
        for key, dims in self.mru.dim_masks(self.keep).items():
            if all(bool(m.all()) for m in dims.values()):
                continue
            t = lookup_tensor(self.model, *key)
            mask = torch.empty_like(t)  # same dtype, device and memory format as the tensor
            mask.copy_(MRUStore.live(dims, t.shape, t.device).expand(t.shape))
            if isinstance(t, nn.Parameter):
                params.append(t)
                pmasks.append(mask)
            else:
                buffers.append(t)
                bmasks.append(mask)
        self._params, self._param_masks, self._buffers, self._buffer_masks = params, pmasks, buffers, bmasks

    def _check_device(self) -> None:
        """Rebuild the masks if the model moved to another device or dtype since they were made."""
        pairs = [*zip(self._params[:1], self._param_masks[:1]), *zip(self._buffers[:1], self._buffer_masks[:1])]
        if any(t.device != m.device or t.dtype != m.dtype for t, m in pairs):
            self._rebuild()

    def _broadcast(self, keep: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rank 0's masks on every rank (no-op without torch.distributed)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return keep
        ids = [g.id for g in self.graph.groups]
        flat = torch.cat([keep[i].to(torch.uint8) for i in ids])
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        flat = flat.to(device)
        dist.broadcast(flat, src=0)
        out, offset = {}, 0
        flat = flat.cpu().bool()
        for i in ids:
            n = self.graph[i].size
            out[i] = flat[offset : offset + n].clone()
            offset += n
        return out

    # -- checkpoints ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: masks, MRU values, step, events, strategy state, RNG."""
        return {
            "format": "prunekit-controller/1",
            "strategy": type(self.strategy).__name__,
            "strategy_state": copy.deepcopy(self.strategy.state_dict()),
            "step": self.step,
            "keep": {k: v.clone() for k, v in self.keep.items()},
            "mru": self.mru.state_dict(),
            "events": copy.deepcopy(self.events),
            "event_seconds": self.event_seconds,
            "sparsity": self.sparsity,
            "generator": self.generator.get_state(),
            "round_to": self.round_to,
            "latency": copy.deepcopy(self.latency),
        }

    @torch.no_grad()
    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore ``state_dict()``; pruned positions of the model and optimizer state are zeroed again."""
        if not isinstance(sd, dict) or sd.get("format") != "prunekit-controller/1":
            raise ValueError("not a PruningController state_dict (missing format 'prunekit-controller/1')")
        ids = {g.id for g in self.graph.groups}
        if set(sd["keep"]) != ids:
            extra = sorted(set(sd["keep"]) - ids)[:3]
            missing = sorted(ids - set(sd["keep"]))[:3]
            raise ValueError(
                "the controller state does not fit this graph "
                f"(groups only in the state: {extra}, only in the graph: {missing}); same model and graph?"
            )
        keep = self.graph.validate_keep(sd["keep"])
        self.mru.load_state_dict(sd["mru"])
        self.step = int(sd["step"])
        self.events = copy.deepcopy(sd["events"])
        self.event_seconds = float(sd["event_seconds"])
        self.sparsity = sd.get("sparsity")
        self.generator.set_state(sd["generator"])
        if self.budget.round_to == "auto" and sd.get("latency") is not None:
            self.round_to, self.round_to_chosen = int(sd["round_to"]), True
        self.latency = copy.deepcopy(sd.get("latency"))
        self.strategy.load_state_dict(sd.get("strategy_state", {}))
        self.keep = {g.id: keep[g.id] for g in self.graph.groups}
        apply_masks(self.model, self.graph, self.keep)
        self._rebuild()
        self.enforce()
