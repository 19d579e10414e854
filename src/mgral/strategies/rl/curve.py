"""MGRAL's ``curve`` reward: the mAP change a batch should bring, from per-class learning curves and the
number of objects the detector expects in it.

Why (``benchmarks/RESULTS.md``, "Reward fidelity"): every reward that *trains* a proxy detector on the
batch's pseudo-labels measured at zero against the worth of the batch (Spearman 0.05 for the fresh head,
-0.03 for the paper's semi-supervised proxy), while plain statistics of the detector's predictions on the
batch carry it (0.5 to 0.65 on the dev split): what a batch is worth here is mostly how many objects it
brings of the classes the labeled set lacks. A few hundred steps of proxy training on 50 held-out images
drown that in training noise. This reward computes the mAP change directly:

* mAP is the mean over classes of AP, and AP grows along a learning curve in the number of labeled objects
  of its class. Its error follows a power law, ``1 - AP_c(n) = (1 - A_c) (n / n_c)^-alpha``, anchored at
  the class's current labeled count ``n_c`` (ground truth of *labeled* images) and current AP ``A_c``.
* The batch brings ``m_c`` objects of class ``c``: the detector's detections of that class scoring at
  least ``threshold`` in the batch's images. With ``calibrate``, counts are corrected by the detector's
  precision and recall at that threshold, measured on cross-fitted hold-outs of the labeled set (the
  fold models of :class:`~.reward.ProxyReward`, which never saw the images they are measured on), so that
  the objects the detector misses are counted too — the ones a valuable batch brings. ``A_c`` is then the
  fold models' hold-out AP (else 0: no saturation).
* Near-duplicates bring one image's worth: with ``redundancy``, an image's counts are divided by the
  number of images of the batch (itself included) and of the labeled set within ``radius`` of it in the
  embedding space (``duplicates=pairs``), or (``duplicates=scenes``) in its *scene*: the connected
  component of the graph that joins two images of the pool or the labeled set within ``radius``, so that
  frames of one video, which drift step by step beyond any one radius, still count once together. With
  ``probe``, the discount applies only to a pool that has near-duplicates: at least ``probe_share`` of its
  images (of the fixed sample) have another within ``probe`` x the median distance. Below the radius,
  pairs of i.i.d. images vanish fast and frames of a video do not, so a pool without duplicates is not
  discounted for the chance pairs that any radius finds in it.
* reward = ``mean_c [AP_c(n_c + m_c) - AP_c(n_c)]``; an empty batch scores exactly 0.

``kind=oracle`` counts the batch's true objects instead (simulation only). Nothing here reads the ground
truth of unlabeled images otherwise. One reward is a few vector operations over the batch (microseconds
to a millisecond), so the search needs no look-up table for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torchvision.ops import box_iou

from mgral.data.dataset import DetectionDataset, grey_thumbnails, normalised
from mgral.data.structures import Prediction


@dataclass(frozen=True)
class CurveConfig:
    kind: Literal["pseudo", "oracle"] = "pseudo"
    threshold: float = 0.3  # a detection scoring at least this counts as an object
    exponent: float = 0.5  # alpha of the learning curve
    calibrate: bool = False  # correct counts by cross-fitted precision / recall, and saturate by hold-out AP
    redundancy: bool = True  # near-duplicates count once
    radius: float = 0.4  # ... within this fraction of the pool's median distance between two images
    duplicates: Literal["pairs", "scenes"] = "pairs"  # ... of one image, or of its connected component
    # ... only on a pool that has near-duplicates: at least probe_share of the images have another within
    # probe x the median distance (0: always). Off by default here; MgralOptions sets the agent's default
    probe: float = 0.0
    probe_share: float = 0.01
    # duplicates=scenes: how much one more frame of a scene brings. None: the scene's share, 1 / (frames of
    # the batch and the labeled set in it); a number rho in [0, 1]: frames equicorrelated at rho, the scene
    # worth its effective number of images n / (1 + (n - 1) rho) (0: no discount, 1: one image in all)
    scene_correlation: float | None = None
    # duplicates=scenes: where the scenes are found: "embeddings" (the detector's, within radius x their
    # median distance) or "pixels" (8 x 8 grey thumbnails, within pixel_scene_radius x their median distance)
    scene_space: Literal["embeddings", "pixels"] = "embeddings"
    pixel_scene_radius: float = 0.25

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"curve threshold must be in [0, 1], got {self.threshold}")
        if self.exponent <= 0:
            raise ValueError(f"curve exponent must be positive, got {self.exponent}")
        if self.radius < 0:
            raise ValueError(f"curve radius must be >= 0, got {self.radius}")
        if self.duplicates not in ("pairs", "scenes"):
            raise ValueError(f"curve duplicates must be 'pairs' or 'scenes', got {self.duplicates!r}")
        if not (np.isfinite(self.probe) and self.probe >= 0):
            raise ValueError(f"curve probe must be a number >= 0, got {self.probe}")
        if not 0 <= self.probe_share <= 1:
            raise ValueError(f"curve probe_share must be in [0, 1], got {self.probe_share}")
        if self.scene_correlation is not None and not 0 <= self.scene_correlation <= 1:
            raise ValueError(f"curve scene_correlation must be in [0, 1], got {self.scene_correlation}")
        if self.scene_space not in ("embeddings", "pixels"):
            raise ValueError(f"curve scene_space must be 'embeddings' or 'pixels', got {self.scene_space!r}")
        if not (np.isfinite(self.pixel_scene_radius) and self.pixel_scene_radius > 0):
            raise ValueError(
                f"curve pixel_scene_radius must be a positive number, got {self.pixel_scene_radius}"
            )


def class_counts(pred: Prediction, num_classes: int, threshold: float) -> np.ndarray:
    """Detections per class scoring at least ``threshold`` (float[C])."""
    keep = pred.scores >= threshold
    return np.bincount(pred.labels[keep], minlength=num_classes).astype(np.float64)[:num_classes]


def precision_recall(
    dataset: DetectionDataset, indices: np.ndarray, preds: list[Prediction], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the precision and recall (IoU >= 0.5, same class, each object matched once, best score
    first) of the detections scoring at least ``threshold``; add-one smoothed so neither is 0 or 1."""
    c = dataset.num_classes
    tp, n_det, n_gt = np.zeros(c), np.zeros(c), np.zeros(c)
    for i, p in zip(indices, preds):
        rec = dataset[int(i)]
        np.add.at(n_gt, rec.labels, 1)
        keep = np.nonzero(p.scores >= threshold)[0]
        np.add.at(n_det, p.labels[keep], 1)
        if not len(keep) or not len(rec.labels):
            continue
        order = keep[np.argsort(-p.scores[keep], kind="stable")]
        iou = box_iou(torch.as_tensor(p.boxes[order], dtype=torch.float64),
                      torch.as_tensor(rec.boxes, dtype=torch.float64)).numpy()  # fmt: skip
        iou[p.labels[order][:, None] != rec.labels[None, :]] = 0.0
        used = np.zeros(len(rec.labels), bool)
        for d in range(len(order)):
            cand = np.where(used, 0.0, iou[d])
            j = int(cand.argmax())
            if cand[j] >= 0.5:
                used[j] = True
                tp[p.labels[order[d]]] += 1
    return (tp + 1) / (n_det + 2), (tp + 1) / (n_gt + 2)


class CurveReward:
    """``reward(batch) -> float`` (dataset indices of unlabeled images, in any order: the same set gives
    the same value to the last bit); see the module docstring.

    counts (float[U, C]): objects per class of each unlabeled image, already calibrated (or true, for the
    oracle); labeled_counts (float[C]); ap (float[C]): current AP per class (zeros: no saturation);
    emb_unlabeled / emb_labeled: embeddings for the redundancy discount; has_duplicates: whether the data has
    near-duplicates, decided before (``None``: by the probe, or always with ``probe=0``); thumbs_unlabeled /
    thumbs_labeled: the images' normalised 8 x 8 grey thumbnails (:func:`~mgral.data.dataset.thumbnails`),
    where the scenes are found with ``scene_space=pixels``.
    """

    def __init__(
        self, cfg: CurveConfig, *, unlabeled: np.ndarray, counts: np.ndarray, labeled_counts: np.ndarray,
        ap: np.ndarray | None = None, emb_unlabeled: np.ndarray | None = None,
        emb_labeled: np.ndarray | None = None, has_duplicates: bool | None = None,
        thumbs_unlabeled: np.ndarray | None = None, thumbs_labeled: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        self.cfg = cfg
        self.unlabeled = np.asarray(unlabeled, np.int64)
        self.position = {int(i): k for k, i in enumerate(self.unlabeled)}
        self.counts = np.asarray(counts, np.float64)
        self.n = np.asarray(labeled_counts, np.float64) + 1.0  # add-one: a class with no labeled object
        self.headroom = 1.0 - (np.zeros(len(self.n)) if ap is None else np.nan_to_num(np.asarray(ap, float)))
        self.calls = 0
        self.base_map: float | None = None if ap is None else float(np.nanmean(ap))
        self.emb: np.ndarray | None = None
        self.dup_labeled = np.zeros(len(self.unlabeled))
        self.scene: np.ndarray | None = None  # duplicates=scenes: the component of every unlabeled image
        self.scene_labeled = np.zeros(0)  # ... and the labeled images in each component
        self.probe_share = float("nan")  # share of the images with a neighbour within the probe radius
        self.has_duplicates = False  # whether the discount applies (redundancy on, and the probe found some)
        if cfg.redundancy and emb_unlabeled is not None and len(emb_unlabeled) > 1:
            emb = np.asarray(emb_unlabeled, np.float64)
            mu, sd = emb.mean(0), emb.std(0) + 1e-6
            self.emb = (emb - mu) / sd
            # the scale: the median distance between two images, from a fixed sample of at most 2,048
            # images (the whole pool would be quadratic: 10^10 distances at COCO's size). Not the median
            # nearest-neighbour distance: on a video-like pool nearly every image's nearest neighbour is a
            # frame of its own scene, so a fraction of that distance misses the very duplicates it is for
            # (docs/design.md, "The curve reward")
            median = _median_distance(self.emb)
            self.r2 = (cfg.radius * median) ** 2
            zl = (
                (np.asarray(emb_labeled, np.float64) - mu) / sd
                if emb_labeled is not None and len(emb_labeled)
                else np.zeros((0, self.emb.shape[1]))
            )
            self.has_duplicates = True
            if has_duplicates is not None:  # decided before (the first cycle's probe, or the pixels'): kept
                self.has_duplicates = has_duplicates
            elif cfg.probe > 0:
                self.probe_share = _probe_share(np.concatenate([self.emb, zl]), (cfg.probe * median) ** 2)
                self.has_duplicates = self.probe_share >= cfg.probe_share
            if not self.has_duplicates:  # nothing to discount: every image counts in full
                self.emb = None
            elif cfg.duplicates == "scenes" and cfg.scene_space == "pixels":
                if thumbs_unlabeled is None or len(thumbs_unlabeled) != len(self.unlabeled):
                    raise ValueError("curve scene_space=pixels needs a thumbnail of every unlabeled image")
                self.scene, self.scene_labeled = pixel_scenes(
                    thumbs_unlabeled, thumbs_labeled, cfg.pixel_scene_radius
                )
            elif cfg.duplicates == "scenes":
                self.scene, self.scene_labeled = _scenes(self.emb, zl, self.r2)
            else:
                for s in range(0, len(self.emb), 2048):  # chunks bound the memory to 2,048 x L
                    self.dup_labeled[s : s + 2048] = (_sqdist(self.emb[s : s + 2048], zl) < self.r2).sum(1)

    def prepare(self) -> None:
        """Nothing to train: the counts and curves were computed at construction."""

    def weights(self, pos: np.ndarray) -> np.ndarray:
        """1 / (images of the batch and of the labeled set within the radius, itself included), or in its
        scene (``duplicates=scenes``)."""
        if self.emb is None:
            return np.ones(len(pos))
        if self.scene is not None:
            return scene_weights(self.scene[pos], self.scene_labeled, self.cfg.scene_correlation)
        d2 = _sqdist(self.emb[pos], self.emb[pos])
        np.fill_diagonal(d2, np.inf)
        return 1.0 / (1.0 + (d2 < self.r2).sum(1) + self.dup_labeled[pos])

    def __call__(self, batch: np.ndarray) -> float:
        self.calls += 1
        pos = np.sort([self.position[int(i)] for i in np.asarray(batch).reshape(-1)]).astype(np.int64)
        if len(pos) == 0:
            return 0.0
        m = self.weights(pos) @ self.counts[pos]
        a = self.cfg.exponent
        gain = self.headroom * (1.0 - (self.n / (self.n + m)) ** a)
        return float(gain.mean())


def scene_weights(scenes: np.ndarray, labeled: np.ndarray, correlation: float | None = None) -> np.ndarray:
    """Each image's worth in its scene; ``scenes`` (int[B]) are the batch's scene ids, ``labeled`` (float[K])
    the labeled images per scene. ``correlation=None``: its share of the scene, 1 / (the batch's k images in
    its scene, itself included, plus the scene's L labeled images). A number rho: the frames of a scene are
    equicorrelated at rho, n of them are worth ``n_eff(n) = n / (1 + (n - 1) rho)`` independent images, and
    the batch's k frames share what they add, ``(n_eff(k + L) - n_eff(L)) / k`` each (rho = 0: 1, no
    discount; rho = 1: 1 / k in a scene without labeled frames, 0 in one with)."""
    _, inverse, size = np.unique(scenes, return_inverse=True, return_counts=True)
    k, held = size[inverse].astype(np.float64), labeled[scenes]
    if correlation is None:
        return 1.0 / (k + held)

    def n_eff(n: np.ndarray) -> np.ndarray:  # n >= 1
        return n / (1.0 + (n - 1.0) * correlation)

    return (n_eff(k + held) - np.where(held > 0, n_eff(np.maximum(held, 1.0)), 0.0)) / k


# How many images the duplicate probe reads: a fixed random subset of this many (all of a smaller pool),
# each compared with the others of the subset. The probe's radii and shares were chosen and checked on
# pools of 1,000 images (benchmarks/duplicate_probe.py), and a fixed subset keeps their meaning on any
# pool: searching a frame's neighbour among all N images would find chance neighbours of independent
# images ever closer as N grows (the i.i.d. digits: 0.033-0.039 on pools of 1,000, 0.064-0.065 at 4,000), and
# the discount would turn on for every large pool. On a pool of N > 1,000, a frame's twin is in the subset
# with probability about 1 - (1 - 1,000 / N)^(k - 1), k the frames of its scene; the pixel probe also
# compares each image with its two neighbours in the pool's order, where the frames of a video usually
# are (docs/design.md, "The curve reward").
PROBE_IMAGES = 1000


def probe_rows(n: int) -> np.ndarray:
    """The rows of ``n`` that the duplicate probe reads: a fixed random :data:`PROBE_IMAGES` of them
    (sorted), all of them when ``n`` is not larger."""
    return np.sort(np.random.default_rng(0).permutation(n)[:PROBE_IMAGES])


# The pixel probe's comparison with the pool-order neighbours: 16 x 16 grey thumbnails, the central 12 x 12
# of an image against every shift of up to 2 cells (an eighth of the width each way) of its neighbour's, so
# that a camera pan of up to about a sixth of the width per frame stays a near-duplicate
# (benchmarks/duplicate_probe_real.py; docs/design.md, "The curve reward")
ORDER_SIDE, ORDER_SHIFT = 16, 2
ORDER_PROBE = 0.2  # the default radius of that comparison (MgralOptions.curve_pixel_order_probe)


def pixel_duplicate_share(
    thumbs: np.ndarray, probe: float, adjacent: np.ndarray | None = None, near_in_order: np.ndarray | None = None
) -> float:  # fmt: skip
    """Does the data have near-duplicates, judged on the images themselves? ``thumbs`` (float[N, D]):
    images as normalised grey thumbnails (:func:`mgral.data.dataset.thumbnails`); of a pool, use
    :func:`data_duplicate_share`. Of the rows :func:`probe_rows`, the share with another of them closer
    than ``probe`` x the median distance of two of them, or with one of its neighbours in the pool's order
    as close (``adjacent``, float[N, 2, D]: their thumbnails, zero rows where there is none), or with a
    near-duplicate among those neighbours once shifts are allowed (``near_in_order``, bool[N], from
    :func:`order_near_duplicates`). Flat images (the zero thumbnail) are left out: a few blank frames are
    each other's twins, and would turn the discount on for a whole pool. Where more than half the pairs are
    identical the radius is 0 and exact copies count. Unlike the detector's embedding, which maps
    independent images of one kind close together (the i.i.d. digits: 5-13% of the images within 0.25 x
    its median distance), a thumbnail keeps what a frame shares with its neighbour in a video, and only
    that (``benchmarks/duplicate_probe.py``)."""
    rows = probe_rows(len(thumbs))
    sub = np.asarray(thumbs, np.float64)[rows]
    keep = np.linalg.norm(sub, axis=1) > 0
    sub = sub[keep]
    if len(sub) < 2:
        return 0.0
    r2 = max((probe * _median_distance(sub)) ** 2, 1e-12)
    nearest = _nearest_other(sub)
    if adjacent is not None:
        adj = np.asarray(adjacent, np.float64)[rows][keep]
        da = ((adj - sub[:, None]) ** 2).sum(2)
        da[np.linalg.norm(adj, axis=2) == 0] = np.inf  # no neighbour there, or a flat one
        nearest = np.minimum(nearest, da.min(1))
    found = nearest <= r2
    if near_in_order is not None:
        found |= np.asarray(near_in_order, bool)[rows][keep]
    return float(found.mean())


def order_near_duplicates(grey: np.ndarray, neighbours: np.ndarray, probe: float) -> np.ndarray:
    """Which images have a near-duplicate among their neighbours in the pool's order, allowing for a
    shift: ``grey`` (float[N, S, S], :data:`ORDER_SIDE`-sided grey thumbnails), ``neighbours``
    (float[N, 2, S, S], each image's two neighbours, NaN where there is none). An image's central crop is
    compared with every crop of a neighbour shifted by up to :data:`ORDER_SHIFT` cells (each centred and
    scaled to unit norm), and the closest counts when it is within ``probe`` x the median distance of two
    of the N images' central crops. Flat crops match nothing. Only two comparisons per image, so
    independent images, whose neighbours are as unrelated as any two, stay apart even with the shifts that
    bring a pan's frames together."""
    n, side = len(grey), grey.shape[-1]
    if n < 2:
        return np.zeros(n, bool)
    m = ORDER_SHIFT

    def crops(t: np.ndarray, dy: int, dx: int) -> np.ndarray:
        return normalised(t[:, m + dy : side - m + dy, m + dx : side - m + dx].reshape(len(t), -1))

    centre = crops(grey, 0, 0)
    textured = np.linalg.norm(centre, axis=1) > 0  # flat crops match nothing, nor set the scale
    if textured.sum() < 2:
        return np.zeros(n, bool)
    r2 = max((probe * _median_distance(centre[textured])) ** 2, 1e-12)
    best = np.full(n, np.inf)
    for k in range(neighbours.shape[1]):
        other = neighbours[:, k]
        there = ~np.isnan(other).any(axis=(1, 2))
        for dy in range(-m, m + 1):
            for dx in range(-m, m + 1):
                shifted = crops(np.nan_to_num(other), dy, dx)
                d2 = ((centre - shifted) ** 2).sum(1)
                d2[~there | (np.linalg.norm(shifted, axis=1) == 0)] = np.inf
                best = np.minimum(best, d2)
    best[~textured] = np.inf
    return best <= r2


def data_duplicate_share(
    dataset: DetectionDataset, indices: np.ndarray, probe: float, *, order: bool = True,
    order_probe: float = ORDER_PROBE,
) -> float:  # fmt: skip
    """The pixel probe on the images ``indices`` of ``dataset`` (a pool: labeled and unlabeled together):
    :func:`pixel_duplicate_share` of the 8 x 8 thumbnails of a fixed subset of them, each also compared
    with its two neighbours in the pool's order (``order``): as 8 x 8 thumbnails within ``probe``, and with
    shifts (:func:`order_near_duplicates`) within ``order_probe`` (0: not). The indices are sorted (and
    made unique) first, so the subset, and the decision, depend on the pool alone, not on which of its
    images a seed labeled first. Only the subset's images and their neighbours are read, each once (at most
    3,000 decodes whatever the pool's size)."""
    idx = np.unique(np.asarray(indices, np.int64))  # sorted, and an image given twice is read once
    if len(idx) < 2:
        return 0.0
    rows = probe_rows(len(idx))
    if not order:
        (small,) = grey_thumbnails(dataset, idx[rows], (8,))
        return pixel_duplicate_share(normalised(small.reshape(len(rows), 64)), probe)
    side = np.stack([rows - 1, rows + 1], 1)  # positions in the sorted pool
    valid = (side >= 0) & (side < len(idx))
    read = np.union1d(rows, side[valid])
    small, grey = grey_thumbnails(dataset, idx[read], (8, ORDER_SIDE))
    thumbs = normalised(small.reshape(len(read), 64))
    at, beside = np.searchsorted(read, rows), np.searchsorted(read, side[valid])
    adjacent = None  # the whole pool is the subset: the search among it holds these pairs already
    if len(rows) < len(idx):
        adjacent = np.zeros((len(rows), 2, 64))
        adjacent[valid] = thumbs[beside]
    near = None
    if order_probe > 0:
        neighbours = np.full((len(rows), 2, ORDER_SIDE, ORDER_SIDE), np.nan)
        neighbours[valid] = grey[beside]
        near = order_near_duplicates(grey[at], neighbours, order_probe)
    return pixel_duplicate_share(thumbs[at], probe, adjacent, near)


def pixel_scenes(
    thumbs: np.ndarray, thumbs_labeled: np.ndarray | None, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """The scenes of ``scene_space=pixels``: the connected components of the images' thumbnails (unlabeled
    ``thumbs``, then ``thumbs_labeled``) within ``radius`` x the median distance of two of them; the
    component of every unlabeled image (int[U]) and the labeled images in every component (float[K])."""
    tu = np.asarray(thumbs, np.float64)
    tl = np.zeros((0, tu.shape[1])) if thumbs_labeled is None else np.asarray(thumbs_labeled, np.float64)
    median = _median_distance(np.concatenate([tu, tl]))
    return _scenes(tu, tl, (radius * median) ** 2)


def _median_distance(z: np.ndarray) -> float:
    """The median distance between two of the rows of ``z``, over a fixed sample of at most 2,048 of them."""
    sample = z[np.random.default_rng(0).permutation(len(z))[:2048]]
    d2 = _sqdist(sample, sample)
    return float(np.median(np.sqrt(d2[np.triu_indices(len(sample), 1)])))


def _probe_share(z: np.ndarray, r2: float) -> float:
    """Does the data have near-duplicates at all? Of the rows :func:`probe_rows` of ``z`` (unlabeled and
    labeled images together, so that the share does not fall as the pool is labeled), the share with
    another of them within ``sqrt(r2)``. On i.i.d. images the pairs within a radius vanish fast below it
    (the hard shapes: 124 pairs at 0.4, 5 at 0.35, none at 0.3 x the median distance), on the frames of
    videos they do not (130 at 0.3; ``benchmarks/duplicate_radius.py``)."""
    if len(z) < 2:
        return 0.0
    return float((_nearest_other(z[probe_rows(len(z))]) <= r2).mean())


def _nearest_other(z: np.ndarray) -> np.ndarray:
    """Each row's squared distance to the nearest other row of ``z`` (at most 1,000 rows: the probe's)."""
    d2 = _sqdist(z, z)
    np.fill_diagonal(d2, np.inf)  # not itself
    return d2.min(1)


def _scenes(emb: np.ndarray, emb_labeled: np.ndarray, r2: float) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the graph joining two images (unlabeled ``emb`` then ``emb_labeled``) closer
    than ``sqrt(r2)``: the component of every unlabeled image (int[U]) and the number of labeled images in
    every component (float[K]). Edges are found by chunks of rows holding at most 2^22 distances (32 MB
    whatever the pool's size: a fixed 2,048 rows would need 1.9 GB at COCO's 117,000 images)."""
    z = np.concatenate([emb, emb_labeled])
    rows, cols = [], []
    step = max(1, 2**22 // len(z))
    for s in range(0, len(z), step):
        r, c = np.nonzero(_sqdist(z[s : s + step], z) < r2)
        rows.append(r + s)
        cols.append(c)
    row, col = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(row), np.int8), (row, col)), shape=(len(z), len(z)))
    _, label = connected_components(graph, directed=False)
    labeled = np.bincount(label[len(emb) :], minlength=int(label.max()) + 1).astype(np.float64)
    return label[: len(emb)], labeled


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0.0)


__all__ = [
    "CurveConfig",
    "CurveReward",
    "class_counts",
    "PROBE_IMAGES",
    "data_duplicate_share",
    "order_near_duplicates",
    "ORDER_PROBE",
    "ORDER_SHIFT",
    "ORDER_SIDE",
    "pixel_duplicate_share",
    "pixel_scenes",
    "probe_rows",
    "precision_recall",
    "scene_weights",
]
