"""Semi-supervised detectors, the MGRAL mAP proxy: ISD for SSD-style and SED for RetinaNet-style models.

ISD (Jeong et al., CVPR 2021): a batch of unlabeled images ``x`` is paired with the horizontally flipped
other half of the batch ``x'``; the model sees ``x``, ``x'`` and ``lam * x + (1 - lam) * x'``
(``lam ~ Beta(100, 100)``). Per anchor, a source is *foreground* when its best object class beats
background. Type I (both sources foreground): the mixed image's class distribution and the mixture of the
two sources' distributions must agree (KL both ways, each against a detached target, averaged), weight 0.1.
Type II (exactly one source foreground): the mixed image's distribution must match that source's (KL,
source detached) and so must its box offsets (Huber loss; ISD uses the squared error, which diverged here
when training from scratch: box offsets are unbounded and the squared error's gradient grows with them). Background/background anchors are
excluded. The unsupervised loss is ramped up over the first 27% of iterations and down over the last 17%
(ISD's 32k/120k and 20k/120k).

SED (Guo et al., CVPR 2022): a teacher, the EMA of the student, sees an unlabeled image; the student sees
the same image and the image rescaled by 1/2. Distillation targets are the teacher's sigmoid scores and
box offsets: at the same scale level-to-level, and scale-equivalently — FPN level ``l`` of the image and
level ``l - 1`` of the half-size image have the same grid and anchors of half the size, so they should
predict the same. Foreground/background imbalance is re-weighted focal-style: each anchor's
classification term is weighted by ``|teacher - student| ** gamma`` and the sum is normalised by the
teacher's soft foreground count (the sum over anchors of its top class score); offsets are distilled on the
anchors the teacher scores above ``sed_reg_thresh``, weighted by the teacher's score. (docs/design.md lists where this departs from the papers.)
"""

from __future__ import annotations

import contextlib
import math
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Sampler

from mgral.config import SemiConfig, TrainConfig
from mgral.data.dataset import DetectionDataset, Indices
from mgral.data.torch_data import TrainSamples, batch_schedule, collate, keyed_batch_schedule
from mgral.detectors.detector import Detector
from mgral.training.engine import Objective, fit, num_iterations
from mgral.utils import derive_seed


# ---------------------------------------------------------------------------------------------- common
def ramp_weight(it: int, total: int, rampup: float, rampdown: float) -> float:
    """ISD's schedule: ``exp(-5 (1 - t/T_up)^2)`` up, 1, then ``exp(-12.5 (1 - (T - t)/T_down)^2)`` down; 0 at t=0."""
    if it == 0:
        return 0.0
    up, down = rampup * total, rampdown * total
    if up > 0 and it < up:
        return math.exp(-5.0 * (1.0 - it / up) ** 2)
    if down > 0 and it > total - down:
        return math.exp(-12.5 * (1.0 - (total - it) / down) ** 2)
    return 1.0


def resolve_method(method: str, softmax: bool) -> str:
    """``auto`` is ISD for softmax (SSD-style) detectors and SED for sigmoid (RetinaNet-style) ones."""
    if method == "auto":
        return "isd" if softmax else "sed"
    if method == "isd" and not softmax:
        raise ValueError("ISD needs a softmax (SSD-style) detector")
    if method == "sed" and softmax:
        raise ValueError("SED needs a sigmoid (RetinaNet-style) detector with an FPN")
    if method not in ("isd", "sed"):
        raise ValueError(f"unknown semi-supervised method {method!r}")
    return method


def _kl(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Per-row KL(target || pred) for probability rows (epsilon as in ISD)."""
    target, pred = target + 1e-7, pred + 1e-7
    return (target * (target.log() - pred.log())).sum(-1)


# ---------------------------------------------------------------------------------------------- ISD
def isd_losses(
    p_a: torch.Tensor, p_b: torch.Tensor, p_mix: torch.Tensor,
    loc_a: torch.Tensor, loc_b: torch.Tensor, loc_mix: torch.Tensor, lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """ISD's type-I and type-II losses.

    p_* (float[B, A, C+1]): softmax class distributions (background in column 0) of the first source,
    the second source (aligned with the mix) and the mixed image; loc_* (float[B, A, 4]): box offsets.
    Returns (type_I, type_II); an empty anchor set contributes zero. Box offsets: Huber loss (beta 1).
    """
    fg_a = p_a[..., 1:].max(-1).values > p_a[..., 0]
    fg_b = p_b[..., 1:].max(-1).values > p_b[..., 0]
    zero = p_mix.sum() * 0.0
    both = fg_a & fg_b
    type1 = zero
    if both.any():
        mixed = lam * p_a[both] + (1 - lam) * p_b[both]
        pm = p_mix[both]
        type1 = 0.5 * (_kl(pm.detach(), mixed).mean() + _kl(mixed.detach(), pm).mean())
    type2 = zero
    for only, p_src, loc_src in ((fg_a & ~fg_b, p_a, loc_a), (fg_b & ~fg_a, p_b, loc_b)):
        if only.any():
            cls = _kl(p_src[only].detach(), p_mix[only]).mean()
            loc = F.smooth_l1_loss(loc_mix[only], loc_src[only].detach(), beta=1.0)
            type2 = type2 + cls + loc
    return type1, type2


# ---------------------------------------------------------------------------------------------- SED
def sed_cls_loss(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, gamma: float, norm: torch.Tensor
) -> torch.Tensor:
    """Focal-re-weighted BCE of student logits against the teacher's soft scores, divided by ``norm``."""
    s = torch.sigmoid(student_logits)
    w = (teacher_probs - s).abs().pow(gamma).detach()
    bce = F.binary_cross_entropy_with_logits(student_logits, teacher_probs, reduction="none")
    return (w * bce).sum() / norm


def sed_reg_loss(
    student_reg: torch.Tensor, teacher_reg: torch.Tensor, teacher_score: torch.Tensor, thresh: float
) -> torch.Tensor:
    """Smooth-L1 distillation of box offsets on anchors the teacher scores above ``thresh``, weighted by the score."""
    keep = teacher_score > thresh
    if not keep.any():
        return student_reg.sum() * 0.0
    per = F.smooth_l1_loss(student_reg[keep], teacher_reg[keep], reduction="none", beta=1 / 9).sum(-1)
    return (per * teacher_score[keep]).sum() / keep.sum()


def _split_levels(t: torch.Tensor, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Head output [B, sum(H*W*A), K] -> per level [B, H, W, A, K] (torchvision's (H, W, A) order)."""
    hw = [f.shape[-2] * f.shape[-1] for f in feats]
    a = t.shape[1] // sum(hw)
    out, start = [], 0
    for f, n in zip(feats, hw):
        out.append(t[:, start : start + n * a].reshape(t.shape[0], f.shape[-2], f.shape[-1], a, t.shape[-1]))
        start += n * a
    return out


@contextlib.contextmanager
def frozen_bn_stats(model: torch.nn.Module) -> Iterator[None]:
    """Batch-norm layers normalise with batch statistics but leave their running statistics unchanged.

    The unsupervised passes see mixed (ISD) or rescaled (SED) images, whose statistics differ from real
    ones; letting them into the running averages degrades the model at inference (ISD's VGG has no BN)."""
    bns = [mod for mod in model.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    try:
        yield
    finally:
        for bn, mom in zip(bns, saved):
            bn.momentum = mom


# ---------------------------------------------------------------------------------------------- objectives
SCHEDULES = {"epoch": batch_schedule, "keyed": keyed_batch_schedule}


class SemiSampler(Sampler):
    """Per iteration: the labeled batch, then ``ubs`` images of the unlabeled schedule."""

    def __init__(self, labeled: Indices, unlabeled: Indices, bs: int, ubs: int, seed: int, start: int, stop: int,
                 schedule: str = "epoch") -> None:  # fmt: skip
        self.labeled, self.unlabeled, self.bs, self.ubs = labeled, unlabeled, bs, ubs
        self.seed, self.start, self.stop = seed, start, stop
        self.unlabeled_batch = SCHEDULES[schedule]

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        useed = derive_seed(self.seed, "unlabeled")
        for it in range(self.start, self.stop):
            lab = batch_schedule(self.labeled, self.bs, self.seed, it) if len(self.labeled) else []
            unl = self.unlabeled_batch(self.unlabeled, self.ubs, useed, it)
            if len(unl) < self.ubs:  # the last batch of an epoch: top up from the next epoch's order
                unl = unl + [
                    i for i in self.unlabeled_batch(self.unlabeled, self.ubs, useed, it + 1) if i not in unl
                ]
            unl = unl[: self.ubs - self.ubs % 2]
            yield [(it, p, i) for p, i in enumerate(lab)] + [
                (it, self.bs + p, -1 - i) for p, i in enumerate(unl)
            ]


class SemiSamples(TrainSamples):
    """Labeled keys give (image, target); unlabeled keys (negative index) give (image, None)."""

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, Any]:
        it, pos, i = key
        if i >= 0:
            return super().__getitem__(key)
        img, _ = super().__getitem__((it, pos, -1 - i))
        return img, None


def heads_of(model: Any, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Head outputs and backbone features of a torchvision SSD/RetinaNet on a normalised batch."""
    feats = model.backbone(x)
    feats = list(feats.values()) if isinstance(feats, dict) else [feats]
    return model.head(feats), feats


class SemiSupervised(Objective):
    """Labeled images with their boxes (the detector's own loss) plus a consistency loss on unlabeled
    images, weighted by ``semi.weight`` times ISD's ramp. Unlabeled images are only ever read as pixels.

    ``unlabeled_schedule``: ``epoch`` (a permutation per pass, as for labeled images) or ``keyed``
    (the order of each pass keyed by image: common random numbers across unlabeled sets, for the MGRAL
    proxy). ``iterations`` overrides the count derived from the train config (``0``: derived)."""

    def __init__(self, dataset: DetectionDataset, labeled: Indices, unlabeled: Indices, semi: SemiConfig, *,
                 seed: int, augment: str = "flip", unlabeled_schedule: str = "epoch", iterations: int = 0) -> None:  # fmt: skip
        if len(unlabeled) < 2:
            raise ValueError("semi-supervised training needs at least two unlabeled images")
        if unlabeled_schedule not in SCHEDULES:
            raise ValueError(f"unknown unlabeled schedule {unlabeled_schedule!r}")
        self.dataset, self.labeled, self.unlabeled, self.semi = dataset, labeled, unlabeled, semi
        self.seed, self.augment, self.unlabeled_schedule, self.iterations = (
            seed,
            augment,
            unlabeled_schedule,
            iterations,
        )
        self.ubs = min(semi.unlabeled_batch, len(unlabeled) - len(unlabeled) % 2)

    def total_iterations(self, cfg: TrainConfig) -> int:
        return self.iterations or num_iterations(cfg, max(1, len(self.labeled)))

    def batches(self, cfg: TrainConfig, start: int, stop: int) -> Iterable[Any]:
        sampler = SemiSampler(self.labeled, self.unlabeled, cfg.batch_size, self.ubs, self.seed, start, stop,
                               self.unlabeled_schedule)  # fmt: skip
        return DataLoader(SemiSamples(self.dataset, self.augment, self.seed), batch_sampler=sampler,
                          num_workers=cfg.num_workers, collate_fn=collate,
                          pin_memory=self.detector.device.type == "cuda")  # fmt: skip

    def loss(self, batch: Any, it: int, total: int) -> dict[str, torch.Tensor]:
        images, targets = batch
        m = self.detector.module
        lab = [k for k, t in enumerate(targets) if t is not None]
        unl = [k for k, t in enumerate(targets) if t is None]
        losses: dict[str, torch.Tensor] = {}
        if lab:
            losses.update(m([images[k] for k in lab], [targets[k] for k in lab]))
        w = self.semi.weight * ramp_weight(it, total, self.semi.rampup, self.semi.rampdown)
        if not unl or w == 0.0:
            if not losses:  # nothing labeled and the ramp at zero: a zero loss that still has a graph
                losses["zero"] = sum(p.sum() * 0.0 for p in m.parameters())  # type: ignore[assignment]
            return losses
        x = m.transform([images[k] for k in unl])[0].tensors
        losses.update(self.unsupervised(x, it, w))
        return losses

    @abstractmethod
    def unsupervised(self, x: torch.Tensor, it: int, weight: float) -> dict[str, torch.Tensor]:
        """Named unsupervised losses of the normalised unlabeled batch ``x``, already times ``weight``."""


class ISD(SemiSupervised):
    """Interpolation-based semi-supervised detection (see the module docstring)."""

    name = "isd"

    def unsupervised(self, x: torch.Tensor, it: int, weight: float) -> dict[str, torch.Tensor]:
        m = self.detector.module
        rng = np.random.default_rng(derive_seed(self.seed, "isd-lambda", it))
        lam = float(rng.beta(self.semi.isd_beta, self.semi.isd_beta))
        half = len(x) // 2
        x_flip = x.flip(-1)
        x_partner = torch.cat([x_flip[half:], x_flip[:half]])
        with frozen_bn_stats(m):
            head, _ = heads_of(m, torch.cat([x, x_partner, lam * x + (1 - lam) * x_partner]))
        p = torch.softmax(head["cls_logits"], -1).chunk(3)
        loc = head["bbox_regression"].chunk(3)
        t1, t2 = isd_losses(p[0], p[1], p[2], loc[0], loc[1], loc[2], lam)
        return {"isd_type1": weight * self.semi.isd_type1 * t1, "isd_type2": weight * t2}


class SED(SemiSupervised):
    """Scale-equivalent distillation from an EMA teacher (see the module docstring). The teacher is a
    :class:`torch.optim.swa_utils.AveragedModel` of the student, saved in checkpoints."""

    name = "sed"
    teacher: AveragedModel

    def bind(self, detector: Detector) -> None:
        super().bind(detector)
        self.teacher = AveragedModel(detector.model, multi_avg_fn=get_ema_multi_avg_fn(self.semi.ema_decay))
        self.teacher.requires_grad_(False)

    def modules(self) -> dict[str, nn.Module]:
        return {"teacher": self.teacher}

    def train_mode(self) -> None:
        self.detector.model.train()
        self.teacher.eval()

    def after_step(self, it: int) -> None:
        self.teacher.update_parameters(self.detector.model)

    def unsupervised(self, x: torch.Tensor, it: int, weight: float) -> dict[str, torch.Tensor]:
        m, semi = self.detector.module, self.semi
        with torch.no_grad():
            t_head, t_feats = heads_of(self.teacher.module, x)
        t_cls = [torch.sigmoid(c) for c in _split_levels(t_head["cls_logits"], t_feats)]
        t_reg = _split_levels(t_head["bbox_regression"], t_feats)
        small = F.interpolate(x, scale_factor=semi.sed_scale, mode="bilinear", align_corners=False)
        with frozen_bn_stats(m):
            s_head, s_feats = heads_of(m, x)
            r_head, r_feats = heads_of(m, small)
        s_cls, s_reg = (
            _split_levels(s_head["cls_logits"], s_feats),
            _split_levels(s_head["bbox_regression"], s_feats),
        )
        r_cls, r_reg = (
            _split_levels(r_head["cls_logits"], r_feats),
            _split_levels(r_head["bbox_regression"], r_feats),
        )
        mass = sum(
            float(tc[..., 1:].max(-1).values.sum()) for tc in t_cls
        )  # the teacher's soft foreground count
        norm = torch.tensor(max(1.0, mass), device=x.device)
        cls_loss = x.sum() * 0.0
        reg_loss = x.sum() * 0.0
        pairs = [(s_cls[lv], s_reg[lv], t_cls[lv], t_reg[lv]) for lv in range(len(t_cls))]
        pairs += [
            (r_cls[lv - 1], r_reg[lv - 1], t_cls[lv], t_reg[lv]) for lv in range(1, len(t_cls))
        ]  # scale-equivalent
        for sc, sr, tc, tr in pairs:
            h, w_ = min(sc.shape[1], tc.shape[1]), min(sc.shape[2], tc.shape[2])
            sc, sr, tc, tr = sc[:, :h, :w_, :, 1:], sr[:, :h, :w_], tc[:, :h, :w_, :, 1:], tr[:, :h, :w_]
            cls_loss = cls_loss + sed_cls_loss(sc, tc, semi.sed_gamma, norm)
            reg_loss = reg_loss + sed_reg_loss(sr, tr, tc.max(-1).values, semi.sed_reg_thresh)
        return {"sed_cls": weight * cls_loss, "sed_reg": weight * reg_loss}


METHODS: dict[str, type[SemiSupervised]] = {"isd": ISD, "sed": SED}


def semi_objective(detector: Detector, dataset: DetectionDataset, labeled: Indices, unlabeled: Indices,
                   semi: SemiConfig, *, seed: int, augment: str = "flip", **kw: Any) -> SemiSupervised:  # fmt: skip
    """The semi-supervised objective for ``detector``: ``semi.method``, or by its classifier when ``auto``."""
    cls = METHODS[resolve_method(semi.method, detector.softmax)]
    return cls(dataset, labeled, unlabeled, semi, seed=seed, augment=augment, **kw)


def train_semi_supervised(
    detector: Detector,
    dataset: DetectionDataset,
    labeled: Indices,
    unlabeled: Indices,
    cfg: TrainConfig,
    semi: SemiConfig,
    *,
    seed: int,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train ``detector`` on labeled and unlabeled images with ISD or SED (by ``semi.method``)."""
    if len(labeled) == 0:
        raise ValueError("no labeled images to train on")
    objective = semi_objective(detector, dataset, labeled, unlabeled, semi, seed=seed, augment=cfg.augment)
    return fit(
        detector, objective, cfg, checkpoint=checkpoint, progress=progress, desc=f"train-{objective.name}"
    )


__all__ = ["ISD", "SED", "SemiSupervised", "semi_objective", "train_semi_supervised"]
