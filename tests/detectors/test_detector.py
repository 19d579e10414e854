import numpy as np
import pytest
import torch

from mgral.config import DetectorConfig
from mgral.detectors.detector import EMBED_DIM, Detector
from mgral.detectors.models import MODELS, build_model
from mgral.errors import InputError
from tests.conftest import TINY_TRAIN


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_predicts_and_embeds(name, shapes):
    det = Detector(DetectorConfig(name=name, image_size=64, width=16), shapes.num_classes, seed=0)
    inf = det.infer(shapes, [0, 1], predictions=True, embeddings=True, batch_size=2, progress=False)
    assert inf.embeddings.shape == (2, EMBED_DIM) and np.isfinite(inf.embeddings).all()
    for pred, rec in zip(inf.predictions, shapes.images[:2]):
        k = len(pred.boxes)
        assert (
            pred.boxes.shape == (k, 4)
            and pred.scores.shape == (k,)
            and pred.probs.shape == (k, det.num_probs)
        )
        if k:
            assert pred.labels.min() >= 0 and pred.labels.max() < shapes.num_classes
            assert (pred.boxes[:, 2] <= rec.width + 1e-3).all() and (
                pred.boxes[:, 3] <= rec.height + 1e-3
            ).all()
            # the reported score is the probability of the reported class
            col = pred.labels + (1 if det.softmax else 0)
            np.testing.assert_allclose(pred.probs[np.arange(k), col], pred.scores, rtol=1e-5)


@pytest.mark.parametrize("name", ["tiny_ssd", "tiny_retinanet"])
def test_tiny_models_train_and_lower_their_loss(name, shapes):
    det = Detector(DetectorConfig(name=name, image_size=64, width=16), shapes.num_classes, seed=0)
    from dataclasses import replace

    stats = det.fit(
        shapes, np.arange(16), replace(TINY_TRAIN, iterations=30, lr_steps=()), seed=0, progress=False
    )
    first = Detector(DetectorConfig(name=name, image_size=64, width=16), shapes.num_classes, seed=0)
    s0 = first.fit(
        shapes, np.arange(16), replace(TINY_TRAIN, iterations=2, lr_steps=()), seed=0, progress=False
    )
    assert stats["final_loss"] < s0["final_loss"]


def test_same_seed_same_weights_and_state_round_trip(shapes, tmp_path):
    cfg = DetectorConfig(name="tiny_ssd", image_size=64, width=16)
    a, b = Detector(cfg, 5, seed=3), Detector(cfg, 5, seed=3)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    a.save(tmp_path / "m.pt")
    c = Detector(cfg, 5, seed=4)
    c.load(tmp_path / "m.pt")
    for p, q in zip(a.model.parameters(), c.model.parameters()):
        assert torch.equal(p, q)


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
