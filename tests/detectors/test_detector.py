from dataclasses import replace

import numpy as np
import pytest
import torch

from mgral.config import DetectorConfig
from mgral.data.structures import EMBED_DIM
from mgral.data.torch_data import image_tensor, target_for
from mgral.detectors.detector import Detector
from mgral.detectors.models import MODELS, build_model
from mgral.errors import InputError
from mgral.training.supervised import train_supervised
from tests.conftest import TINY_TRAIN


@pytest.fixture(scope="module", params=["tiny_ssd", "tiny_retinanet"])
def trained(request, shapes):
    """A tiny model trained a little, so that it detects something at its own thresholds."""
    det = Detector(DetectorConfig(name=request.param, image_size=64, width=16), shapes.num_classes, seed=0)
    train_supervised(
        det, shapes, np.arange(24), replace(TINY_TRAIN, iterations=40, lr_steps=()), seed=0, progress=False
    )
    return det


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_predicts_and_embeds(name, shapes):
    det = Detector(
        DetectorConfig(name=name, image_size=64, width=16, score_thresh=0.0), shapes.num_classes, seed=0
    )
    inf = det.infer(shapes, [0, 1], predictions=True, embeddings=True, instance_features=True, batch_size=2,
                    progress=False)  # fmt: skip
    assert inf.embeddings.shape == (2, EMBED_DIM) and np.isfinite(inf.embeddings).all()
    for pred, rec in zip(inf.predictions, shapes.images[:2]):
        k = len(pred.boxes)
        assert k > 0  # with a zero score threshold an untrained model still returns its top boxes
        assert (
            pred.boxes.shape == (k, 4)
            and pred.scores.shape == (k,)
            and pred.probs.shape == (k, det.num_probs)
        )
        assert pred.features.shape == (k, EMBED_DIM) and np.isfinite(pred.features).all()
        assert pred.labels.min() >= 0 and pred.labels.max() < shapes.num_classes
        assert (pred.boxes[:, 2] <= rec.width + 1e-3).all() and (pred.boxes[:, 3] <= rec.height + 1e-3).all()
        # the reported score is the probability of the reported class
        col = pred.labels + (1 if det.softmax else 0)
        np.testing.assert_allclose(pred.probs[np.arange(k), col], pred.scores, rtol=1e-5)


def _boxes_scores_labels(dets):
    """Detections as a set of rounded (label, score, box) tuples, independent of tie order."""
    return sorted(
        (int(lab), round(float(s), 5), *(round(float(v), 3) for v in box))
        for box, s, lab in zip(dets["boxes"], dets["scores"], dets["labels"])
    )


def test_postprocessing_equals_torchvisions(trained, shapes):
    """Our post-processing keeps class-probability vectors; its boxes, scores and labels must equal
    torchvision's own ``postprocess_detections`` on the same head outputs."""
    det = trained
    m = det.module
    images = [image_tensor(shapes, i) for i in range(6)]
    with torch.no_grad():
        image_list, _ = det.transform(images)
        feats = det.features(image_list.tensors)
        head = det.head(feats)
        anchors = det.anchors(image_list, feats)
        if det.softmax:
            ours = det._postprocess_ssd(head, anchors, image_list.image_sizes)
            theirs = m.postprocess_detections(head, anchors, image_list.image_sizes)
        else:
            ours = det._postprocess_retinanet(head, anchors, feats, image_list.image_sizes)
            hw = [f.shape[-2] * f.shape[-1] for f in feats]
            a = head["cls_logits"].shape[1] // sum(hw)
            split = {k: list(v.split([n * a for n in hw], dim=1)) for k, v in head.items()}
            per_level = [list(anc.split([n * a for n in hw])) for anc in anchors]
            theirs = m.postprocess_detections(split, per_level, image_list.image_sizes)
    total = 0
    for o, t in zip(ours, theirs):
        assert not det.softmax or (t["labels"] > 0).all()
        if not det.softmax:  # torchvision's RetinaNet keeps the (never trained) background column 0
            keep = t["labels"] > 0
            assert keep.all(), "the background column scored above the threshold"
        ours_t = {"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"] + 1}
        assert _boxes_scores_labels(ours_t) == _boxes_scores_labels(t)
        total += len(t["boxes"])
    assert total > 0  # the comparison covered real detections


def test_head_on_cached_features_equals_the_full_forward(trained, shapes):
    det = trained
    idx = [0, 1, 2, 3]
    images = [image_tensor(shapes, i) for i in idx]
    targets = [target_for(shapes, i) for i in idx]

    # losses: the model's own training forward against head_losses on cached features; batch norm on its
    # running statistics in both (cached features are computed in eval mode)
    def train_mode_frozen_bn():
        det.model.train()
        for mod in det.model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.eval()

    train_mode_frozen_bn()
    with torch.no_grad():
        full = det.model([im.clone() for im in images], [dict(t) for t in targets])
    feats, sizes, orig = det.backbone_features(images)
    train_mode_frozen_bn()
    with torch.no_grad():
        cached = det.head_losses(feats, sizes, Detector.scale_targets(targets, sizes, orig))
    det.model.eval()
    assert set(full) == set(cached)
    for k in full:
        torch.testing.assert_close(full[k], cached[k], rtol=1e-4, atol=1e-5)
    # predictions: infer_batch against predict_from_features
    preds, _ = det.infer_batch(images)
    again = det.predict_from_features(feats, sizes, orig)
    assert sum(len(p.boxes) for p in preds) > 0
    for p, q in zip(preds, again):
        np.testing.assert_allclose(p.boxes, q.boxes, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(p.scores, q.scores, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(p.labels, q.labels)


def test_per_image_losses_sum_like_the_batch(trained, shapes):
    det = trained
    images = [image_tensor(shapes, i) for i in range(4)]
    image_list, targets = det.transform(images, [target_for(shapes, i) for i in range(4)])
    with torch.no_grad():
        feats = det.features(image_list.tensors)
        head = det.head(feats)
        anchors = det.anchors(image_list, feats)
        per = det.losses_per_image(targets, head, anchors)
        one = [sum(det.losses([targets[b]], {k: v[b : b + 1] for k, v in head.items()}, [anchors[b]]).values())
               for b in range(4)]  # fmt: skip
    assert per.shape == (4,) and torch.isfinite(per).all()
    torch.testing.assert_close(per, torch.stack(one))
    assert len(set(per.tolist())) > 1  # images differ


def test_same_seed_same_weights_and_state_round_trip(tmp_path):
    cfg = DetectorConfig(name="tiny_ssd", image_size=64, width=16)
    a, b = Detector(cfg, 5, seed=3), Detector(cfg, 5, seed=3)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    a.save(tmp_path / "m.pt")
    c = Detector(cfg, 5, seed=4)
    assert any(not torch.equal(p, q) for p, q in zip(a.model.parameters(), c.model.parameters()))
    c.load(tmp_path / "m.pt")
    for p, q in zip(a.model.parameters(), c.model.parameters()):
        assert torch.equal(p, q)


def test_a_checkpoint_carrying_a_pickled_object_is_refused(tmp_path):
    """Loading someone else's run directory must not unpickle arbitrary objects."""
    cfg = DetectorConfig(name="tiny_ssd", image_size=64, width=16)
    det = Detector(cfg, 5, seed=0)
    state = det.state_dict()
    state["payload"] = _Payload()
    torch.save(state, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="evil.pt: refusing to load"):
        det.load(tmp_path / "evil.pt")


class _Payload:
    def __reduce__(self):
        return (print, ("this would have run",))


def test_unknown_model_and_missing_pretrained_weights(monkeypatch, tmp_path):
    with pytest.raises(InputError, match="unknown detector"):
        build_model(DetectorConfig(name="yolo99"), 3)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torchvision.models._api as api

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(api.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(InputError, match="not in the cache .* set detector.pretrained=none"):
        build_model(DetectorConfig(name="ssd300_vgg16", pretrained="backbone"), 3)
