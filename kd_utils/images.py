"""One image file: what a viewer shows, whether it is usable, its perceptual hash.

Used when a manifest is built (:mod:`kd_utils.data`) and when ``predict``,
``evaluate`` and ``shortcuts`` read a file (:mod:`kd_utils.tools.deploy`): both
apply the EXIF orientation, refuse what is too small or too elongated, and
convert any Pillow mode to 8-bit RGB the same way.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
#: Shortest usable side in pixels: smaller images are excluded from training
#: (``build_manifest(min_side=...)``) and refused by ``predict``.
MIN_SIDE = 32
#: Longest usable side / shortest side: a more elongated image would be
#: squashed out of shape by the square resize; excluded and refused likewise.
MAX_ASPECT = 4.0
_EXIF_ORIENTATION = 0x0112


def perceptual_hash(image: Image.Image) -> str:
    """64-bit DCT hash (pHash) as 16 hex digits: robust to resizing and re-encoding."""
    from scipy.fft import dctn

    gray = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = dctn(gray, type=2, norm="ortho")[:8, :8]
    bits = (low > np.median(low)).ravel()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def hamming_matrix(hashes_a, hashes_b) -> np.ndarray:
    """Bit distance between every pair of hex hashes (rows: a, columns: b)."""
    a = np.array([int(h, 16) for h in hashes_a], dtype=np.uint64)
    b = np.array([int(h, 16) for h in hashes_b], dtype=np.uint64)
    return np.bitwise_count(a[:, None] ^ b[None, :]).astype(np.int64)


def _to_rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode, rescaling 16/32-bit data instead of clipping it."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if image.mode == "F":
            top = max(float(arr.max()), 1.0) if arr.max() > 1.0 else 1.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if image.mode in ("P", "PA", "LA", "RGBA", "La"):
        return image.convert("RGBA").convert("RGB")
    return image.convert("RGB")


def size_problem(width: int, height: int, min_side: int = MIN_SIDE, max_aspect: float = MAX_ASPECT) -> str | None:
    """Why an image of ``width`` x ``height`` (as shown, EXIF applied) is unusable, or None."""
    if min(width, height) < min_side:
        return f"too small: {width}x{height} < {min_side} px"
    if max(width, height) > max_aspect * min(width, height):
        return f"too elongated: {width}x{height}, more than {max_aspect:g}:1"
    return None


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1-8; 1 = stored upright), 1 when absent or unreadable."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001  (malformed EXIF: Pillow raises various errors; the pixels are still fine)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def shown_size(image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` as a viewer shows the image (EXIF orientation applied)."""
    width, height = image.size
    return (height, width) if exif_orientation(image) in (5, 6, 7, 8) else (width, height)


def upright_rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB with the EXIF orientation applied (see :func:`_to_rgb8`)."""
    if exif_orientation(image) != 1:
        image = ImageOps.exif_transpose(image)
    return _to_rgb8(image)
