"""Offline, deterministic generator of dermoscopy-like skin-lesion images.

The images follow the dermatologists' ABCD rule so that a CNN has something
meaningful (but not trivial) to learn when the real ISIC data is unavailable:

* **A**symmetry  - low angular harmonics of the lesion outline plus elongation;
  malignant lesions are drawn with larger amplitudes.
* **B**order     - high angular harmonics make the outline ragged; malignant
  lesions have more irregular borders.
* **C**olour     - benign lesions use one or two shades of brown; malignant ones
  add several colours, typically blue-grey and near-black patches.
* **D**iameter   - malignant lesions are larger on average.

Every feature is sampled from class-conditional distributions that overlap, and
a fraction of "hard" images (``HARD_FRACTION``) draws all features from the
other class while keeping its label, so the task is learnable but not perfectly
separable.  Realism comes from varied skin tones with low-frequency variation,
occasional dark hairs, dermatoscope vignetting and gaussian sensor noise.

Each image is rendered from its own RNG, ``np.random.default_rng([seed, index,
label])``, so the pixels depend only on ``(seed, index, label, size)``.  Lesion
parameters are drawn before any per-pixel randomness, so the same lesion is
rendered at every resolution.  Label 0 = benign, 1 = malignant.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES = ("benign", "malignant")
GENERATOR_VERSION = 1
HARD_FRACTION = 0.06

_SKIN_LIGHT = np.array([0.95, 0.80, 0.72])
_SKIN_DARK = np.array([0.55, 0.37, 0.27])
_PALETTE = {  # RGB in [0, 1]
    "light_brown": (0.66, 0.46, 0.31),
    "mid_brown": (0.50, 0.32, 0.20),
    "dark_brown": (0.32, 0.19, 0.12),
    "near_black": (0.10, 0.07, 0.07),
    "blue_grey": (0.33, 0.39, 0.52),
    "red": (0.66, 0.38, 0.37),
    "white": (0.82, 0.74, 0.74),
}
# colour patch style: (centre bias, edge sharpness, lesion coverage range, opacity range)
_PATCH_STYLE = {
    "blue_grey": (1.0, 3.0, (0.15, 0.45), (0.6, 0.9)),
    "near_black": (0.8, 6.0, (0.08, 0.25), (0.8, 1.0)),
    "white": (0.8, 3.0, (0.05, 0.2), (0.3, 0.7)),
    "brown": (0.3, 3.0, (0.2, 0.5), (0.7, 1.0)),
}


def _check_args(label=None, size=None, n_per_class=None):
    if label is not None and label not in (0, 1):
        raise ValueError(f"label must be 0 (benign) or 1 (malignant), got {label!r}")
    if size is not None and (not isinstance(size, (int, np.integer)) or size < 16):
        raise ValueError(f"image size must be an integer >= 16, got {size!r}")
    if n_per_class is not None and (not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1):
        raise ValueError(f"n_per_class must be an integer >= 1, got {n_per_class!r}")


def _sample_features(rng: np.random.Generator, label: int) -> dict:
    """Draw the ABCD features from (overlapping) class-conditional distributions."""
    style = 1 - label if rng.random() < HARD_FRACTION else label
    if style == 1:  # malignant-looking
        radius = rng.normal(0.45, 0.09)
        asym, border = rng.gamma(4.0, 0.045), rng.gamma(3.0, 0.022)
        n_colours = rng.choice([2, 3, 4, 5], p=[0.2, 0.35, 0.3, 0.15])
        blue, black = rng.random() < 0.65, rng.random() < 0.6
    else:  # benign-looking
        radius = rng.normal(0.33, 0.08)
        asym, border = rng.gamma(2.0, 0.035), rng.gamma(2.0, 0.01)
        n_colours = rng.choice([1, 2, 3], p=[0.45, 0.45, 0.10])
        blue, black = rng.random() < 0.08, rng.random() < 0.08
    base_p = [0.25, 0.45, 0.3] if style == 1 else [0.45, 0.4, 0.15]
    colours = [rng.choice(["light_brown", "mid_brown", "dark_brown"], p=base_p)]
    others = [c for c in ("dark_brown", "mid_brown", "light_brown", "red", "white") if c != colours[0]]
    for _ in range(n_colours - 1 - blue - black):  # extra shades, painted below blue/black
        colours.append(others.pop(int(rng.choice(len(others), p=_other_probs(others)))))
    colours += ["blue_grey"] * blue + ["near_black"] * black
    return {
        "radius": float(np.clip(radius, 0.16, 0.62)),
        "asym": float(min(asym, 0.35)),
        "border": float(min(border, 0.15)),
        "colours": colours,
        "elongation": float(1.0 + rng.gamma(2.0, 0.05 + 0.04 * style)),
        "angle": float(rng.uniform(0, np.pi)),
        "centre": rng.normal(0, 0.05, 2),
        "edge": float(rng.uniform(0.03, 0.12)),
        "skin_t": float(rng.beta(2.0, 3.5)),
        "n_hairs": int(rng.choice([0, 0, 0, 1, 2, 3, 5])),
        "vignette": float(rng.uniform(0.95, 1.5)),
        "noise": float(rng.uniform(0.01, 0.03)),
    }


def _other_probs(names):
    w = np.array([{"red": 0.4, "white": 0.3}.get(n, 1.0) for n in names])
    return w / w.sum()


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-ish variance smooth random field (bicubic-upsampled grid)."""
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC))


def _lesion_shape(rng, f, xx, yy):
    """Return (alpha, depth): soft lesion mask and normalised depth (1 at centre)."""
    x, y = xx - f["centre"][0], yy - f["centre"][1]
    c, s = np.cos(f["angle"]), np.sin(f["angle"])
    x, y = (c * x + s * y) / f["elongation"], (-s * x + c * y) * f["elongation"]
    rho, theta = np.hypot(x, y), np.arctan2(y, x)
    # A: harmonics 1-3 (lopsided outline); B: harmonics 4-16 (notched border).
    # Each group is normalised so that f["asym"] / f["border"] is its radial std.
    ks = np.arange(1, 17)
    low = ks <= 3
    weights = np.where(low, 1.0, (ks / 4.0) ** -1.2) * rng.uniform(0.5, 1.5, ks.size)
    for group, std in ((low, f["asym"]), (~low, f["border"])):
        weights[group] *= std / np.sqrt(0.5 * np.sum(weights[group] ** 2))
    phase = rng.uniform(0, 2 * np.pi, ks.size)
    wobble = np.cos(theta[..., None] * ks + phase) @ weights
    r_theta = f["radius"] * np.maximum(1.0 + wobble, 0.35)
    alpha = np.clip((r_theta - rho) / (f["edge"] * f["radius"] * 2) + 0.5, 0, 1)
    return alpha, np.clip(1.0 - rho / r_theta, 0, 1)


def _lesion_colour(rng, f, depth, skin):
    """Paint the lesion: base brown, colour patches, network/dots, fade at the edge."""
    size = depth.shape[0]
    base = np.minimum(np.array(_PALETTE[f["colours"][0]]) * rng.uniform(0.9, 1.1), skin * 0.8)
    centre_dark = rng.uniform(0.0, 0.35) * depth ** 0.7  # darker centre (common in nevi)
    img = base * (1.0 - centre_dark)[..., None]
    inside = depth > 0.1
    if inside.sum() < 4:
        inside = np.ones_like(inside)
    for name in f["colours"][1:]:
        bias, sharp, coverage, opacity = _PATCH_STYLE.get(name, _PATCH_STYLE["brown"])
        score = _smooth_field(rng, size, int(rng.integers(3, 7))) + 2 * bias * (depth - 0.4)
        threshold = np.quantile(score[inside], 1.0 - rng.uniform(*coverage))
        weight = np.clip((score - threshold) * sharp + 0.5, 0, 1) * rng.uniform(*opacity)
        colour = np.array(_PALETTE[name]) * rng.uniform(0.9, 1.1)
        img += (colour - img) * weight[..., None]
    # pigment network: zero-crossings of a fine random field form a meandering mesh
    lines = np.exp(-(_smooth_field(rng, size, 26) / 0.25) ** 2)
    img *= (1.0 - rng.uniform(0.0, 0.3) * lines * depth ** 0.5)[..., None]
    # dots / globules and fine mottling
    dots = _smooth_field(rng, size, 18)
    img *= (1.0 - 0.35 * np.clip(dots - 1.3, 0, 1) - 0.04 * dots)[..., None]
    fade = np.clip(depth * rng.uniform(1.5, 4.0), 0, 1)[..., None]
    return img * fade + np.minimum(base * 1.15, skin) * (1 - fade)


def _draw_hairs(rng, f, size) -> np.ndarray:
    """Anti-aliased mask (H, W) in [0, 1] of a few dark curved hairs."""
    if f["n_hairs"] == 0:
        return np.zeros((size, size), dtype=np.float32)
    scale = 2  # supersample for smooth lines
    canvas = Image.new("L", (size * scale, size * scale), 0)
    draw = ImageDraw.Draw(canvas)
    t = np.linspace(0, 1, 24)[:, None]
    for _ in range(f["n_hairs"]):
        p0, p2 = rng.uniform(-1.1, 1.1, 2), rng.uniform(-1.1, 1.1, 2)
        p1 = (p0 + p2) / 2 + rng.normal(0, 0.3, 2)
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2  # quadratic Bezier
        pts = (pts + 1) / 2 * size * scale
        width = max(1, int(round(size * scale * rng.uniform(0.003, 0.008))))
        draw.line([tuple(p) for p in pts], fill=int(rng.integers(160, 256)), width=width, joint="curve")
    return np.asarray(canvas.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0


def _vignette(f, rr) -> np.ndarray:
    """Dermatoscope-like dark circular corners plus mild illumination fall-off."""
    dark = np.clip((rr - f["vignette"]) / 0.08, 0, 1)
    return (1.0 - 0.12 * rr ** 2) * (1.0 - 0.95 * dark)


def generate_image(label: int, size: int, seed: int, index: int) -> np.ndarray:
    """Render one (size, size, 3) uint8 image; deterministic in (seed, index, label, size)."""
    _check_args(label=label, size=size)
    size, label = int(size), int(label)
    rng = np.random.default_rng([int(seed), int(index), label])
    f = _sample_features(rng, label)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    xx, yy = np.meshgrid(coords, coords)
    rr = np.hypot(xx, yy)

    skin = _SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * f["skin_t"] + rng.normal(0, 0.02, 3)
    skin_img = skin * (1.0 + 0.04 * _smooth_field(rng, size, 3))[..., None]
    erythema = np.clip(_smooth_field(rng, size, 2), 0, None)[..., None] * rng.uniform(0, 0.05)
    skin_img = skin_img + erythema * np.array([0.5, -0.5, -0.4])

    alpha, depth = _lesion_shape(rng, f, xx, yy)
    lesion = _lesion_colour(rng, f, depth, skin)
    img = skin_img * (1 - alpha[..., None]) + lesion * alpha[..., None]

    hair = _draw_hairs(rng, f, size)[..., None]
    img = img * (1 - hair) + np.array([0.12, 0.09, 0.07]) * hair
    img = img * _vignette(f, rr)[..., None]
    img = img + rng.normal(0, f["noise"], img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def generate_arrays(n_per_class: int, image_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``2 * n_per_class`` images with interleaved labels (index i has label i % 2)."""
    _check_args(size=image_size, n_per_class=n_per_class)
    n = 2 * int(n_per_class)
    labels = np.arange(n, dtype=np.int64) % 2
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    for i in range(n):
        images[i] = generate_image(int(labels[i]), image_size, seed, i)
    return images, labels


def _expected_files(out_dir: pathlib.Path, n_per_class: int, seed: int):
    for i in range(2 * n_per_class):
        yield i, i % 2, out_dir / CLASS_NAMES[i % 2] / f"syn_{seed}_{i:05d}.png"


def write_dataset(out_dir, n_per_class: int, image_size: int, seed: int = 0) -> pathlib.Path:
    """Write PNGs to ``out_dir/<class>/syn_<seed>_<index>.png`` plus ``synthetic.json``.

    Idempotent: returns immediately when the json matches and all files exist.
    Raises ValueError when ``out_dir`` holds a dataset made with other parameters.
    """
    _check_args(size=image_size, n_per_class=n_per_class)
    out_dir = pathlib.Path(out_dir)
    params = {"generator": "kd_utils.synthetic", "version": GENERATOR_VERSION,
              "n_per_class": int(n_per_class), "image_size": int(image_size), "seed": int(seed),
              "class_names": list(CLASS_NAMES), "hard_fraction": HARD_FRACTION}
    meta_path = out_dir / "synthetic.json"
    files = list(_expected_files(out_dir, int(n_per_class), int(seed)))
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old != params:
            raise ValueError(
                f"{out_dir} already holds a synthetic dataset with different parameters "
                f"({old}); pick another folder or delete it.")
        if all(path.exists() for _, _, path in files):
            return out_dir
    # Without a json we cannot trust leftover files (they may come from other parameters).
    fresh = not meta_path.exists()
    for name in CLASS_NAMES:
        (out_dir / name).mkdir(parents=True, exist_ok=True)
    for index, label, path in files:
        if fresh or not path.exists():
            img = generate_image(label, int(image_size), int(seed), index)
            tmp = path.with_name(path.name + ".tmp")  # atomic: no half-written PNGs
            Image.fromarray(img).save(tmp, format="PNG")
            tmp.replace(path)
    if fresh:  # written last, so its presence means the dataset was completed
        meta_path.write_text(json.dumps(params, indent=2))
    return out_dir
