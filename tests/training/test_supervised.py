from dataclasses import replace

import numpy as np
import pytest
import torch

from mgral.config import DetectorConfig
from mgral.data.torch_data import _epoch_slices, batch_schedule, keyed_batch_schedule
from mgral.detectors.detector import Detector
from mgral.training import engine
from mgral.training.engine import lr_at, num_iterations
from mgral.training.supervised import train_supervised
from mgral.utils import safe_torch_load
from tests.conftest import TINY_DET, TINY_TRAIN


def test_schedule_covers_each_epoch_once():
    idx = np.arange(10, 30)
    batches = [batch_schedule(idx, 6, 0, it) for it in range(4)]
    assert sorted(sum(batches, [])) == idx.tolist()
    assert batch_schedule(idx, 6, 0, 4) != batch_schedule(idx, 6, 1, 4)


def _epoch(schedule, idx, bs, seed, e):
    per_epoch = _epoch_slices(len(idx), bs)
    return [i for k in range(per_epoch) for i in schedule(idx, bs, seed, e * per_epoch + k)]


def test_keyed_schedule_keeps_the_order_of_shared_images():
    """Keyed by image: adding images to the set leaves the relative order of the others unchanged."""
    a = np.arange(0, 40)
    b = np.concatenate([a, [98, 99]])
    for e in (0, 3):
        full_a, full_b = _epoch(keyed_batch_schedule, a, 10, 7, e), _epoch(keyed_batch_schedule, b, 10, 7, e)
        assert sorted(full_a) == a.tolist() and sorted(full_b) == b.tolist()
        assert [i for i in full_b if i < 98] == full_a
    # the slot-keyed schedule does not have this property
    perm_a, perm_b = _epoch(batch_schedule, a, 10, 7, 0), _epoch(batch_schedule, b, 10, 7, 0)
    assert [i for i in perm_b if i < 98] != perm_a


def test_no_batch_of_a_single_image():
    """Batch norm cannot train on one image: a last batch of one is merged into the one before."""
    for n, bs in ((9, 8), (17, 8), (41, 10), (3, 2)):
        sizes = [len(batch_schedule(np.arange(n), bs, 0, it)) for it in range(2 * _epoch_slices(n, bs))]
        assert min(sizes) > 1 and sum(sizes) == 2 * n
    assert [len(batch_schedule(np.arange(20), 8, 0, it)) for it in range(3)] == [
        8,
        8,
        4,
    ]  # otherwise unchanged


def test_lr_schedule_and_epochs():
    cfg = replace(TINY_TRAIN, lr=1.0, lr_steps=(0.5, 0.75), warmup_iters=10)
    assert lr_at(cfg, 0, 100) == pytest.approx(0.1)
    assert lr_at(cfg, 10, 100) == 1.0 and lr_at(cfg, 50, 100) == pytest.approx(0.1)
    assert lr_at(cfg, 80, 100) == pytest.approx(0.01)
    assert num_iterations(replace(TINY_TRAIN, iterations=0, epochs=2.5, batch_size=8), 20) == 7


@pytest.mark.parametrize("name", ["tiny_ssd", "tiny_retinanet"])
def test_tiny_models_train_and_lower_their_loss(name, shapes):
    cfg = DetectorConfig(name=name, image_size=64, width=16)
    det = Detector(cfg, shapes.num_classes, seed=0)
    stats = train_supervised(det, shapes, np.arange(16), replace(TINY_TRAIN, iterations=30, lr_steps=()), seed=0,
                             progress=False)  # fmt: skip
    first = Detector(cfg, shapes.num_classes, seed=0)
    s0 = train_supervised(first, shapes, np.arange(16), replace(TINY_TRAIN, iterations=2, lr_steps=()), seed=0,
                          progress=False)  # fmt: skip
    assert stats["final_loss"] < s0["final_loss"]


@pytest.mark.parametrize("augment", ["flip", "ssd"])
def test_resumed_training_equals_uninterrupted(shapes, tmp_path, monkeypatch, augment):
    cfg = replace(TINY_TRAIN, iterations=8, checkpoint_every=3, augment=augment)
    ref = Detector(TINY_DET, shapes.num_classes, seed=1)
    train_supervised(ref, shapes, np.arange(20), cfg, seed=5, progress=False)

    det = Detector(TINY_DET, shapes.num_classes, seed=1)
    ckpt = tmp_path / "state.pt"
    calls = {"n": 0}
    real_save = engine.atomic_torch_save

    def save_then_die(obj, path):
        real_save(obj, path)
        calls["n"] += 1
        if calls["n"] == 2:  # killed right after the checkpoint of iteration 6
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "atomic_torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_supervised(det, shapes, np.arange(20), cfg, seed=5, checkpoint=ckpt, progress=False)
    monkeypatch.setattr(engine, "atomic_torch_save", real_save)
    assert safe_torch_load(ckpt)["iteration"] == 6
    resumed = Detector(TINY_DET, shapes.num_classes, seed=1)
    train_supervised(resumed, shapes, np.arange(20), cfg, seed=5, checkpoint=ckpt, progress=False)
    assert not ckpt.exists()
    for p, q in zip(ref.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
