"""Shared fixtures: tiny generated datasets and tiny configs (everything on the CPU, in seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mgral.config import DetectorConfig, TrainConfig, load_config
from mgral.data.synthetic import make_dataset, spec_for

torch.set_num_threads(2)

TINY_DET = DetectorConfig(name="tiny_ssd", image_size=64, width=16)
TINY_TRAIN = TrainConfig(
    iterations=12, batch_size=8, optimizer="adamw", lr=3e-3, weight_decay=1e-4, eval_batch_size=32
)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    make_dataset("shapes", 48, 0, out, spec_for("easy", image_size=64))
    return out


@pytest.fixture(scope="session")
def shapes(shapes_dir: Path):
    from mgral.data.coco import read_coco

    return read_coco(shapes_dir / "annotations.json")


@pytest.fixture()
def smoke_cfg():
    return load_config(preset="smoke", overrides=["loop.cycles=2", "train.iterations=10", "device=cpu"])
