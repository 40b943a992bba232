"""The "heart" phantom: slices of one procedural 3-D heart volume, closer to a HiP-CT heart slice.

The volume is never built. Every part is an analytic shape whose parameters are smooth functions of z
(apex at z = 0, base at z = 1), and every texture is seeded 3-D value noise sampled at (x, y, z), so a
slice is computed on its own from its z, neighbouring slices correlate, and the same seed gives the same
pixels. Coordinates are normalised ([-1, 1] across the field of view), so the anatomy does not depend on
the pixel size. The parts: the jar wall, crushed agar, epicardial fat, myocardium with walls of varying
thickness and a ragged (trabeculated) endocardium, four chambers (the ventricles from the apex, the atria
near the base), the aorta and pulmonary trunk leaving the base, coronary vessels; then the imaging: a
phase-contrast edge overshoot, ring artefacts around the rotation axis and noise peaked at mid
frequencies, as filtered back-projection leaves it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np
from scipy import ndimage

from heartjobs.data.phantom import (
    AGAR,
    AIR,
    ATRIUM,
    CORONARY,
    FAT,
    JAR,
    LV,
    MYOCARDIUM,
    RV,
    VALUE,
    VESSEL_LUMEN,
    VESSEL_WALL,
    PhantomParams,
    pixel_grid,
)

# Seed-stream tag of this phantom, so its draws never coincide with the disc phantom's.
_STREAM = 34


def _smoothstep(lo: float, hi: float, x: float) -> float:
    t = min(1.0, max(0.0, (x - lo) / (hi - lo)))
    return t * t * (3.0 - 2.0 * t)


@cache
def _upsampling(n: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of n pixels along a slice row: the 4 lattice indices and cubic B-spline weights that
    upsample a row of cells+1 lattice values. The upsampling is separable (rows, then columns), and done
    by gathers rather than matrix products, whose BLAS threads would crowd the worker processes."""
    coords = (np.arange(n, dtype=np.float64) + 0.5) / n * cells
    base = np.floor(coords).astype(int)
    t = coords - base
    taps = np.stack([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3]) / 6
    index = np.clip(base + np.arange(-1, 3)[:, None], 0, cells)
    taps = taps.astype(np.float32)
    for array in (index, taps):
        array.flags.writeable = False  # shared by every call
    return index, taps


@dataclass(frozen=True)
class HeartAnatomy:
    """The seed-drawn shape parameters of one heart (shared by all its slices)."""

    jar_radius: float  # inner radius of the jar wall, normalised
    jar_wall: float  # its thickness
    jar_center: tuple[float, float]
    heart_center: tuple[float, float]
    heart_scale: float
    heart_tilt: tuple[float, float]  # drift of the heart's centre from apex to base (the long axis leans)
    angle: float  # direction of the left ventricle from the septum at the apex (radians)
    twist: float  # rotation from apex to base (radians)
    lv_wall: float  # left-ventricular wall thickness (relative to the heart's size)
    rv_wall: float
    ring_radii: tuple[float, ...]
    ring_amps: tuple[float, ...]

    @classmethod
    def draw(cls, seed: int) -> HeartAnatomy:
        rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM]))
        n_rings = 14
        return cls(
            jar_radius=float(rng.uniform(0.86, 0.90)),
            jar_wall=float(rng.uniform(0.035, 0.045)),
            jar_center=tuple(rng.uniform(-0.015, 0.015, 2).tolist()),
            heart_center=tuple(rng.uniform(-0.05, 0.05, 2).tolist()),
            heart_scale=float(rng.uniform(0.9, 1.02)),
            heart_tilt=tuple(rng.uniform(-0.08, 0.08, 2).tolist()),
            angle=float(rng.uniform(0, 2 * math.pi)),
            twist=float(rng.uniform(-0.7, 0.7)),
            lv_wall=float(rng.uniform(0.24, 0.30)),
            rv_wall=float(rng.uniform(0.05, 0.07)),
            ring_radii=tuple(rng.uniform(0.03, 1.3, n_rings).tolist()),
            ring_amps=tuple((rng.choice([-1, 1], n_rings) * rng.uniform(250, 800, n_rings)).tolist()),
        )


class HeartPhantom:
    """Renders slices of one heart volume; picklable, so worker processes render slices in parallel."""

    def __init__(self, params: PhantomParams):
        params.validate()
        self.params = params
        self.anatomy = HeartAnatomy.draw(params.seed)

    @cached_property
    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        return pixel_grid(self.params.size)

    def _plane(self, channel: int, plane: int, cells: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([self.params.seed, _STREAM, channel, plane]))
        return rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)

    def noise(self, channel: int, z: float, cells: int, planes: int) -> np.ndarray:
        """Seeded 3-D value noise (unit variance) at depth z: `cells` lattice cells across the field of view,
        `planes` lattice planes along the stack; cubic in x and y, smoothstep between planes in z."""
        pos = z * planes
        k = min(int(pos), planes - 1)
        t = _smoothstep(0.0, 1.0, pos - k)
        low = (1 - t) * self._plane(channel, k, cells) + t * self._plane(channel, k + 1, cells)
        low /= math.sqrt((1 - t) ** 2 + t**2)  # interpolation shrinks the variance between planes
        index, taps = _upsampling(self.params.size, cells)
        rows = np.einsum("kn,knc->nc", taps, low[index])  # (size, cells+1)
        return np.einsum("kn,mkn->mn", taps, rows[:, index])  # (size, size)

    def render_slice(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint16 image, uint8 tissue labels) of slice `index`; the same index always gives the same."""
        value, label = self.tissue(index)
        return self.image(index, value), label

    def tissue(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The noise-free grey values (float32) and tissue labels of slice `index`, before the imaging."""
        p, a = self.params, self.anatomy
        z = p.z(index)
        x, y = self._grid
        aa = 2.0 / p.size  # one pixel, in normalised units
        value = np.full(x.shape, VALUE[AIR], dtype=np.float32)
        label = np.full(x.shape, AIR, dtype=np.uint8)

        def paint(inside: np.ndarray, grey: float | np.ndarray, tissue: int) -> None:
            # anti-aliased over one pixel, so edges move smoothly as the shapes change with z
            alpha = np.clip(inside / aa + 0.5, 0.0, 1.0)
            value[...] += alpha * (grey - value)
            label[alpha > 0.5] = tissue

        # The jar wall, then crushed agar: granules of varying brightness with dark cracks between them.
        jr = np.hypot(x - a.jar_center[0], y - a.jar_center[1])
        paint(a.jar_radius + a.jar_wall - jr, VALUE[JAR] + 600.0 * self.noise(0, z, 12, 6), JAR)
        granules = self.noise(1, z, 40, 30)
        cracks = np.exp(-((self.noise(2, z, 28, 24) / 0.10) ** 2))
        paint(a.jar_radius - jr, VALUE[AGAR] + 2400.0 * np.tanh(1.5 * granules) - 6000.0 * cracks, AGAR)

        # The heart's frame at this z: its centre leans along the long axis and it twists towards the base.
        s = a.heart_scale
        hx = a.heart_center[0] + a.heart_tilt[0] * z
        hy = a.heart_center[1] + a.heart_tilt[1] * z
        rot = a.angle + a.twist * z
        cos_r, sin_r = math.cos(rot), math.sin(rot)
        u = (x - hx) * cos_r + (y - hy) * sin_r  # towards the left ventricle
        v = -(x - hx) * sin_r + (y - hy) * cos_r
        phi = np.arctan2(v, u)

        # Outline: a small tip at the apex, widest mid-stack, narrowing where the atria sit at the base.
        grow = 0.10 + 0.90 * math.sqrt(_smoothstep(-0.02, 0.5, z))
        size_z = s * grow * (1.0 - 0.22 * _smoothstep(0.75, 1.0, z))
        semi_u, semi_v = 0.62 * size_z, 0.50 * size_z
        lobes = 1 + 0.06 * self.noise(3, z, 3, 4) + 0.05 * np.cos(3 * phi + 1.0)
        outline = (1.0 - np.hypot(u / semi_u, v / semi_v) / lobes) * min(semi_u, semi_v)
        # Epicardial fat: thicker in the grooves (between the ventricles, and round the base), lobular.
        groove = np.exp(-(((np.abs(phi) - 2.2) / 0.35) ** 2))
        fat_share = 0.05 + 0.10 * groove + 0.04 * _smoothstep(0.55, 0.8, z)
        fat_depth = size_z * fat_share * (1 + 0.3 * self.noise(4, z, 8, 8))
        paint(outline, VALUE[FAT] + 1500.0 * self.noise(5, z, 30, 30), FAT)
        epicardium = outline - fat_depth
        fibres = self.noise(6, z, 60, 40) * 0.6 + 0.4 * self.noise(7, z, 14, 12)
        paint(epicardium, VALUE[MYOCARDIUM] + 2400.0 * fibres, MYOCARDIUM)

        # Coronary vessels in the fat of the grooves, drifting slowly round the heart.
        for i, (side, depth) in enumerate(((1.0, 0.6), (-1.0, 0.55), (1.0, 0.35))):
            theta = side * (2.2 + 0.15 * math.sin(4 * z + i))
            rad = 0.58 * size_z * (1 - 0.25 * depth)
            cu, cv = rad * math.cos(theta), rad * math.sin(theta) * 0.85
            d = np.hypot(u - cu, v - cv)
            caliber = (0.010 + 0.004 * (i == 0)) * s * (0.5 + 0.5 * _smoothstep(0.0, 0.6, z))
            paint(caliber - d, VALUE[CORONARY], CORONARY)
            paint(0.55 * caliber - d, VALUE[VESSEL_LUMEN], VESSEL_LUMEN)

        # The ventricles open above the apex and give way to the atria near the base. The endocardium is
        # ragged (trabeculae): its radius is perturbed by fine noise, more in the right ventricle.
        atria = _smoothstep(0.58, 0.85, z)
        ventricles = _smoothstep(0.06, 0.35, z) * (1.0 - 0.9 * atria)
        trabeculae = self.noise(8, z, 70, 50)
        lv_u = 0.14 * semi_u
        d_lv = np.hypot(u - lv_u, (v / 0.95))
        lv_radius = semi_v * (1 - a.lv_wall * 1.6) * ventricles * (1 + 0.07 * np.cos(2 * phi))
        paint(lv_radius * (1 + 0.10 * trabeculae) - d_lv, VALUE[LV], LV)
        # Two papillary muscles inside the left ventricle, mid-stack.
        papillary = _smoothstep(0.2, 0.4, z) * (1 - _smoothstep(0.5, 0.65, z))
        if papillary > 0:
            for side in (1.0, -1.0):
                pu, pv = lv_u + 0.35 * lv_radius.max() * 0.5, side * 0.45 * float(lv_radius.max())
                paint(0.035 * s * papillary - np.hypot(u - pu, v - pv), VALUE[MYOCARDIUM], MYOCARDIUM)
        # The right ventricle: a crescent wrapped round the septum, with a thin free wall.
        rv_center = -0.55 * semi_u
        d_rv = np.hypot((u - rv_center) / 1.1, v)
        rv_radius = 0.55 * size_z * ventricles
        septum = semi_v * (1 - a.lv_wall * 1.6) * ventricles + a.lv_wall * semi_v * 0.9
        rv_inside = np.minimum(rv_radius - d_rv, d_lv - septum)
        rv_inside = np.minimum(rv_inside, epicardium - a.rv_wall * size_z)
        paint(rv_inside + 0.012 * s * ventricles * trabeculae, VALUE[RV], RV)

        if atria > 0:
            # Left atrium behind, right atrium to the right side: thin-walled, near the base.
            for cu, cv, share in ((0.25, 0.45, 0.30), (-0.5, 0.1, 0.28)):
                d_at = np.hypot(u - cu * semi_u, v - cv * semi_v)
                inside = share * size_z * atria * (1 + 0.06 * np.cos(3 * phi)) - d_at
                inside = np.minimum(inside, epicardium - 0.03 * size_z)
                paint(inside + 0.006 * s * atria * trabeculae, VALUE[ATRIUM], ATRIUM)

        vessels = _smoothstep(0.74, 0.9, z)
        if vessels > 0:
            # The aorta and the pulmonary trunk leave the base, leaning as they rise, in a cuff of fat.
            lean = z - 0.74
            for cu, cv, radius, lu, lv_ in ((0.1, -0.4, 0.11, 0.2, 0.3), (-0.3, -0.7, 0.095, -0.3, -0.2)):
                vu = cu * semi_u + lu * lean
                vv = cv * semi_v + lv_ * lean
                d_v = np.hypot(u - vu, v - vv)
                rad = radius * s * vessels
                paint(rad + 0.025 * s - d_v, VALUE[FAT], FAT)
                paint(rad - d_v, VALUE[VESSEL_WALL] + 1200.0 * fibres, VESSEL_WALL)
                paint(rad - 0.022 * s * vessels - d_v, VALUE[VESSEL_LUMEN], VESSEL_LUMEN)
        return value, label

    def image(self, index: int, value: np.ndarray) -> np.ndarray:
        """The imaging of one slice: phase-contrast edges, ring artefacts, noise, 16-bit."""
        p, a = self.params, self.anatomy
        z = p.z(index)
        x, y = self._grid
        px = p.size / 2.0  # pixels per normalised unit
        # Propagation phase contrast: a bright/dark overshoot on both sides of every edge.
        image = value + 0.9 * (value - ndimage.gaussian_filter(value, sigma=max(0.8, 0.006 * px)))
        # Ring artefacts: thin circles centred on the rotation axis (the image centre), slowly varying in z.
        ri = np.hypot(x, y)
        width = 1.5 * 2.0 / p.size
        for radius, amp in zip(a.ring_radii, a.ring_amps, strict=True):
            image += amp * (0.8 + 0.2 * math.sin(6 * z + 10 * radius)) * np.exp(-(((ri - radius) / width) ** 2))
        # Noise: white noise band-passed (little at the lowest and highest frequencies), new in every slice.
        rng = np.random.default_rng(np.random.SeedSequence([p.seed, _STREAM, 1_000_000, index]))
        white = rng.standard_normal(value.shape).astype(np.float32)
        band = ndimage.gaussian_filter(white, 0.7) - 0.5 * ndimage.gaussian_filter(white, 2.5)
        image += 1100.0 * band / max(float(band.std()), 1e-6)
        return np.clip(np.rint(image), 0, 65535).astype(np.uint16)
