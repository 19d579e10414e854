"""The pixel duplicate probe on real images (issue: MGRAL's reward).

``duplicate_probe.py --pixels`` set and checked the curve reward's probe (``curve_probe_on=pixels``: 8 x 8
grey thumbnails, a near-duplicate within 0.1 x their median distance, discount at a share of 0.05) on the
project's generators only. Nothing can be downloaded here, so this script takes the real images that PyPI
packages ship:

* ``digits (real)``: scikit-learn's 1,797 handwritten digits (8 x 8 scans of 43 writers), independent
  images: the probe should not discount;
* ``faces (real)``: scikit-image's ``lfw_subset``, 100 faces of Labeled Faces in the Wild and 100 other
  patches (25 x 25), independent images: no discount;
* ``photo pans, S px``: 16 real photographs (scikit-image's and scikit-learn's sample photos), each filmed
  as a camera pan of 20 frames: a 128 x 128 window moving S pixels a frame over the photo (resized to 256
  on its short side), frames in order as a video's would be listed: discount;
* ``photo pans, S px, shuffled``: the same frames in random order (only the fixed subset finds twins);
* ``faces (real) and a GIF clip``: the 200 images above and the 24 frames of scikit-image's
  ``no_time_for_that_tiny.gif``, a real animation (11% of the images have another frame): discount. The
  clip alone reads 0: where the whole pool is one scene, the median distance of two images is a distance
  between two of its frames, and a fraction of it finds no twin (a pool of one scene has nothing to
  discount between scenes anyway).

``--variants`` also measures, on these kinds and on the 17 synthetic kinds of ``duplicate_probe.py
--pixels``, the probe's 8 x 8 thumbnails at other radii (the subset only) and a shift-tolerant variant that
was tried and not adopted (16 x 16 thumbnails, their central 12 x 12 compared with every shift of up to 2
cells of the other image: the best cosine). Per radius it prints the largest share of a kind without
near-duplicates and the smallest of a kind with them, and records each kind's median nearest distance.

Each kind is written as PNG files and read as a :class:`~mgral.data.dataset.DetectionDataset` without
boxes, and probed as the agent does (:func:`~mgral.strategies.rl.curve.data_duplicate_share`). Needs
scikit-image (``.venv/bin/pip install scikit-image``; not a dependency of the package). Writes
``benchmarks/results/duplicate_probe_real.json``:

    .venv/bin/python benchmarks/duplicate_probe_real.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "hubble_deep_field",
          "ihc", "moon", "motorcycle_left", "retina", "rocket")  # fmt: skip
FRAMES, WINDOW = 20, 128


def _skimage_data() -> Path:
    try:
        import skimage
    except ImportError:
        print(
            "duplicate_probe_real.py: needs scikit-image (.venv/bin/pip install scikit-image)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    return Path(skimage.__file__).parent / "data"


def photos() -> list[Image.Image]:
    from sklearn.datasets import load_sample_images

    data = _skimage_data()
    out = []
    for name in PHOTOS:
        path = next(p for p in data.iterdir() if p.stem == name)
        out.append(Image.open(path).convert("RGB"))
    out += [Image.fromarray(a) for a in load_sample_images().images]  # china.jpg, flower.jpg
    return out


def pans(
    images: list[Image.Image], step: int, *, window: int = WINDOW, direction: tuple[int, int] = (1, 0),
    flicker: bool = False,
) -> list[Image.Image]:  # fmt: skip
    """Each photo as a video: FRAMES windows of ``window`` pixels, moving ``step`` pixels a frame along
    ``direction`` (x, y); ``flicker``: each frame's brightness scaled by a factor in [0.8, 1.2]."""
    rng = np.random.default_rng(0)
    frames = []
    sx, sy = step * direction[0], step * direction[1]
    for im in images:
        # 256 on the short side, larger where the pan needs it (no frame is clamped into a copy of another)
        scale = max(256 / min(im.size), (window + sx * (FRAMES - 1)) / im.width,
                    (window + sy * (FRAMES - 1)) / im.height)  # fmt: skip
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BILINEAR)
        x0 = (im.width - window - sx * (FRAMES - 1)) // 2
        y0 = (im.height - window - sy * (FRAMES - 1)) // 2
        for f in range(FRAMES):
            x, y = x0 + f * sx, y0 + f * sy
            frame = im.crop((x, y, x + window, y + window))
            if flicker:
                gain = rng.uniform(0.8, 1.2)
                frame = Image.fromarray(
                    np.clip(np.asarray(frame, np.float64) * gain, 0, 255).astype(np.uint8)
                )
            frames.append(frame)
    return frames


def zooms(images: list[Image.Image], rate: float = 0.02) -> list[Image.Image]:
    """Each photo as a slow zoom: FRAMES centred views, each ``rate`` more magnified than the one before
    (a 192-px square at the first frame), resized to WINDOW."""
    frames = []
    for im in images:
        scale = 256 / min(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BILINEAR)
        for f in range(FRAMES):
            half = 96 / (1 + rate) ** f
            cx, cy = im.width / 2, im.height / 2
            box = (round(cx - half), round(cy - half), round(cx + half), round(cy + half))
            frames.append(im.crop(box).resize((WINDOW, WINDOW), Image.Resampling.BILINEAR))
    return frames


def kinds() -> dict[str, tuple[str, list[Image.Image]]]:
    """name -> (part, images). ``set_on``: what the order comparison's rule was chosen on
    (``preregistration_probe_order_shift.md``); ``held_out``: generated after that file was committed."""
    from sklearn.datasets import load_digits

    data = _skimage_data()
    loaded = load_digits()
    digits = [Image.fromarray((a * 255 / 16).astype(np.uint8)) for a in loaded.images]
    faces = [Image.fromarray((a * 255).astype(np.uint8)) for a in np.load(data / "lfw_subset.npy")]
    gif = Image.open(data / "no_time_for_that_tiny.gif")
    clip = []
    for k in range(gif.n_frames):
        gif.seek(k)
        clip.append(gif.convert("RGB"))
    out = {"digits (real)": ("set_on", digits), "faces (real)": ("set_on", faces),
           "faces (real) and a GIF clip": ("set_on", faces + clip)}  # fmt: skip
    ph = photos()
    for step in (2, 4, 6, 8, 12, 16, 20, 28):
        frames = pans(ph, step)
        out[f"photo pans, {step} px"] = ("set_on", frames)
        if step in (2, 4, 8, 16):
            order = np.random.default_rng(0).permutation(len(frames))
            out[f"photo pans, {step} px, shuffled"] = ("set_on", [frames[k] for k in order])
    for step in (5, 11, 17):
        out[f"vertical pans, 96-px window, {step} px"] = (
            "held_out",
            pans(ph, step, window=96, direction=(0, 1)),
        )
    out["diagonal pans, 7 px"] = ("held_out", pans(ph, 7, direction=(1, 1)))
    out["slow zooms, 2% a frame"] = ("held_out", zooms(ph))
    out["pans of 10 px, brightness flicker"] = ("held_out", pans(ph, 10, flicker=True))
    by_label = np.argsort(loaded.target, kind="stable")
    out["digits (real), sorted by label"] = ("held_out", [digits[k] for k in by_label])
    return out


def as_dataset(images: list[Image.Image], folder: Path) -> Any:
    from mgral.data.dataset import DetectionDataset, ImageRecord

    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for k, im in enumerate(images):
        name = f"{k:05d}.png"
        im.save(folder / name)
        records.append(ImageRecord(image_id=k, file_name=name, width=im.width, height=im.height))
    return DetectionDataset(records, ["object"], folder, source=str(folder))


def plain_nearest(ds: Any) -> np.ndarray:
    """Of the probe's rows of ``ds``, each image's nearest other among them on the probe's 8 x 8 thumbnails,
    in units of the median distance of two of them (what ``pixel_duplicate_share`` compares with its
    radius, without the neighbours in the pool's order)."""
    from mgral.data.dataset import thumbnails
    from mgral.strategies.rl.curve import _median_distance, _nearest_other, probe_rows

    th = thumbnails(ds, probe_rows(len(ds)))
    return np.sqrt(_nearest_other(th)) / _median_distance(th)


def shifted_nearest(ds: Any, side: int = 16, margin: int = 2) -> np.ndarray:
    """Of the probe's rows of ``ds``, each image's nearest other under shifts of up to ``margin`` cells (the
    central crop against every shifted crop of the other, normalised), in units of the median unshifted
    distance of two images."""
    from mgral.data.dataset import grey_thumbnails, normalised
    from mgral.strategies.rl.curve import probe_rows

    (t,) = grey_thumbnails(ds, probe_rows(len(ds)), (side,))

    def crop(dy: int, dx: int) -> np.ndarray:
        return normalised(
            t[:, margin + dy : side - margin + dy, margin + dx : side - margin + dx].reshape(len(t), -1)
        )

    centre = crop(0, 0)
    plain = centre @ centre.T
    best = plain.copy()
    for dy in range(-margin, margin + 1):
        for dx in range(-margin, margin + 1):
            if dy or dx:
                best = np.maximum(best, centre @ crop(dy, dx).T)
    np.fill_diagonal(best, -np.inf)
    median = np.median(np.sqrt(np.maximum(2 - 2 * plain[np.triu_indices(len(t), 1)], 0)))
    return np.sqrt(np.maximum(2 - 2 * best.max(1), 0)) / median


def synthetic_kinds(root: Path) -> list[tuple[str, bool, Any]]:
    """The 17 kinds of ``duplicate_probe.py --pixels``: (name, has near-duplicates, dataset)."""
    from duplicate_probe import PIXEL_HELD_OUT, PIXEL_SET_ON, load_kind, parse_kind

    out = []
    for name, overrides in map(parse_kind, (*PIXEL_SET_ON, *PIXEL_HELD_OUT)):
        ds, frames, _ = load_kind(name, overrides, root)
        out.append((name, frames > 1, ds))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--root", type=Path, default=Path("benchmarks/results/_probe_real"), help="written images"
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/duplicate_probe_real.json"))
    ap.add_argument("--variants", action="store_true",
                    help="also the 8 x 8 probe at other radii and a shift-tolerant variant (not adopted)")  # fmt: skip
    ap.add_argument("--synthetic-root", type=Path, default=Path("benchmarks/results/_probe"),
                    help="with --variants: the synthetic kinds' generated data")  # fmt: skip
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from duplicate_probe import folder_name

    from mgral.strategies.rl.agent import MgralOptions
    from mgral.strategies.rl.curve import data_duplicate_share

    opts = MgralOptions()
    rows, probed = [], []
    for name, (part, images) in kinds().items():
        ds = as_dataset(images, args.root / folder_name(name))
        if not name.endswith("shuffled"):  # the same frames: the subset reads them alike
            probed.append((name, "(real)" not in name or "GIF" in name, ds))
        t0 = time.perf_counter()
        share = data_duplicate_share(
            ds, np.arange(len(ds)), opts.curve_pixel_probe, order_probe=opts.curve_pixel_order_probe
        )
        seconds = time.perf_counter() - t0
        alone = data_duplicate_share(ds, np.arange(len(ds)), opts.curve_pixel_probe, order=False)
        duplicates = "(real)" not in name or "GIF" in name  # the clip's 24 frames are 11% of the 224 images
        row = {"kind": name, "part": part, "images": len(ds), "pixel_share": share, "duplicates": duplicates,
               "discounted": bool(share >= opts.curve_pixel_probe_share), "subset_only": alone, "seconds": seconds}  # fmt: skip
        rows.append(row)
        right = row["discounted"] == duplicates
        print(f"{part:8s} {name:40s} {len(ds):5d} images: pixel share {share:.3f} (subset only {alone:.3f}) -> "
              f"{'discount' if row['discounted'] else 'no discount'} ({'right' if right else 'WRONG'})", flush=True)  # fmt: skip
    result = {"probe": {"radius": opts.curve_pixel_probe, "share": opts.curve_pixel_probe_share,
                        "order": opts.curve_pixel_order_probe},
              "frames_per_pan": FRAMES, "window": WINDOW, "kinds": rows,
              **{f"right_{part}": f"{sum(r['discounted'] == r['duplicates'] for r in rows if r['part'] == part)}/"
                                  f"{sum(r['part'] == part for r in rows)}" for part in ("set_on", "held_out")}}  # fmt: skip
    if args.variants:
        both = [*synthetic_kinds(args.synthetic_root), *probed]
        for variant, nearest_of in (("plain", plain_nearest), ("shifted", shifted_nearest)):
            nearest = [(name, dup, nearest_of(ds)) for name, dup, ds in both]
            table: dict[str, Any] = {"median_nearest": {n: float(np.median(nn)) for n, _, nn in nearest}}
            for r in (0.1, 0.15, 0.2, 0.25, 0.3):
                shares = {name: float((nn <= r).mean()) for name, _, nn in nearest}
                without = max(shares[n] for n, dup, _ in nearest if not dup)
                with_ = min(shares[n] for n, dup, _ in nearest if dup)
                table[str(r)] = {"shares": shares, "max_without": without, "min_with": with_}
                print(f"{variant:8s} radius {r}: largest share without near-duplicates {without:.3f}, smallest "
                      f"with {with_:.3f} ({'separable' if with_ > without else 'not separable'})")  # fmt: skip
            result[variant] = table
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"right: {result['right_set_on']} set on, {result['right_held_out']} held out; wrote {args.out}")


if __name__ == "__main__":
    main()
