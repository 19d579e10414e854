"""One resumable training loop for every way mgral trains a detector.

:func:`fit` owns what every training shares: the optimiser, the learning-rate schedule (warm-up and
steps), bf16 autocast on CUDA, gradient clipping, atomic checkpoints, and progress. *What* is trained, on
which data and with which loss is an :class:`Objective`: a small class with its data schedule, its loss,
and any modules it owns (an EMA teacher, a loss-prediction head), which are saved in the checkpoint beside
the model. Supervised, semi-supervised (ISD, SED), head-only and the strategies' own objectives (learning
loss, MI-AOD) are objectives; a new one is a new class, not an edit of this loop.

Resume: a checkpoint taken after iteration ``k`` holds the model, the optimiser, the objective's modules
and ``k``; the data schedule of an objective depends only on its seed and the iteration, so a run resumed
at ``k`` continues exactly as the uninterrupted run would have (the tests compare weights bit for bit).
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from mgral.config import TrainConfig
from mgral.detectors.detector import Detector
from mgral.utils import atomic_torch_save, crash_point, progress_bar, safe_torch_load

log = logging.getLogger(__name__)


def num_iterations(cfg: TrainConfig, n_images: int) -> int:
    """``cfg.iterations``, or ``ceil(epochs * n_images / batch_size)`` when iterations are derived from epochs."""
    if cfg.iterations > 0:
        return cfg.iterations
    return max(1, math.ceil(cfg.epochs * n_images / cfg.batch_size))


def lr_at(cfg: TrainConfig, it: int, total: int) -> float:
    """Learning rate at iteration ``it``: linear warm-up from lr/10, then steps at ``lr_steps`` fractions."""
    lr = cfg.lr * cfg.lr_gamma ** sum(it >= round(f * total) for f in cfg.lr_steps)
    if it < cfg.warmup_iters:
        alpha = it / cfg.warmup_iters
        lr *= 0.1 * (1 - alpha) + alpha
    return lr


def make_optimizer(cfg: TrainConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    trainable = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(trainable, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def to_device(obj: Any, device: torch.device) -> Any:
    """Move every tensor inside lists, tuples and dicts to ``device`` (other leaves are left alone)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        moved = [to_device(v, device) for v in obj]
        return type(obj)(moved) if not hasattr(obj, "_fields") else type(obj)(*moved)
    return obj


class Objective(ABC):
    """What a training run optimises: its data schedule, its loss, and the modules it owns.

    The engine calls :meth:`bind` once, then for each iteration ``it`` of :meth:`batches` computes
    :meth:`loss` under the optimiser built over :meth:`parameters`, and calls :meth:`after_step`.
    :meth:`modules` are saved in (and restored from) checkpoints with the model.
    """

    name: ClassVar[str] = ""
    detector: Detector

    def bind(self, detector: Detector) -> None:
        """Attach to the detector being trained (create owned modules on its device here)."""
        self.detector = detector

    def modules(self) -> dict[str, nn.Module]:
        """Modules the objective owns beyond the detector, saved with its checkpoints."""
        return {}

    def parameters(self) -> Iterator[nn.Parameter]:
        """What the optimiser updates: by default the detector's parameters and those of owned modules
        that require gradients."""
        yield from self.detector.model.parameters()
        for mod in self.modules().values():
            yield from (p for p in mod.parameters() if p.requires_grad)

    def train_mode(self) -> None:
        self.detector.model.train()
        for mod in self.modules().values():
            mod.train()

    @abstractmethod
    def total_iterations(self, cfg: TrainConfig) -> int:
        """How many iterations a run with ``cfg`` lasts."""

    @abstractmethod
    def batches(self, cfg: TrainConfig, start: int, stop: int) -> Iterable[Any]:
        """One batch per iteration ``start .. stop - 1`` (a function of the objective's seed and ``it``)."""

    @abstractmethod
    def loss(self, batch: Any, it: int, total: int) -> dict[str, torch.Tensor]:
        """Named losses of one batch (the engine sums them)."""

    def after_step(self, it: int) -> None:
        """Runs after each optimiser step (e.g. an EMA teacher's update)."""
        return None


def fit(
    detector: Detector,
    objective: Objective,
    cfg: TrainConfig,
    *,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> dict[str, float]:
    """Train ``detector`` with ``objective`` under the schedule of ``cfg``; resumable.

    With ``checkpoint``, a training state is written there atomically every ``cfg.checkpoint_every``
    iterations, resumed from if the file exists when called, and deleted when training completes.
    Returns ``{"iterations", "seconds", "final_loss"}`` (mean loss over the last tenth of the run).
    """
    objective.bind(detector)
    total = objective.total_iterations(cfg)
    opt = make_optimizer(cfg, objective.parameters())
    owned = objective.modules()
    start, history = 0, []
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.is_file():
        state = safe_torch_load(ckpt, detector.device)
        detector.model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        saved = state.get("objective", state.get("extra", {}))
        for k, mod in owned.items():
            mod.load_state_dict(saved[k])
        start, history = int(state["iteration"]), list(state["history"])
        log.info("resuming training at iteration %d/%d from %s", start, total, ckpt)
    use_amp = cfg.amp and detector.device.type == "cuda"
    clip_params = [p for g in opt.param_groups for p in g["params"]]
    objective.train_mode()
    t0 = time.perf_counter()
    with progress_bar(total, desc or f"train-{objective.name}", enabled=progress, initial=start) as bar:
        for it, batch in enumerate(objective.batches(cfg, start, total), start):
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, it, total)
            batch = to_device(batch, detector.device)
            with torch.autocast(detector.device.type, dtype=torch.bfloat16, enabled=use_amp):
                losses = objective.loss(batch, it, total)
            loss: Any = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(clip_params, cfg.grad_clip)
            opt.step()
            objective.after_step(it)
            crash_point("train-step")
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"training diverged at iteration {it} (loss {value}); lower train.lr"
                )
            history.append(value)
            bar.update(1)
            if it % 10 == 0:
                bar.set_postfix(loss=f"{value:.3f}")
            done = it + 1
            if (
                ckpt is not None
                and cfg.checkpoint_every > 0
                and done % cfg.checkpoint_every == 0
                and done < total
            ):
                atomic_torch_save(
                    {"model": detector.model.state_dict(), "optimizer": opt.state_dict(), "iteration": done,
                     "history": history, "objective": {k: m.state_dict() for k, m in owned.items()}},
                    ckpt,
                )  # fmt: skip
    detector.model.eval()
    if ckpt is not None and ckpt.is_file():
        ckpt.unlink()
    tail = history[-max(1, len(history) // 10) :] or [float("nan")]
    return {
        "iterations": float(total),
        "seconds": time.perf_counter() - t0,
        "final_loss": sum(tail) / len(tail),
    }


__all__ = ["Objective", "fit", "lr_at", "make_optimizer", "num_iterations", "to_device"]
