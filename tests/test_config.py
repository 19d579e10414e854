"""The config: presets, overrides, YAML round trip, one-line errors."""

from __future__ import annotations

import pytest

from mgral.config import PRESETS, config_from_yaml_text, load_config, save_config, to_dict
from mgral.errors import InputError


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_yaml_round_trip(preset, tmp_path):
    """What a run directory stores (config.yaml) loads back to the same config, for every preset."""
    overrides = ["data.root=/data/x"] if preset in ("voc-ssd300", "coco-retinanet") else []
    cfg = load_config(preset=preset, overrides=[*overrides, "strategy_params.entropy.aggregate=sum"])
    save_config(cfg, tmp_path / "config.yaml")
    again = config_from_yaml_text((tmp_path / "config.yaml").read_text(), "config.yaml")
    assert again == cfg and to_dict(again) == to_dict(cfg)
    assert load_config(file=tmp_path / "config.yaml") == cfg


def test_overrides_and_their_errors():
    cfg = load_config(
        preset="smoke", overrides=["loop.seeds=[1, 2]", "train.lr=0.01", "loop.strategies=[random]"]
    )
    assert cfg.loop.seeds == (1, 2) and cfg.train.lr == 0.01
    with pytest.raises(InputError, match="unknown key 'train.lrr'"):
        load_config(preset="smoke", overrides=["train.lrr=1"])
    with pytest.raises(InputError, match="train.batch_size: expected a whole number, got 'x'"):
        load_config(preset="smoke", overrides=["train.batch_size=x"])
    with pytest.raises(InputError, match="loop.cycles: need at least 1"):
        load_config(preset="smoke", overrides=["loop.cycles=0"])


def test_overrides_do_not_edit_the_presets():
    """``--set data.synthetic.options.x=...`` once changed the preset itself, for the rest of the process."""
    cfg = load_config(preset="smoke", overrides=["data.synthetic.options.image_size=48"])
    assert cfg.data.synthetic.options == {"image_size": 48}
    assert load_config(preset="smoke").data.synthetic.options == {"image_size": 64}
    assert PRESETS["smoke"]["data"]["synthetic"]["options"] == {"image_size": 64}


def test_numbers_are_finite_and_mapping_keys_are_names():
    with pytest.raises(InputError, match="train.lr: expected a finite number, got nan"):
        load_config(preset="smoke", overrides=["train.lr=.nan"])
    with pytest.raises(InputError, match="data.synthetic.options: keys should be names, got 1"):
        load_config(preset="smoke", overrides=["data.synthetic.options={1: 2}"])
    with pytest.raises(InputError, match="strategy_params.entropy: expected a mapping, got"):
        load_config(preset="smoke", overrides=["strategy_params.entropy=[1, 2]"])


def test_messages_stay_on_one_line(tmp_path):
    (tmp_path / "c.yaml").write_text('"a\\nb": 1\nloop:\n  cycles: [\n')
    with pytest.raises(InputError) as exc:
        load_config(file=tmp_path / "c.yaml")
    assert str(exc.value).endswith(
        "c.yaml: malformed YAML at line 4 column 1: expected the node content, but found '<stream end>'"
    )
    with pytest.raises(InputError) as exc:
        load_config(preset="smoke", overrides=['loop={"a\\nb": 1}'])
    assert "\n" not in str(exc.value) and "a\\nb" in str(exc.value)
