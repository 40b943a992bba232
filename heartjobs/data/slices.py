"""One slice file to one square grayscale float image: probing, decoding, cropping, resizing, windowing.

JPEG 2000 slices are decoded at the smallest resolution level that still covers the target size, so a
5792 px HiP-CT slice headed for 256 px costs a 1/16-size decode. PNG and TIFF go through Pillow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heartjobs.data import jp2
from heartjobs.errors import HeartjobsError, one_line

PILLOW_SUFFIXES = (".png", ".tif", ".tiff")
SUPPORTED_SUFFIXES = jp2.JP2_SUFFIXES + PILLOW_SUFFIXES
# ITU-R 601 luma, as Pillow's convert("L") uses, but in float so 16-bit data keeps its range.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class SliceInfo:
    """What a slice's header says: height, width, bits per sample, and JPEG 2000 decomposition levels."""

    height: int
    width: int
    bits: int
    levels: int = 0

    @property
    def side(self) -> int:
        return min(self.height, self.width)


def natural_key(name: str) -> list:
    """Sort key that puts slice_2 before slice_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_slices(src: Path) -> list[Path]:
    """The supported slice files directly inside `src`, in natural order."""
    src = Path(src)
    if not src.exists():
        raise HeartjobsError(f"{src}: no such file or directory")
    if not src.is_dir():
        raise HeartjobsError(f"{src}: not a directory of slices")
    entries = [p for p in src.iterdir() if p.is_file() and not p.name.startswith(".")]
    if not entries:
        raise HeartjobsError(f"{src}: the folder is empty")
    files = [p for p in entries if p.suffix.lower() in SUPPORTED_SUFFIXES]
    if not files:
        kinds = ", ".join(SUPPORTED_SUFFIXES)
        raise HeartjobsError(f"{src}: no supported slice files ({kinds}) among {len(entries)} files")
    return sorted(files, key=lambda p: natural_key(p.name))


def _pillow_bits(mode: str) -> int:
    return 8 if mode in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr") else 16


def probe(path: Path) -> SliceInfo:
    """Read only the header; a file that can't even be opened is reported by name."""
    path = Path(path)
    try:
        if path.suffix.lower() in jp2.JP2_SUFFIXES:
            shape, bits, levels = jp2.header(path)
            return SliceInfo(shape[0], shape[1], bits, levels)
        from PIL import Image

        with Image.open(path) as img:
            return SliceInfo(img.height, img.width, _pillow_bits(img.mode))
    except HeartjobsError:
        raise
    except Exception as exc:
        raise HeartjobsError(f"{path}: unreadable slice header ({one_line(exc, 200)})") from None


def _to_gray(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        return array.astype(np.float32, copy=False)
    channels = array.shape[2]
    if channels >= 3:  # RGB or RGBA: luma of the colour channels
        return array[..., :3].astype(np.float32) @ _LUMA
    return array[..., 0].astype(np.float32)  # gray + alpha


def _decode_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # raises on truncated or corrupt data
        if img.mode in ("P", "PA", "CMYK", "YCbCr"):
            img = img.convert("RGB")
        elif img.mode == "1":
            img = img.convert("L")
        return np.asarray(img)


def center_crop(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return image[top : top + s, left : left + s]


def area_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Area-average a square float image down to size x size (Pillow's BOX filter, in float32)."""
    if image.shape[0] == size:
        return image.astype(np.float32, copy=False)
    from PIL import Image

    resized = Image.fromarray(image.astype(np.float32, copy=False), mode="F").resize((size, size), Image.Resampling.BOX)
    return np.asarray(resized, dtype=np.float32)


def decode(path: Path, size: int, *, reduced: bool = True, info: SliceInfo | None = None) -> np.ndarray:
    """Decode one slice to a size x size float32 grayscale image (center-cropped, area-resized).

    With `reduced`, JPEG 2000 is decoded at the smallest resolution level still >= size; without it, the
    full image is decoded and then resized (the slow route, kept for the benchmark and comparisons).
    """
    path = Path(path)
    info = info or probe(path)
    if info.side < size:
        raise HeartjobsError(f"{path}: slice is {info.height}x{info.width}, smaller than the target {size} px")
    try:
        if path.suffix.lower() in jp2.JP2_SUFFIXES:
            reduce = jp2.reduction_for(info.side, size, info.levels) if reduced else 0
            array = jp2.read(path, reduce)
        else:
            array = _decode_pillow(path)
    except HeartjobsError:
        raise
    except Exception as exc:
        raise HeartjobsError(f"{path}: corrupt or truncated slice ({one_line(exc, 200)})") from None
    return area_resize(center_crop(_to_gray(array)), size)


@dataclass(frozen=True)
class Window:
    """Linear map of grey values [low, high] to [0, 255]; the same for every slice of a stack."""

    low: float
    high: float

    @classmethod
    def from_percentiles(cls, images: list[np.ndarray], lo: float, hi: float) -> Window:
        pixels = np.concatenate([im.ravel() for im in images])
        low, high = (float(v) for v in np.percentile(pixels, [lo, hi]))
        return cls(low, high if high > low else low + 1.0)

    def apply(self, image: np.ndarray) -> np.ndarray:
        scaled = (image - self.low) * (255.0 / (self.high - self.low))
        return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def save_contact_sheet(paths: list[Path], out: Path, size: int = 128) -> None:
    """A 4x4 sheet of the given slices, windowed together at the 0.5/99.5 percentiles."""
    from heartjobs.grids import save_grid

    infos = [probe(p) for p in paths]
    size = min(size, *(i.side for i in infos))
    images = [decode(p, size, info=i) for p, i in zip(paths, infos, strict=True)]
    window = Window.from_percentiles(images, 0.5, 99.5)
    save_grid(np.stack([window.apply(im) for im in images]), out, nrow=4)
