"""ISD and SED losses on hand-built tensors, and a smoke run of each trainer."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mgral.config import DetectorConfig, SemiConfig
from mgral.detectors.detector import Detector
from mgral.training import engine
from mgral.training.engine import fit
from mgral.training.semi_supervised import isd_losses, ramp_weight, sed_cls_loss, sed_reg_loss, semi_objective
from mgral.utils import safe_torch_load
from tests.conftest import TINY_TRAIN

BG = torch.tensor([0.9, 0.05, 0.05])  # background wins
FG1 = torch.tensor([0.1, 0.8, 0.1])  # class 1 wins
FG2 = torch.tensor([0.2, 0.1, 0.7])


def _stack(*rows):
    return torch.stack(rows)[None]  # [1, A, 3]


def test_identical_inputs_give_zero_consistency():
    p = _stack(FG1, FG2, BG)
    loc = torch.randn(1, 3, 4)
    t1, t2 = isd_losses(p, p, p, loc, loc, loc, lam=0.5)
    assert t1.item() == pytest.approx(0.0, abs=1e-6) and t2.item() == pytest.approx(0.0, abs=1e-6)


def test_background_background_pairs_are_excluded():
    p_a = _stack(BG, BG)
    p_b = _stack(BG, BG)
    p_mix = _stack(FG1, FG2)  # wildly inconsistent, but both sources are background
    loc = torch.zeros(1, 2, 4)
    t1, t2 = isd_losses(p_a, p_b, p_mix, loc, loc, loc + 5, lam=0.5)
    assert t1.item() == 0.0 and t2.item() == 0.0


def test_type_one_compares_with_the_mixture_both_ways():
    p_a, p_b = _stack(FG1), _stack(FG2)
    lam = 0.3
    mixture = lam * FG1 + (1 - lam) * FG2
    t1, t2 = isd_losses(
        p_a, p_b, mixture[None, None], torch.zeros(1, 1, 4), torch.zeros(1, 1, 4), torch.ones(1, 1, 4), lam
    )
    assert t1.item() == pytest.approx(0.0, abs=1e-6)  # the mix predicts exactly the mixture
    assert t2.item() == 0.0  # type II needs exactly one foreground source: box offsets are not compared
    q = _stack(FG1)
    t1, _ = isd_losses(p_a, p_b, q, torch.zeros(1, 1, 4), torch.zeros(1, 1, 4), torch.zeros(1, 1, 4), lam)
    m, e = mixture + 1e-7, FG1 + 1e-7
    expected = 0.5 * ((e * (e / m).log()).sum() + (m * (m / e).log()).sum())
    assert t1.item() == pytest.approx(float(expected), rel=1e-5)


def test_type_two_pulls_the_mix_to_the_foreground_source():
    p_a, p_b, p_mix = _stack(FG1), _stack(BG), _stack(FG2)
    loc_a, loc_b, loc_mix = torch.ones(1, 1, 4), torch.zeros(1, 1, 4), torch.full((1, 1, 4), 3.0)
    p_mix = p_mix.clone().requires_grad_(True)
    t1, t2 = isd_losses(p_a, p_b, p_mix, loc_a, loc_b, loc_mix, lam=0.5)
    a, b = FG1 + 1e-7, FG2 + 1e-7
    assert t1.item() == 0.0
    assert t2.item() == pytest.approx(float((a * (a / b).log()).sum()) + 1.5, rel=1e-5)  # KL + Huber(3 - 1)
    t2.backward()
    assert p_mix.grad is not None and p_mix.grad.abs().sum() > 0


def test_ramp():
    assert ramp_weight(0, 100, 0.3, 0.2) == 0.0
    assert ramp_weight(15, 100, 0.3, 0.2) == pytest.approx(np.exp(-5 * 0.25))
    assert ramp_weight(50, 100, 0.3, 0.2) == 1.0
    assert ramp_weight(100, 100, 0.3, 0.2) == pytest.approx(np.exp(-12.5))


def test_sed_losses():
    t = torch.tensor([[0.9, 0.0], [0.0, 0.01]])
    logits_same = torch.logit(t.clamp(1e-6, 1 - 1e-6))
    norm = torch.tensor(1.0)
    assert float(sed_cls_loss(logits_same, t, 2.0, norm)) == pytest.approx(0.0, abs=1e-6)
    worse = sed_cls_loss(torch.zeros(2, 2), t, 2.0, norm)
    assert float(worse) > 0.1
    # a confident-background anchor the student also calls background weighs almost nothing
    easy = sed_cls_loss(torch.tensor([[-6.0]]), torch.tensor([[0.0]]), 2.0, norm)
    hard = sed_cls_loss(torch.tensor([[0.0]]), torch.tensor([[1.0]]), 2.0, norm)
    assert float(easy) < 1e-4 * float(hard)
    reg = sed_reg_loss(torch.ones(2, 4), torch.zeros(2, 4), torch.tensor([0.9, 0.1]), 0.5)
    assert float(reg) > 0  # only the first anchor counts
    assert float(sed_reg_loss(torch.ones(2, 4), torch.zeros(2, 4), torch.tensor([0.2, 0.1]), 0.5)) == 0.0


@pytest.mark.parametrize("name, method", [("tiny_ssd", "isd"), ("tiny_retinanet", "sed")])
def test_semi_supervised_trainers_learn_from_the_unlabeled_images(shapes, name, method):
    """Same labeled batches, same start: with the unsupervised loss the weights end elsewhere than without
    it, and the unsupervised terms were really computed (non-zero)."""
    cfg = replace(TINY_TRAIN, iterations=6)
    semi = replace(SemiConfig(), unlabeled_batch=4, rampup=0.0, rampdown=0.0)
    dcfg = DetectorConfig(name=name, image_size=64, width=16)
    with_u, without_u = Detector(dcfg, shapes.num_classes, seed=0), Detector(dcfg, shapes.num_classes, seed=0)
    objective = semi_objective(with_u, shapes, np.arange(8), np.arange(8, 48), semi, seed=0)
    assert objective.name == method
    seen = {}
    real = type(objective).unsupervised

    def spy(self, x, it, weight):
        out = real(self, x, it, weight)
        seen[it] = {k: float(v.detach()) for k, v in out.items()}
        return out

    type(objective).unsupervised = spy
    try:
        stats = fit(with_u, objective, cfg, progress=False)
    finally:
        type(objective).unsupervised = real
    fit(without_u, semi_objective(without_u, shapes, np.arange(8), np.arange(8, 48), replace(semi, weight=0.0), seed=0),
        cfg, progress=False)  # fmt: skip
    assert np.isfinite(stats["final_loss"])
    assert len(seen) == 5 and any(v > 0 for d in seen.values() for v in d.values())  # it 0 has ramp weight 0
    assert any(not torch.equal(a, b) for a, b in zip(with_u.model.state_dict().values(),
                                                     without_u.model.state_dict().values()))  # fmt: skip
    wrong = "sed" if method == "isd" else "isd"
    with pytest.raises(ValueError, match="needs a"):
        semi_objective(with_u, shapes, np.arange(8), np.arange(8, 48), replace(semi, method=wrong), seed=0)


def test_sed_teacher_resumes_exactly(shapes, tmp_path, monkeypatch):
    """SED's EMA teacher is saved with the checkpoint: a run killed after a checkpoint and resumed ends
    with the same student and the same teacher as an uninterrupted one."""
    dcfg = DetectorConfig(name="tiny_retinanet", image_size=64, width=16)
    cfg = replace(TINY_TRAIN, iterations=6, checkpoint_every=2)
    semi = replace(SemiConfig(), unlabeled_batch=4, rampup=0.0, ema_decay=0.5)

    def run(checkpoint=None):
        det = Detector(dcfg, shapes.num_classes, seed=0)
        obj = semi_objective(det, shapes, np.arange(8), np.arange(8, 48), semi, seed=3)
        fit(det, obj, cfg, checkpoint=checkpoint, progress=False)
        return det, obj

    ref, ref_obj = run()
    calls = {"n": 0}
    real_save = engine.atomic_torch_save

    def save_then_die(obj, path):
        real_save(obj, path)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "atomic_torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "state.pt")
    monkeypatch.setattr(engine, "atomic_torch_save", real_save)
    assert "teacher" in safe_torch_load(tmp_path / "state.pt")["objective"]
    got, got_obj = run(tmp_path / "state.pt")
    for a, b in zip(ref.model.state_dict().values(), got.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    teacher_a, teacher_b = ref_obj.teacher.state_dict(), got_obj.teacher.state_dict()
    assert int(teacher_b["n_averaged"]) == 6
    for k in teacher_a:
        torch.testing.assert_close(teacher_a[k], teacher_b[k], rtol=0, atol=0)
    # the teacher is an average, not a copy of the student
    assert any(
        not torch.equal(p, q) for p, q in zip(ref_obj.teacher.module.parameters(), ref.model.parameters())
    )
