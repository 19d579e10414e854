"""EBAL: entropy-based active learning for object detection with a progressive diversity constraint
(Wu, Chen and Huang, CVPR 2022). No official code exists; this follows the paper's description as the
independent re-implementations agree on it (``docs/design.md`` lists the choices made).

1. **Instance uncertainty**: the entropy of each detection's class distribution (softmax detectors: the
   whole distribution, background included; sigmoid detectors: the binary entropy of its score).
2. **ENMS** (entropy-based non-maximum suppression), per image: repeatedly take the most uncertain
   remaining instance, add its entropy to the image's score, and drop the remaining instances of the same
   class whose feature is more than ``t_enms`` cosine-similar to it (they repeat its information).
3. **DivProto**: per image and class, a prototype — the entropy-weighted mean feature of the instances ENMS
   kept. Images are visited by decreasing ENMS score and taken when they pass two tests. *Intra-class*:
   for every class of the image, its prototype is compared with the prototypes of that class in the images
   already taken (maximum cosine similarity); the image is rejected when even its least-covered class is
   more similar than ``t_intra``. *Inter-class*: the ``alpha`` fraction of classes rarest in the labeled set
   get quotas (``beta`` of the budget, split evenly); while quotas remain, an image must contain a remaining
   minority class with a detection scoring above ``t_inter``, and taking it uses up the quotas of those
   classes. When the quotas are used up or the images run out, the rest of the budget is filled by ENMS
   score (with the intra-class test; then without it if still short).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mgral.strategies.base import Selection, SelectionContext, Strategy, register_strategy
from mgral.strategies.rl.features import detection_entropy


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def enms(
    entropy: np.ndarray, labels: np.ndarray, features: np.ndarray, t_enms: float
) -> tuple[float, np.ndarray]:
    """ENMS of one image: ``(score, kept)`` where ``kept`` indexes the instances that were not suppressed."""
    remaining = list(np.argsort(-entropy, kind="stable"))
    f = _unit(np.asarray(features, np.float64))
    score, kept = 0.0, []
    while remaining:
        k = remaining.pop(0)
        kept.append(k)
        score += float(entropy[k])
        remaining = [j for j in remaining if not (labels[j] == labels[k] and float(f[j] @ f[k]) > t_enms)]
    return score, np.asarray(kept, np.int64)


def prototypes(entropy: np.ndarray, labels: np.ndarray, features: np.ndarray) -> dict[int, np.ndarray]:
    """Class -> the entropy-weighted mean feature (unit length) of the given instances of that class."""
    out = {}
    for c in np.unique(labels):
        m = labels == c
        w = entropy[m] + 1e-12
        out[int(c)] = _unit((w[:, None] * features[m]).sum(0) / w.sum())
    return out


@register_strategy
class EBALStrategy(Strategy):
    """ENMS scores with the DivProto diversity constraint (see the module docstring)."""

    name = "ebal"
    needs = frozenset({"instance_features"})

    @dataclass(frozen=True)
    class Options:
        t_enms: float = 0.5  # same-class cosine similarity above which ENMS suppresses an instance
        t_intra: float = 0.7  # prototype similarity above which a class counts as already covered
        t_inter: float = 0.3  # score a detection needs to count as an instance of a minority class
        alpha: float = 0.5  # fraction of the classes (the rarest in the labeled set) given quotas
        beta: float = 0.75  # fraction of the budget reserved for those classes
        min_score: float = 0.05  # detections below this are not instances

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        o = self.options
        n_cls = ctx.dataset.num_classes
        scores = np.zeros(len(ctx.unlabeled))
        protos: list[dict[int, np.ndarray]] = []
        top_score: list[dict[int, float]] = []
        for k, p in enumerate(ctx.predictions):
            keep = p.scores >= o.min_score
            if not keep.any() or p.features is None:
                protos.append({})
                top_score.append({})
                continue
            ent = detection_entropy(p.probs[keep], ctx.softmax)
            lab, feat = p.labels[keep], p.features[keep]
            scores[k], kept = enms(ent, lab, feat, o.t_enms)
            protos.append(prototypes(ent[kept], lab[kept], feat[kept]))
            top_score.append({int(c): float(p.scores[keep][lab == c].max()) for c in np.unique(lab)})
        counts = np.zeros(n_cls, np.int64)
        for i in ctx.labeled:
            np.add.at(counts, ctx.dataset[int(i)].labels, 1)
        n_minor = int(np.floor(o.alpha * n_cls))
        minority = [int(c) for c in np.argsort(counts, kind="stable")[:n_minor]]
        quota = {c: int(np.floor(o.beta * budget / max(1, n_minor))) for c in minority}
        quota = {c: q for c, q in quota.items() if q > 0}
        order = np.lexsort((ctx.rng.random(len(scores)), -scores))
        chosen: list[int] = []
        in_batch: set[int] = set()
        taken: dict[int, list[np.ndarray]] = {}

        def intra_ok(k: int) -> bool:
            sims = [max(float(v @ u) for u in taken[c]) for c, v in protos[k].items() if taken.get(c)]
            return not sims or min(sims) < o.t_intra

        def take(k: int) -> None:
            chosen.append(k)
            in_batch.add(k)
            for c, v in protos[k].items():
                taken.setdefault(c, []).append(v)

        for k in order:  # DivProto: minority quotas first
            if len(chosen) >= budget or not quota:
                break
            hits = [c for c in quota if top_score[k].get(c, 0.0) > o.t_inter]
            if hits and int(k) not in in_batch and intra_ok(int(k)):
                take(int(k))
                for c in hits:
                    quota[c] -= 1
                    if quota[c] <= 0:
                        del quota[c]
        for strict in (True, False):  # then by ENMS score
            for k in order:
                if len(chosen) >= budget:
                    break
                if int(k) not in in_batch and (not strict or intra_ok(int(k))):
                    take(int(k))
        pos = np.asarray(chosen[:budget], np.int64)
        return Selection(ctx.unlabeled[pos], scores[pos])


__all__ = ["EBALStrategy", "enms", "prototypes"]
