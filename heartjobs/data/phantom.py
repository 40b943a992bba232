"""The embedded default dataset: a synthetic heart-CT phantom written as HiP-CT-like JPEG 2000 slices.

The phantom imitates the HiP-CT scan of a fixed human heart held in crushed agar inside a jar: a stack
of slices from the apex (z = 0) to the base (z = 1) whose anatomy changes smoothly along the stack.
Every shape is a smooth function of z and of a few seed-drawn parameters; textures are value noise
interpolated between lattice planes, so each slice is computed on its own (memory does not grow with
the stack) and the same seed gives the same pixels. Anatomy is laid out in normalised coordinates
([-1, 1] across the field of view), so a phantom at 64 px looks like one at 512 px seen from afar.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from heartjobs import __version__, atomic
from heartjobs.data import jp2
from heartjobs.data.pool import ordered_map, worker_count
from heartjobs.errors import HeartjobsError
from heartjobs.hashing import sha256_file
from heartjobs.progress import track
from heartjobs.store.prepared import MANIFEST_FILE

if TYPE_CHECKING:
    from heartjobs.data.phantom_heart import HeartPhantom

MANIFEST_KIND = "heartjobs-phantom"

# Tissue labels of the ground-truth map render_slice() returns (used by tests and for inspection).
AIR, JAR, AGAR, FAT, MYOCARDIUM, LV, RV, ATRIUM, VESSEL_WALL, VESSEL_LUMEN, CORONARY = range(11)

# Mean 16-bit grey values per tissue (ethanol-filled cavities dark, myocardium bright, fat in between).
VALUE = {
    AIR: 2500.0,
    JAR: 47000.0,
    AGAR: 21000.0,
    FAT: 13500.0,
    MYOCARDIUM: 34000.0,
    LV: 7000.0,
    RV: 7500.0,
    ATRIUM: 8000.0,
    VESSEL_WALL: 39000.0,
    VESSEL_LUMEN: 6500.0,
    CORONARY: 41000.0,
}

# Value-noise lattice: texture planes every 1/24 of the stack, on fixed grids (scale-free).
_Z_PLANES = 24
_AGAR_GRID = 48
_MYO_GRID = 40


def _smoothstep(lo: float, hi: float, x: float) -> float:
    t = min(1.0, max(0.0, (x - lo) / (hi - lo)))
    return t * t * (3.0 - 2.0 * t)


# The phantoms by name: "disc" (the first, the default, which the tests and recorded results rely on) and
# "heart" (slices of a procedural 3-D heart volume, closer to a HiP-CT heart slice; phantom_heart.py).
KINDS = ("disc", "heart")
DEFAULT_KIND = "disc"


@dataclass(frozen=True)
class PhantomParams:
    slices: int = 200
    size: int = 512
    seed: int = 0
    kind: str = DEFAULT_KIND

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise HeartjobsError(f"phantom: --kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.slices < 1:
            raise HeartjobsError(f"phantom: --slices must be >= 1, got {self.slices}")
        if self.size < 16:
            raise HeartjobsError(f"phantom: --size must be >= 16, got {self.size}")
        if self.seed < 0:
            raise HeartjobsError(f"phantom: --seed must be >= 0, got {self.seed}")

    def z(self, index: int) -> float:
        return index / max(1, self.slices - 1)

    def recorded(self) -> dict:
        """The parameters as the manifest records them: the kind only when not the default, so a default
        phantom's manifest is the same as before there were kinds."""
        fields = asdict(self)
        if self.kind == DEFAULT_KIND:
            del fields["kind"]
        return fields


def phantom_of(folder: Path) -> dict | None:
    """What a folder of slices is when `data phantom` made it: {"kind", "seed", "slices", "size"} from its
    manifest, for the sets prepared from it to record (a report then says its numbers are a phantom's);
    None for any other folder. The manifest may come from elsewhere: only values of the expected types."""
    manifest = atomic.read_json(Path(folder) / MANIFEST_FILE)
    if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
        return None
    parameters = manifest.get("parameters")
    if not isinstance(parameters, dict):
        return None
    kind = parameters.get("kind", DEFAULT_KIND)
    record = {"kind": kind if kind in KINDS else "unknown"}
    for key in ("seed", "slices", "size"):
        value = parameters.get(key)
        record[key] = value if isinstance(value, int) and not isinstance(value, bool) else None
    return record


def make_phantom(params: PhantomParams) -> Phantom | HeartPhantom:
    """The renderer of `params.kind` (both have render_slice(index) -> (uint16 image, uint8 labels))."""
    params.validate()
    if params.kind == "heart":
        from heartjobs.data.phantom_heart import HeartPhantom

        return HeartPhantom(params)
    return Phantom(params)


@dataclass(frozen=True)
class _Anatomy:
    """The seed-drawn shape parameters of one phantom (shared by all its slices)."""

    jar_radius: float
    jar_center: tuple[float, float]
    heart_center: tuple[float, float]
    heart_scale: float
    lobes: tuple[float, float, float, float]  # amplitude and phase of the 2- and 3-fold shape terms
    twist: float  # rotation of the heart from apex to base (radians)
    lv_angle: float
    coronary_angles: tuple[float, ...]
    ring_radii: tuple[float, ...]
    ring_amps: tuple[float, ...]

    @classmethod
    def draw(cls, seed: int) -> _Anatomy:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        n_rings = 12
        return cls(
            jar_radius=float(rng.uniform(0.90, 0.94)),
            jar_center=tuple(rng.uniform(-0.015, 0.015, 2).tolist()),
            heart_center=tuple(rng.uniform(-0.06, 0.06, 2).tolist()),
            heart_scale=float(rng.uniform(0.88, 1.05)),
            lobes=(
                float(rng.uniform(0.04, 0.12)),
                float(rng.uniform(0, 2 * math.pi)),
                float(rng.uniform(0.01, 0.05)),
                float(rng.uniform(0, 2 * math.pi)),
            ),
            twist=float(rng.uniform(-0.6, 0.6)),
            lv_angle=float(rng.uniform(0, 2 * math.pi)),
            coronary_angles=tuple(rng.uniform(0, 2 * math.pi, 4).tolist()),
            ring_radii=tuple(rng.uniform(0.05, 1.3, n_rings).tolist()),
            ring_amps=tuple((rng.choice([-1, 1], n_rings) * rng.uniform(300, 900, n_rings)).tolist()),
        )


class _Canvas:
    """A slice being painted: grey values and labels, with anti-aliased shape edges."""

    def __init__(self, size: int, background: np.ndarray, label: int):
        self.size = size
        self.aa = 2.0 / size  # one pixel, in normalised units
        self.value = background.astype(np.float32)
        self.label = np.full((size, size), label, dtype=np.uint8)

    def paint(self, inside: np.ndarray, value: float | np.ndarray, label: int) -> None:
        """Paint `value` where the signed distance-like `inside` > 0 (soft over one pixel)."""
        alpha = np.clip(inside / self.aa + 0.5, 0.0, 1.0, dtype=np.float32)
        self.value += alpha * (value - self.value)
        self.label[alpha > 0.5] = label


def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of each pixel's centre in [-1, 1], float32 (both phantoms draw on it)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    return np.meshgrid(c, c, indexing="xy")


class Phantom:
    """Renders slices of the "disc" phantom; picklable, so worker processes can render slices in parallel."""

    def __init__(self, params: PhantomParams):
        params.validate()
        self.params = params
        self.anatomy = _Anatomy.draw(params.seed)

    @cached_property
    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        return pixel_grid(self.params.size)

    def _noise_plane(self, channel: int, plane: int, grid: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([self.params.seed, 2, channel, plane]))
        return rng.standard_normal((grid, grid)).astype(np.float32)

    def _value_noise(self, channel: int, z: float, grid: int) -> np.ndarray:
        """Smooth 3-D noise at depth z: interpolated between two lattice planes, upsampled to the slice."""
        pos = z * _Z_PLANES
        k = min(int(pos), _Z_PLANES - 1)
        t = _smoothstep(0.0, 1.0, pos - k)
        low = (1 - t) * self._noise_plane(channel, k, grid) + t * self._noise_plane(channel, k + 1, grid)
        low /= math.sqrt((1 - t) ** 2 + t**2)  # keep unit variance between planes
        return ndimage.zoom(low, self.params.size / grid, order=1, mode="nearest", grid_mode=True)

    def _sample_polar_noise(self, channel: int, z: float, r: np.ndarray, phi: np.ndarray) -> np.ndarray:
        """Noise streaked along the circumference: myocardial fibres run around the ventricles."""
        pos = z * _Z_PLANES
        k = min(int(pos), _Z_PLANES - 1)
        t = _smoothstep(0.0, 1.0, pos - k)
        low = (1 - t) * self._noise_plane(channel, k, _MYO_GRID) + t * self._noise_plane(channel, k + 1, _MYO_GRID)
        low /= math.sqrt((1 - t) ** 2 + t**2)
        rows = np.clip(r, 0, 1) * (_MYO_GRID - 1) * 2.5
        cols = (phi / (2 * math.pi) + 0.5) * (_MYO_GRID - 1) * 0.6
        return ndimage.map_coordinates(low, [rows % (_MYO_GRID - 1), cols], order=1, mode="grid-wrap")

    def render_slice(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint16 image, uint8 tissue labels) of slice `index`; the same index always gives the same."""
        p, a = self.params, self.anatomy
        z = p.z(index)
        x, y = self._grid
        rng = np.random.default_rng(np.random.SeedSequence([p.seed, 3, index]))

        # Air around the jar, the jar wall, crushed agar inside (granules with darker cracks).
        jr = np.hypot(x - a.jar_center[0], y - a.jar_center[1])
        canvas = _Canvas(p.size, np.full_like(x, VALUE[AIR]), AIR)
        canvas.paint(a.jar_radius + 0.03 - jr, VALUE[JAR], JAR)
        g = self._value_noise(0, z, _AGAR_GRID)
        agar = VALUE[AGAR] + 2600.0 * np.tanh(2.5 * g) - 5000.0 * np.exp(-((g / 0.12) ** 2))
        canvas.paint(a.jar_radius - jr, agar, AGAR)

        # Heart outline: grows from a small apex to the full base, lobed, slowly rotating with z.
        base_fade = 1.0 - 0.55 * _smoothstep(0.9, 1.0, z)
        r_heart = a.heart_scale * 0.62 * (0.22 + 0.78 * math.sqrt(_smoothstep(0.0, 0.55, z))) * base_fade
        hx, hy = a.heart_center
        dx, dy = x - hx, y - hy
        r = np.hypot(dx, dy)
        phi = np.arctan2(dy, dx)
        rot = a.twist * z
        a2, p2, a3, p3 = a.lobes
        boundary = r_heart * (1 + a2 * np.cos(2 * (phi - p2 - rot)) + a3 * np.cos(3 * (phi - p3 - rot)))
        # Epicardial fat, thicker in the grooves, then myocardium with circumferential fibres.
        fat_depth = boundary * (0.08 + 0.07 * np.cos(2 * (phi - a.lv_angle - rot)) ** 2)
        canvas.paint(boundary - r, VALUE[FAT] + 1200.0 * self._value_noise(1, z, _AGAR_GRID), FAT)
        fibres = self._sample_polar_noise(2, z, r / max(r_heart, 1e-3), phi - rot)
        canvas.paint(boundary - fat_depth - r, VALUE[MYOCARDIUM] + 2200.0 * fibres, MYOCARDIUM)

        # Coronary vessels run in the fat (bright wall, dark lumen), drifting around the heart.
        for i, angle in enumerate(a.coronary_angles):
            theta = angle + rot + 0.4 * math.sin(3 * z + i)
            shape = 1 + a2 * math.cos(2 * (theta - p2 - rot)) + a3 * math.cos(3 * (theta - p3 - rot))
            groove = 0.08 + 0.07 * math.cos(2 * (theta - a.lv_angle - rot)) ** 2
            rad = r_heart * shape * (1 - groove / 2)  # mid-depth of the fat layer
            cx, cy = hx + rad * math.cos(theta), hy + rad * math.sin(theta)
            d = np.hypot(x - cx, y - cy)
            size = 0.012 + 0.006 * (i % 2)
            canvas.paint(size - d, VALUE[CORONARY], CORONARY)
            canvas.paint(0.55 * size - d, VALUE[VESSEL_LUMEN], VESSEL_LUMEN)

        # Ventricles shrink towards the base where the atria take over.
        atria = _smoothstep(0.62, 0.86, z)
        ventricles = 1.0 - 0.85 * atria
        lv_dir = (math.cos(a.lv_angle + rot), math.sin(a.lv_angle + rot))
        lvx, lvy = hx + 0.22 * r_heart * lv_dir[0], hy + 0.22 * r_heart * lv_dir[1]
        d_lv = np.hypot(x - lvx, y - lvy)
        lv_cavity = r_heart * 0.30 * _smoothstep(0.03, 0.35, z) * ventricles
        lv_outer = lv_cavity + r_heart * 0.33  # the thick left-ventricular wall
        # Right ventricle: a thin crescent wrapped around the septum on the other side.
        rvx, rvy = hx - 0.30 * r_heart * lv_dir[0], hy - 0.30 * r_heart * lv_dir[1]
        d_rv = np.hypot(x - rvx, y - rvy)
        rv_radius = r_heart * 0.62 * _smoothstep(0.05, 0.4, z) * ventricles
        wall = 0.035 * a.heart_scale
        rv_inside = np.minimum(rv_radius - d_rv, d_lv - lv_outer)
        rv_inside = np.minimum(rv_inside, boundary - fat_depth - wall - r)
        canvas.paint(rv_inside, VALUE[RV], RV)
        canvas.paint(lv_cavity - d_lv, VALUE[LV], LV)

        if atria > 0:
            # Left atrium behind, right atrium to the side: large thin-walled cavities near the base.
            for k, (offset, share) in enumerate(((math.pi * 0.85, 0.42), (-math.pi * 0.55, 0.36))):
                ang = a.lv_angle + rot + offset
                ax_, ay_ = hx + 0.38 * r_heart * math.cos(ang), hy + 0.38 * r_heart * math.sin(ang)
                d_at = np.hypot(x - ax_, y - ay_)
                ring = 1 + 0.08 * np.cos(3 * phi + k)
                inside = np.minimum(share * r_heart * atria * ring - d_at, boundary - fat_depth - wall - r)
                canvas.paint(inside, VALUE[ATRIUM], ATRIUM)

        vessels = _smoothstep(0.8, 0.95, z)
        if vessels > 0:
            # Aorta and pulmonary trunk leave the base: thick bright walls in a cuff of fat.
            for offset, radius in ((0.0, 0.12), (1.3, 0.10)):
                ang = a.lv_angle + rot + math.pi / 2 + offset
                vx, vy = hx + 0.25 * math.cos(ang), hy + 0.25 * math.sin(ang)
                d_v = np.hypot(x - vx, y - vy)
                rad = radius * a.heart_scale * vessels
                canvas.paint(rad + 0.02 - d_v, VALUE[FAT], FAT)
                canvas.paint(rad - d_v, VALUE[VESSEL_WALL], VESSEL_WALL)
                canvas.paint(rad - 0.028 * vessels - d_v, VALUE[VESSEL_LUMEN], VESSEL_LUMEN)

        # Imaging: faint ring artefacts around the rotation axis and photon noise.
        ri = np.hypot(x, y)
        rings = np.zeros_like(ri)
        width = 1.5 * canvas.aa
        for radius, amp in zip(a.ring_radii, a.ring_amps, strict=True):
            rings += amp * (0.8 + 0.2 * math.sin(7 * z + radius * 10)) * np.exp(-(((ri - radius) / width) ** 2))
        image = canvas.value + rings + rng.normal(0.0, 1100.0, ri.shape).astype(np.float32)
        return np.clip(np.rint(image), 0, 65535).astype(np.uint16), canvas.label


def slice_name(index: int) -> str:
    return f"slice_{index:05d}.jp2"


def _write_slice(phantom: Phantom, index: int, folder: Path) -> tuple[str, int, str]:
    image, _ = phantom.render_slice(index)
    path = folder / slice_name(index)
    jp2.write_hipct_like(path, image)
    return path.name, path.stat().st_size, sha256_file(path)


def contact_sheet_path(out: Path) -> Path:
    """The contact sheet lives beside the slice folder, so the folder holds nothing but slices."""
    return out.with_name(out.name + "_contact_sheet.png")


def _check_contact_sheet_place(sheet: Path, force: bool) -> None:
    """Before any slice is made: the contact sheet, written beside the folder, replaces a file there only
    with --force (that file may be anything of the user's), and never a folder."""
    if sheet.is_dir() and not sheet.is_symlink():
        raise HeartjobsError(f"{sheet}: a folder where the phantom's contact sheet goes; choose another --out")
    if (sheet.exists() or sheet.is_symlink()) and not force:
        raise HeartjobsError(
            f"{sheet}: exists, and the phantom's contact sheet would replace it; choose another --out or pass --force"
        )


def generate(out: Path, params: PhantomParams, *, workers: int | None = None, force: bool = False) -> tuple[dict, bool]:
    """Write the phantom's slices, manifest.json and contact sheet; returns (manifest, made_now).

    An existing phantom with the same parameters is kept as it is (made_now False); a folder holding
    anything else, or a file where the contact sheet goes, is refused unless `force`. The slices appear
    all at once (staged, then renamed).
    """
    from heartjobs.data.slices import save_contact_sheet

    out = Path(out)
    atomic.refuse_cwd_or_above(out)
    phantom = make_phantom(params)
    if out.exists():
        existing = atomic.read_json(out / MANIFEST_FILE)
        if existing and existing.get("kind") == MANIFEST_KIND and existing.get("parameters") == params.recorded():
            return existing, False
        if not force:
            raise HeartjobsError(f"{out}: exists and is not this phantom; choose another --out or pass --force")
    _check_contact_sheet_place(contact_sheet_path(out), force)

    workers = worker_count(workers, params.slices)
    with atomic.staged_dir(out, replace=force) as tmp:
        files: list[tuple[str, int, str]] = []
        write = partial(_write_slice, phantom, folder=tmp)
        with track(f"phantom {out}", params.slices) as advance, ordered_map(workers) as pmap:
            for written in pmap(write, range(params.slices)):
                files.append(written)
                advance()
        manifest = {
            "kind": MANIFEST_KIND,
            "heartjobs_version": __version__,
            "parameters": params.recorded(),
            "format": {
                "codec": "JPEG 2000 (glymur/OpenJPEG)",
                "dtype": "uint16",
                "compression_ratio": jp2.HIPCT_CRATIO,
                "numres": jp2.numres_for((params.size, params.size)),
                "tile": min(jp2.HIPCT_TILE, params.size),
                "irreversible": True,
            },
            "orientation": "slice 0 is the apex, the last slice the base",
            "files": [{"name": n, "bytes": b, "sha256": h} for n, b, h in files],
            "contact_sheet": contact_sheet_path(out).name,
        }
        atomic.write_json(tmp / MANIFEST_FILE, manifest)
        picks = np.linspace(0, params.slices - 1, min(16, params.slices)).round().astype(int)
        save_contact_sheet([tmp / slice_name(i) for i in picks], contact_sheet_path(out))
    return manifest, True
