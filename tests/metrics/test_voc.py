"""VOC AP against hand-worked cases."""

import numpy as np
import pytest

from mgral.metrics.voc import evaluate_voc, voc_ap


def test_voc_ap_hand_worked():
    # two positives; detections: TP (p=1, r=.5), FP (p=.5, r=.5), TP (p=2/3, r=1)
    rec = np.array([0.5, 0.5, 1.0])
    prec = np.array([1.0, 0.5, 2 / 3])
    # all-point: envelope 1 on (0, .5], 2/3 on (.5, 1] -> .5 + 1/3
    assert voc_ap(rec, prec, use_07=False) == pytest.approx(0.5 + 1 / 3)
    # 11-point: t = 0..0.5 (6 points) -> 1, t = .6..1 (5 points) -> 2/3
    assert voc_ap(rec, prec, use_07=True) == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def _gt(boxes, labels, ignore=None):
    boxes = np.array(boxes, float).reshape(-1, 4)
    return boxes, np.array(labels, int), np.array(ignore if ignore is not None else [False] * len(labels))


def _det(boxes, scores, labels):
    return np.array(boxes, float).reshape(-1, 4), np.array(scores, float), np.array(labels, int)


def test_duplicate_detection_is_false_positive_and_difficult_is_ignored():
    gt = [_gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0], [False, True])]
    # best box first (TP), a duplicate on the same box (FP), one on the difficult box (ignored)
    dets = [_det([[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30]], [0.9, 0.8, 0.95], [0, 0, 0])]
    res = evaluate_voc(gt, dets, 1, use_07=False)
    # ranking: ignored, TP, FP -> precision at recall 1 is 1 -> AP 1
    assert res["AP"][0] == pytest.approx(1.0) and res["npos"][0] == 1


def test_low_iou_and_wrong_class_are_false_positives():
    gt = [_gt([[0, 0, 10, 10]], [0]), _gt([[0, 0, 10, 10]], [0])]
    dets = [_det([[5, 5, 15, 15]], [0.9], [0]), _det([[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.99], [0, 1])]
    res = evaluate_voc(gt, dets, 2, use_07=False)
    # class 0: FP (0.9, IoU 1/7), TP (0.5): rec [0, .5], prec [0, .5] -> AP .25
    assert res["AP"][0] == pytest.approx(0.25)
    assert np.isnan(res["AP"][1])  # no ground truth for class 1: left out of the mean
    assert res["mAP"] == pytest.approx(0.25)


def test_detection_does_not_fall_back_to_second_best_box():
    """B's best box is GT1, already taken by A; B also overlaps GT2 with IoU 0.74 > 0.5, which is free. The
    devkit does not fall back: B is a false positive, recall stays at 1/2 and AP is 0.5 (a matcher that
    fell back to GT2 would give B a true positive and AP 1)."""
    gt = [_gt([[0, 0, 10, 10], [2, 0, 12, 10]], [0, 0])]
    dets = [_det([[0, 0, 10, 10], [0.5, 0, 10.5, 10]], [0.9, 0.8], [0, 0])]
    ious = [9.5 / 10.5, 8.5 / 11.5]  # B against GT1 and GT2
    assert ious[0] > ious[1] > 0.5
    res = evaluate_voc(gt, dets, 1, use_07=False)
    assert res["AP"][0] == pytest.approx(0.5)


def test_matches_a_reference_loop_on_random_data():
    rng = np.random.default_rng(0)
    gt, dets = [], []
    for _ in range(30):
        n = rng.integers(0, 5)
        xy = rng.uniform(0, 80, (n, 2))
        g = np.concatenate([xy, xy + rng.uniform(5, 20, (n, 2))], 1)
        gt.append(_gt(g, rng.integers(0, 3, n), rng.random(n) < 0.2))
        m = rng.integers(0, 8)
        xy = rng.uniform(0, 80, (m, 2))
        d = np.concatenate([xy, xy + rng.uniform(5, 20, (m, 2))], 1)
        if n:
            d = np.concatenate([d, g + rng.normal(0, 1.5, g.shape)])
        dets.append(_det(d, rng.random(len(d)), rng.integers(0, 3, len(d))))
    for use_07 in (True, False):
        res = evaluate_voc(gt, dets, 3, use_07=use_07)
        for c in range(3):
            assert res["AP"][c] == pytest.approx(_reference_ap(gt, dets, c, use_07))


def _reference_ap(gt, dets, c, use_07):
    """The VOC devkit's per-detection loop (voc_eval.py), written plainly."""
    recs = {i: (g[0][g[1] == c], g[2][g[1] == c]) for i, g in enumerate(gt)}
    npos = sum(int((~ign).sum()) for _, ign in recs.values())
    items = [(s, i, b) for i, d in enumerate(dets) for b, s, lab in zip(*d) if lab == c]
    items.sort(key=lambda t: -t[0])
    taken = {i: np.zeros(len(recs[i][0]), bool) for i in recs}
    tp, fp = [], []
    for _, i, b in items:
        boxes, ign = recs[i]
        ov = -np.inf
        if len(boxes):
            ix = np.clip(np.minimum(boxes[:, 2], b[2]) - np.maximum(boxes[:, 0], b[0]), 0, None)
            iy = np.clip(np.minimum(boxes[:, 3], b[3]) - np.maximum(boxes[:, 1], b[1]), 0, None)
            inter = ix * iy
            uni = (
                (b[2] - b[0]) * (b[3] - b[1])
                + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                - inter
            )
            ious = inter / uni
            j = int(ious.argmax())
            ov = ious[j]
        if ov > 0.5:
            if ign[j]:
                tp.append(0), fp.append(0)
            elif not taken[i][j]:
                taken[i][j] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        else:
            tp.append(0), fp.append(1)
    if npos == 0:
        return float("nan")
    tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
    return voc_ap(tp_c / npos, tp_c / np.maximum(tp_c + fp_c, np.finfo(float).eps), use_07)
