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
import copy
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Sampler

from mgral.config import SemiConfig, TrainConfig
from mgral.data.dataset import DetectionDataset, Indices
from mgral.data.torch_data import TrainSamples, batch_schedule, collate
from mgral.training.supervised import num_iterations, run_schedule
from mgral.utils import derive_seed

if TYPE_CHECKING:
    from mgral.detectors.detector import Detector


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


def resolve_method(cfg: SemiConfig, softmax: bool) -> str:
    if cfg.method == "auto":
        return "isd" if softmax else "sed"
    if cfg.method == "isd" and not softmax:
        raise ValueError("ISD needs a softmax (SSD-style) detector")
    if cfg.method == "sed" and softmax:
        raise ValueError("SED needs a sigmoid (RetinaNet-style) detector with an FPN")
    return cfg.method


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


# ---------------------------------------------------------------------------------------------- trainer
class _SemiSampler(Sampler):
    """Per iteration: the labeled batch, then ``unlabeled_batch`` images of the unlabeled schedule."""

    def __init__(
        self, labeled: Indices, unlabeled: Indices, bs: int, ubs: int, seed: int, start: int, stop: int
    ) -> None:
        self.labeled, self.unlabeled, self.bs, self.ubs = labeled, unlabeled, bs, ubs
        self.seed, self.start, self.stop = seed, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):  # type: ignore[no-untyped-def]
        for it in range(self.start, self.stop):
            lab = batch_schedule(self.labeled, self.bs, self.seed, it)
            unl = batch_schedule(self.unlabeled, self.ubs, derive_seed(self.seed, "unlabeled"), it)
            if len(unl) < self.ubs:  # the last batch of an epoch: top up from the next epoch's order
                unl = unl + batch_schedule(
                    self.unlabeled, self.ubs, derive_seed(self.seed, "unlabeled"), it + 1
                )
            unl = unl[: self.ubs - self.ubs % 2]
            yield [(it, p, i) for p, i in enumerate(lab)] + [
                (it, self.bs + p, -1 - i) for p, i in enumerate(unl)
            ]


class _SemiSamples(TrainSamples):
    """Labeled keys give (image, target); unlabeled keys (negative index) give (image, None)."""

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, Any]:
        it, pos, i = key
        if i >= 0:
            return super().__getitem__(key)
        img, _ = super().__getitem__((it, pos, -1 - i))
        return img, None


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
    """Train ``detector`` on labeled and unlabeled images with ISD or SED (by ``semi.method``).

    Unlabeled images are only ever read as pixels: their annotations (if the dataset has any) are not used.
    """
    if len(labeled) == 0:
        raise ValueError("no labeled images to train on")
    if len(unlabeled) < 2:
        raise ValueError("semi-supervised training needs at least two unlabeled images")
    method = resolve_method(semi, detector.softmax)
    total = num_iterations(cfg, len(labeled))
    samples = _SemiSamples(dataset, cfg.augment, seed)
    ubs = min(semi.unlabeled_batch, len(unlabeled) - len(unlabeled) % 2)
    m: Any = detector.model
    teacher: Any = None
    if method == "sed":
        teacher = copy.deepcopy(m)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    def loader_for(start: int, stop: int) -> DataLoader:
        sampler = _SemiSampler(labeled, unlabeled, cfg.batch_size, ubs, seed, start, stop)
        return DataLoader(samples, batch_sampler=sampler, num_workers=cfg.num_workers, collate_fn=collate,
                          pin_memory=detector.device.type == "cuda")  # fmt: skip

    def forward_heads(x: torch.Tensor, model: Any) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        feats = model.backbone(x)
        feats = list(feats.values()) if isinstance(feats, dict) else [feats]
        return model.head(feats), feats

    def loss_fn(images: list[torch.Tensor], targets: list[Any], it: int) -> dict[str, torch.Tensor]:
        lab = [k for k, t in enumerate(targets) if t is not None]
        unl = [k for k, t in enumerate(targets) if t is None]
        losses = dict(m([images[k] for k in lab], [targets[k] for k in lab]))
        w = semi.weight * ramp_weight(it, total, semi.rampup, semi.rampdown)
        if not unl or w == 0.0:
            return losses
        x = m.transform([images[k] for k in unl])[0].tensors
        if method == "isd":
            rng = np.random.default_rng(derive_seed(seed, "isd-lambda", it))
            lam = float(rng.beta(semi.isd_beta, semi.isd_beta))
            half = len(unl) // 2
            x_flip = x.flip(-1)
            x_partner = torch.cat([x_flip[half:], x_flip[:half]])
            with frozen_bn_stats(m):
                head, _ = forward_heads(torch.cat([x, x_partner, lam * x + (1 - lam) * x_partner]), m)
            p = torch.softmax(head["cls_logits"], -1).chunk(3)
            loc = head["bbox_regression"].chunk(3)
            t1, t2 = isd_losses(p[0], p[1], p[2], loc[0], loc[1], loc[2], lam)
            losses["isd_type1"] = w * semi.isd_type1 * t1
            losses["isd_type2"] = w * t2
            return losses
        # SED
        with torch.no_grad():
            t_head, t_feats = forward_heads(x, teacher)
        t_cls = [torch.sigmoid(c) for c in _split_levels(t_head["cls_logits"], t_feats)]
        t_reg = _split_levels(t_head["bbox_regression"], t_feats)
        small = F.interpolate(x, scale_factor=semi.sed_scale, mode="bilinear", align_corners=False)
        with frozen_bn_stats(m):
            s_head, s_feats = forward_heads(x, m)
            r_head, r_feats = forward_heads(small, m)
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
        losses["sed_cls"] = w * cls_loss
        losses["sed_reg"] = w * reg_loss
        return losses

    def after_step(it: int) -> None:
        if teacher is None:
            return
        with torch.no_grad():
            d = semi.ema_decay if it > 0 else 0.0
            for tp, sp in zip(teacher.parameters(), m.parameters()):
                tp.mul_(d).add_(sp.detach(), alpha=1 - d)
            for tb, sb in zip(teacher.buffers(), m.buffers()):
                tb.copy_(sb)

    return run_schedule(
        detector, loader_for, loss_fn, cfg, total, checkpoint=checkpoint, progress=progress, desc=f"train-{method}",
        extra_state={"teacher": teacher} if teacher is not None else None, after_step=after_step,
    )  # fmt: skip
