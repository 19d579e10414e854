from dataclasses import replace

import numpy as np
import pytest
import torch

from mgral.data.torch_data import batch_schedule
from mgral.detectors.detector import Detector
from mgral.training import supervised
from mgral.training.supervised import lr_at, num_iterations
from tests.conftest import TINY_DET, TINY_TRAIN


def test_schedule_covers_each_epoch_once():
    idx = np.arange(10, 30)
    batches = [batch_schedule(idx, 6, 0, it) for it in range(4)]
    assert sorted(sum(batches, [])) == idx.tolist()
    assert batch_schedule(idx, 6, 0, 4) != batch_schedule(idx, 6, 1, 4)


def test_lr_schedule_and_epochs():
    cfg = replace(TINY_TRAIN, lr=1.0, lr_steps=(0.5, 0.75), warmup_iters=10)
    assert lr_at(cfg, 0, 100) == pytest.approx(0.1)
    assert (
        lr_at(cfg, 10, 100) == 1.0
        and lr_at(cfg, 50, 100) == pytest.approx(0.1)
        and lr_at(cfg, 80, 100) == pytest.approx(0.01)
    )
    assert num_iterations(replace(TINY_TRAIN, iterations=0, epochs=2.5, batch_size=8), 20) == 7


@pytest.mark.parametrize("augment", ["flip", "ssd"])
def test_resumed_training_equals_uninterrupted(shapes, tmp_path, monkeypatch, augment):
    cfg = replace(TINY_TRAIN, iterations=8, checkpoint_every=3, augment=augment)
    ref = Detector(TINY_DET, shapes.num_classes, seed=1)
    ref.fit(shapes, np.arange(20), cfg, seed=5, progress=False)

    det = Detector(TINY_DET, shapes.num_classes, seed=1)
    ckpt = tmp_path / "state.pt"
    calls = {"n": 0}
    real_save = supervised.atomic_torch_save

    def save_then_die(obj, path):
        real_save(obj, path)
        calls["n"] += 1
        if calls["n"] == 2:  # killed right after the checkpoint of iteration 6
            raise KeyboardInterrupt

    monkeypatch.setattr(supervised, "atomic_torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        det.fit(shapes, np.arange(20), cfg, seed=5, checkpoint=ckpt, progress=False)
    monkeypatch.setattr(supervised, "atomic_torch_save", real_save)
    assert torch.load(ckpt, weights_only=False)["iteration"] == 6
    resumed = Detector(TINY_DET, shapes.num_classes, seed=1)
    resumed.fit(shapes, np.arange(20), cfg, seed=5, checkpoint=ckpt, progress=False)
    assert not ckpt.exists()
    for p, q in zip(ref.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
