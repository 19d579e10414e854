"""The grid of the curve reward's knobs that ``reward_fidelity.py grid`` and ``batch_worth.py grid`` score:
the settings, and the report of a scored grid (best on dev first, the default's rank, the JSON)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

THRESHOLDS, EXPONENTS, RULES = (0.1, 0.2, 0.3, 0.5), (0.25, 0.5, 1.0), ("pairs", "scenes")


def settings(radii: tuple[float, ...], thresholds: tuple[float, ...] = THRESHOLDS) -> list[tuple[Any, ...]]:
    """(threshold, exponent, radius, rule) for every point of the grid; the default radius always in."""
    from mgral.strategies.rl.agent import MgralOptions

    radii = tuple(sorted({*radii, MgralOptions().curve_radius}))
    return list(itertools.product(thresholds, EXPONENTS, radii, RULES))


def report(table: list[dict[str, Any]], path: Path, payload: dict[str, Any] | None = None) -> None:
    """Print the 12 best settings on dev and the default's rank; write ``payload`` with the table under
    ``grid`` (or the table alone) to ``path``."""
    from mgral.strategies.rl.agent import MgralOptions

    table.sort(key=lambda x: -x["dev"])
    for x in table[:12]:
        rho = "" if x.get("scene_correlation") is None else f" rho {x['scene_correlation']:.2f}"
        print(f"threshold {x['threshold']:.1f} exponent {x['exponent']:.2f} radius {x['radius']:.2f} "
              f"{x['duplicates']:6s}{rho}: dev {x['dev']:+.3f} test {x['test']:+.3f}")  # fmt: skip
    o = MgralOptions()
    key = (o.curve_threshold, o.curve_exponent, o.curve_radius, o.curve_duplicates, o.curve_scene_correlation)
    default = next(
        x
        for x in table
        if (x["threshold"], x["exponent"], x["radius"], x["duplicates"], x.get("scene_correlation")) == key
    )
    print(f"the default {key}: dev {default['dev']:+.3f} test {default['test']:+.3f}; "
          f"rank {table.index(default) + 1} of {len(table)} on dev")  # fmt: skip
    path.write_text(json.dumps(table if payload is None else {**payload, "grid": table}, indent=1) + "\n")
    print(f"wrote {path}")


def add_probe_arguments(parser: Any) -> None:
    """``--probe`` / ``--probe-share``: the duplicate probe of every setting of a grid (0: always discount;
    the share defaults to the agent's)."""
    from mgral.strategies.rl.agent import MgralOptions

    parser.add_argument(
        "--probe", type=float, default=0.0, help="curve_probe of every setting (0: always discount)"
    )
    parser.add_argument("--probe-share", type=float, default=MgralOptions().curve_probe_share)
