"""Supervised training of a :class:`~mgral.detectors.detector.Detector`, resumable at any iteration.

The schedule is iteration-based: batches come from :func:`mgral.data.torch_data.batch_schedule` and
augmentation from seeds of ``(seed, iteration, position)``, so a run resumed from a checkpoint taken at
iteration ``k`` continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mgral.config import TrainConfig
from mgral.data.dataset import DetectionDataset, Indices
from mgral.data.torch_data import ScheduleSampler, TrainSamples, collate
from mgral.utils import atomic_torch_save

if TYPE_CHECKING:
    from mgral.detectors.detector import Detector

log = logging.getLogger(__name__)


def num_iterations(cfg: TrainConfig, n_images: int) -> int:
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


def make_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


LossFn = Callable[[list[torch.Tensor], list[dict[str, torch.Tensor]], int], dict[str, torch.Tensor]]


def run_schedule(
    detector: Detector,
    loader_for: Callable[[int, int], Any],
    loss_fn: LossFn,
    cfg: TrainConfig,
    total: int,
    *,
    checkpoint: str | Path | None,
    progress: bool,
    desc: str,
    extra_state: dict[str, Any] | None = None,
    after_step: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """The iteration loop shared by the trainers: lr schedule, AMP, clipping, resumable checkpoints.

    ``loader_for(start, stop)`` yields one batch per iteration; ``loss_fn(images, targets, it)`` returns
    named losses. A checkpoint at ``checkpoint`` (if it exists) is resumed and is deleted on completion.
    ``extra_state`` holds modules (e.g. an EMA teacher) saved alongside the model; ``after_step(it)`` runs
    after each optimiser step (e.g. the teacher's EMA update).
    """
    model = detector.model
    opt = make_optimizer(cfg, model.parameters())
    start, history = 0, []
    ckpt = Path(checkpoint) if checkpoint else None
    extra_state = extra_state or {}
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, map_location=detector.device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        for k, mod in extra_state.items():
            mod.load_state_dict(state["extra"][k])
        start, history = state["iteration"], state["history"]
        log.info("resuming training at iteration %d/%d from %s", start, total, ckpt)
    use_amp = cfg.amp and detector.device.type == "cuda"
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(total=total, initial=start, desc=desc, disable=not progress, leave=False, unit="it")
    it = start
    for it, (images, targets) in enumerate(loader_for(start, total), start):
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, it, total)
        images = [im.to(detector.device, non_blocking=True) for im in images]
        targets = [None if t is None else {k: v.to(detector.device) for k, v in t.items()} for t in targets]
        with torch.autocast(detector.device.type, dtype=torch.bfloat16, enabled=use_amp):
            losses = loss_fn(images, targets, it)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if after_step is not None:
            after_step(it)
        value = float(loss.detach())  # type: ignore[union-attr]
        if not math.isfinite(value):
            raise FloatingPointError(f"training diverged at iteration {it} (loss {value}); lower train.lr")
        history.append(value)
        bar.update(1)
        if progress and it % 10 == 0:
            bar.set_postfix(loss=f"{value:.3f}")
        done = it + 1
        if (
            ckpt is not None
            and cfg.checkpoint_every > 0
            and done % cfg.checkpoint_every == 0
            and done < total
        ):
            atomic_torch_save(
                {"model": model.state_dict(), "optimizer": opt.state_dict(), "iteration": done,
                 "history": history, "extra": {k: m.state_dict() for k, m in extra_state.items()}},
                ckpt,
            )  # fmt: skip
    bar.close()
    model.eval()
    if ckpt is not None and ckpt.is_file():
        ckpt.unlink()
    tail = history[-max(1, len(history) // 10) :]
    return {
        "iterations": float(total),
        "seconds": time.perf_counter() - t0,
        "final_loss": sum(tail) / len(tail),
    }


def train_supervised(
    detector: Detector,
    dataset: DetectionDataset,
    indices: Indices,
    cfg: TrainConfig,
    *,
    seed: int,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train ``detector`` on ``dataset[indices]`` with ``cfg``; returns iterations, seconds, final loss."""
    if len(indices) == 0:
        raise ValueError("no labeled images to train on")
    total = num_iterations(cfg, len(indices))
    samples = TrainSamples(dataset, cfg.augment, seed)

    def loader_for(start: int, stop: int) -> DataLoader:
        return DataLoader(
            samples, batch_sampler=ScheduleSampler(indices, cfg.batch_size, seed, start, stop),
            num_workers=cfg.num_workers, collate_fn=collate, pin_memory=detector.device.type == "cuda",
        )  # fmt: skip

    def loss_fn(
        images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]], it: int
    ) -> dict[str, torch.Tensor]:
        return detector.model(images, targets)

    return run_schedule(
        detector, loader_for, loss_fn, cfg, total, checkpoint=checkpoint, progress=progress, desc="train"
    )
