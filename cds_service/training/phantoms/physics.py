"""The physics of an AP pelvis radiograph: cone-beam projection, polychromatic attenuation, scatter,
heel effect, quantum noise, detector blur, collimation and the log transform.

Chosen by measurement on the 2-core CPU this project trains on (numpy only, float32):

* **Projection** (:func:`project`): the cone beam from a point source, done as a sum of depth planes,
  each magnified about the central ray's foot point (magnification ``SID / source-to-plane distance``)
  and sampled bilinearly on the detector raster. The grid's slices are first gathered into planes
  every :data:`PLANE_SPACING` mm with linear depth weights (a slice between two planes is shared
  between them, so its centroid projects where it should). Measured on a 190 × 270 × 330 volume of
  soft spheres (1.25 mm) onto 350 × 430 detector pixels: slice by slice 0.68 s per material; planes
  every 3.75 mm 0.06 s, largest deviation 0.46 % of the largest line integral (a sub-pixel shift at
  the field's corners, less than the focal spot's penumbra); torch ``grid_sample`` was slower
  (0.27 s for 60 planes × 3 materials alone) and the demo install has no torch.
* **Attenuation**: per-material line integrals (g/cm²) through a polychromatic spectrum (5 keV bins),
  so thick bone and metal harden the beam (:func:`transmission`, :func:`effective_mu`). Spectra and
  mass attenuation coefficients are small embedded tables (sources below) rather than a dependency:
  spekpy and xraydb install cleanly from PyPI, but serving would then carry them for 30 numbers.
* **Detector chain** (:func:`expose`): beam hardening on the 1 mm raster; heel effect, inverse
  square and obliquity; scatter as a low-frequency veil (a convolution-kernel model: scatter is the
  primary weighted by the local water-equivalent thickness and spread by a broad Gaussian, scaled to
  a scatter-to-primary ratio); then at working resolution (1/3 mm) trabecular texture below the
  volume's voxel size (a 2-D band-pass texture masked by the projected bone), focal-spot penumbra,
  stationary-grid lines, collimation with unexposed borders, Poisson quantum noise at a dose (signal-
  dependent, before the log), detector blur (a Gaussian core plus a broad glare tail, a two-component
  MTF), the log transform, a vendor-like window of the anatomy's histogram, band-pass detail enhancement
  and a display LUT that puts the soft tissue at mid-grey: intensity in [0, 1],
  1 = bright (attenuating), as :func:`cds_service.training.phantoms.writer.to_dataset` expects.

Geometry (:class:`Geometry`): patient frame of :mod:`.volume` (x to the patient's left, y to the feet,
z from anterior to posterior), tube in front, detector plane behind the table at ``detector_z``,
detector 430 × 350 mm (columns × rows, landscape), image columns along +x (the patient's right hip on
the image's left, as radiographs are displayed) and rows along +y (head at the top).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

from cds_service.training.phantoms.volume import Grid

#: Detector size (rows = head-foot, columns = across the patient), mm: a 35 × 43 cm cassette/DR panel.
DETECTOR_MM = (350.0, 430.0)
#: Working resolution (rows, columns): 1/3 mm pixels, so a half-pelvis crop (645 columns) resized to
#: 384 loses nothing. The projection runs on a raster :data:`RASTER` times coarser (1 mm pixels).
WORK = (1050, 1290)
RASTER = 3
#: Finest scale (mm, Gaussian σ) the display's detail enhancement lifts: below it the quantum mottle.
DETAIL_FLOOR = 0.4
#: Depth spacing (mm) of the planes the volume is gathered into before the cone-beam sampling.
PLANE_SPACING = 3.75

# Mass attenuation coefficients μ/ρ (cm²/g, coherent scattering included) at the energies of
# ``_TABLE_KEV``. Source: J. H. Hubbell and S. M. Seltzer, "Tables of X-Ray Mass Attenuation
# Coefficients ... (NIST Standard Reference Database 126, NISTIR 5632)", i.e. NIST XCOM, with the
# ICRU Report 44 compositions of skeletal muscle ("soft"), adipose tissue and cortical bone; checked
# against xraydb 4.5.8 (Elam tables) with those compositions to within 0.5 %. ``metal`` is iron (a
# stand-in for steel and cobalt-chromium; titanium's μ/ρ is about 60 % of it at 60 keV, and either is
# nearly opaque at implant thicknesses); aluminium is the tube's filtration.
_TABLE_KEV = np.array([10, 15, 20, 30, 40, 50, 60, 80, 100], dtype=np.float64)
MASS_ATTENUATION = {
    "water": (5.329, 1.673, 0.8096, 0.3756, 0.2683, 0.2269, 0.2059, 0.1837, 0.1707),
    "soft": (5.356, 1.693, 0.8205, 0.3783, 0.2685, 0.2262, 0.2048, 0.1823, 0.1693),
    "adipose": (3.268, 1.083, 0.5677, 0.3063, 0.2396, 0.2123, 0.1974, 0.1793, 0.1679),
    "bone": (28.51, 9.032, 4.001, 1.331, 0.6655, 0.4242, 0.3148, 0.2229, 0.1855),
    "metal": (170.6, 57.08, 25.68, 8.176, 3.629, 1.958, 1.205, 0.5952, 0.3717),
    "titanium": (110.7, 35.87, 15.85, 4.972, 2.214, 1.213, 0.7661, 0.4052, 0.2721),
    "aluminium": (26.23, 7.955, 3.441, 1.128, 0.5685, 0.3681, 0.2778, 0.2018, 0.1704),
}
_ALUMINIUM_DENSITY = 2.699

# Unfiltered bremsstrahlung + characteristic photon fluence of a tungsten anode (12° target) per 5 keV
# bin from 10 to 95 keV (bin centres ``ENERGIES``), each row scaled to its largest bin: computed with
# SpekPy 2.5.4 (G. Poludniowski et al., Phys. Med. Biol. 66 (2021) 055010), default physics model.
# Filtration is applied here (:func:`spectrum`): with 2.5 mm Al these give first half-value layers of
# 2.56 / 2.73 / 2.92 mm Al at 75 / 80 / 85 kVp, as SpekPy does.
ENERGIES = np.arange(12.5, 95.0, 5.0)
_SPECTRUM_KVP = np.array([70.0, 75.0, 80.0, 85.0, 90.0])
_SPECTRUM = np.array(
    [
        (1, 0.8662, 0.8519, 0.7409, 0.6101, 0.4887, 0.3842, 0.2957, 0.22, 0.1536, 0.09231, 0.03247, 0, 0, 0, 0, 0),
        (1, 0.8916, 0.9052, 0.8059, 0.6764, 0.5518, 0.4428, 0.3501, 0.271, 0.2167, 0.1418, 0.08906, 0.02903) + (0,) * 4,
        (1, 0.9144, 0.9571, 0.8718, 0.7448, 0.6174, 0.5037, 0.4061, 0.3229, 0.2949, 0.1889, 0.1443, 0.07627)
        + (0.02714, 0, 0, 0),
        (0.9926, 0.9285, 1, 0.9305, 0.8081, 0.6794, 0.562, 0.4602, 0.3731, 0.3884, 0.2335, 0.2005, 0.1166)
        + (0.07145, 0.02526, 0, 0),
        (0.9471, 0.9045, 1, 0.9493, 0.8372, 0.7129, 0.5969, 0.495, 0.4073, 0.4623, 0.2668, 0.2452, 0.1475)
        + (0.1057, 0.06448, 0.02268, 0),
    ]
)


def mass_attenuation(material: str, energies: np.ndarray) -> np.ndarray:
    """μ/ρ (cm²/g) of ``material`` at ``energies`` (keV), log-log interpolated in the NIST table."""
    table = np.log(np.asarray(MASS_ATTENUATION[material], dtype=np.float64))
    return np.exp(np.interp(np.log(energies), np.log(_TABLE_KEV), table))


def spectrum(kvp: float, filtration: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """The photon spectrum leaving the tube: (bin energies keV, photon fractions summing to 1).

    ``kvp`` 70–90 (interpolated between SpekPy spectra), ``filtration`` total mm of aluminium
    (inherent plus added). Bins carrying less than 1e-4 of the photons are dropped.
    """
    if not _SPECTRUM_KVP[0] <= kvp <= _SPECTRUM_KVP[-1]:
        raise ValueError(f"kVp {kvp} outside {_SPECTRUM_KVP[0]:.0f}–{_SPECTRUM_KVP[-1]:.0f}")
    rows = [np.interp(kvp, _SPECTRUM_KVP, _SPECTRUM[:, i]) for i in range(len(ENERGIES))]
    fluence = np.array(rows) * (ENERGIES < kvp)
    fluence *= np.exp(-mass_attenuation("aluminium", ENERGIES) * _ALUMINIUM_DENSITY * filtration / 10)
    fluence /= fluence.sum()
    keep = fluence >= 1e-4
    return ENERGIES[keep], fluence[keep] / fluence[keep].sum()


def transmission(integrals: Mapping[str, np.ndarray], kvp: float, filtration: float = 2.5) -> np.ndarray:
    """Energy-weighted primary transmission (1 = no attenuation) of per-material line integrals (g/cm²).

    Beer–Lambert per energy bin, summed over the spectrum with each photon's energy as its weight (an
    energy-integrating detector: CsI or BaFBr phosphor), so the attenuation of a thick object per gram
    falls as it hardens the beam.
    """
    energies, fractions = spectrum(kvp, filtration)
    weights = fractions * energies
    weights /= weights.sum()
    shape = next(iter(integrals.values())).shape
    total = np.zeros(shape, np.float32)
    exponent = np.empty(shape, np.float32)
    for energy, weight in zip(energies, weights, strict=True):
        exponent.fill(0.0)
        for name, integral in integrals.items():
            exponent -= np.float32(mass_attenuation(name, np.array([energy]))[0]) * integral
        np.exp(exponent, out=exponent)
        total += np.float32(weight) * exponent
    return total


def effective_mu(material: str, thickness: float, kvp: float, filtration: float = 2.5) -> float:
    """Effective linear attenuation (cm⁻¹) of ``thickness`` cm of ``material`` at its usual density:
    −ln(transmission) / thickness. Lower for thicker slabs: beam hardening."""
    density = {"water": 1.0, "soft": 1.05, "adipose": 0.95, "bone": 1.92, "metal": 7.87}[material]
    integral = {material: np.array([thickness * density], np.float32)}
    return float(-np.log(transmission(integral, kvp, filtration)[0]) / thickness)


@dataclass(frozen=True)
class Geometry:
    """Where the source and detector are: a point source ``sid`` mm from the detector plane, the
    central ray perpendicular to it through ``centre`` (y, x mm in the patient frame)."""

    sid: float = 1100.0
    detector_z: float = 200.0
    centre: tuple[float, float] = (0.0, 0.0)
    size: tuple[float, float] = DETECTOR_MM
    shape: tuple[int, int] = WORK

    @property
    def source_z(self) -> float:
        return self.detector_z - self.sid

    @property
    def pitch(self) -> float:
        """Pixel pitch (mm) at working resolution (square pixels)."""
        return self.size[1] / self.shape[1]

    def magnification(self, z: np.ndarray | float) -> np.ndarray | float:
        """SID / source-to-point distance for points at depth ``z`` (mm)."""
        return (
            self.sid / (np.asarray(z) - self.source_z) if isinstance(z, np.ndarray) else self.sid / (z - self.source_z)
        )

    def detector_axes(self, factor: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Detector-plane positions (y, x mm in the patient frame) of the pixel centres of a raster
        ``factor`` times coarser than working resolution."""
        rows, cols = self.shape[0] // factor, self.shape[1] // factor
        pitch = self.pitch * factor
        cy, cx = self.centre
        v = cy - rows * pitch / 2 + (np.arange(rows) + 0.5) * pitch
        u = cx - cols * pitch / 2 + (np.arange(cols) + 0.5) * pitch
        return v, u

    def project_points(self, points_zyx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Working-resolution (row, column) of patient-frame points ([N, 3] (z, y, x) mm): where the
        ray from the source through each point meets the detector (pixel centres at integers)."""
        points = np.atleast_2d(np.asarray(points_zyx, dtype=np.float64))
        m = self.sid / (points[:, 0] - self.source_z)
        cy, cx = self.centre
        v = cy + (points[:, 1] - cy) * m
        u = cx + (points[:, 2] - cx) * m
        row = (v - (cy - self.shape[0] * self.pitch / 2)) / self.pitch - 0.5
        col = (u - (cx - self.shape[1] * self.pitch / 2)) / self.pitch - 0.5
        return row, col

    def field_grid(self, spacing: float, z_range: tuple[float, float], margin: float = 4.0) -> Grid:
        """A grid at ``spacing`` mm between depths ``z_range`` that covers every ray reaching the
        detector (its widest cross-section is the one nearest the detector)."""
        z0, z1 = z_range
        m = self.sid / (max(z0, z1) - self.source_z)
        half_y, half_x = self.size[0] / 2 / m + margin, self.size[1] / 2 / m + margin
        cy, cx = self.centre
        shape = (
            int(math.ceil((z1 - z0) / spacing)) + 1,
            int(math.ceil(2 * half_y / spacing)) + 1,
            int(math.ceil(2 * half_x / spacing)) + 1,
        )
        return Grid(shape, spacing, (z0, cy - half_y, cx - half_x))


def _planes(volume: np.ndarray, grid: Grid, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """The volume's slices gathered into planes every ``spacing`` mm, linear weights in depth."""
    nz = grid.shape[0]
    if spacing <= grid.spacing:
        return grid.origin[0] + grid.spacing * np.arange(nz), volume
    position = np.arange(nz) * grid.spacing / spacing
    lower = np.floor(position).astype(np.intp)
    upper_weight = (position - lower).astype(np.float32)
    planes = np.zeros((int(lower[-1]) + 2, *grid.shape[1:]), np.float32)
    for k in range(nz):
        if not volume[k].any():
            continue
        planes[lower[k]] += volume[k] * (1 - upper_weight[k])
        if upper_weight[k] > 0:
            planes[lower[k] + 1] += volume[k] * upper_weight[k]
    return grid.origin[0] + spacing * np.arange(len(planes)), planes


def _sample(plane: np.ndarray, grid: Grid, geometry: Geometry, m: float, v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Bilinear samples of one plane (magnification ``m``) at detector positions ``v`` × ``u``."""
    cy, cx = geometry.centre
    fy = (cy + (v - cy) / m - grid.origin[1]) / grid.spacing + 1  # +1: the zero border below
    fx = (cx + (u - cx) / m - grid.origin[2]) / grid.spacing + 1
    ny, nx = plane.shape
    j0 = np.clip(np.floor(fy).astype(np.intp), 0, ny)
    i0 = np.clip(np.floor(fx).astype(np.intp), 0, nx)
    wy = np.clip(fy - j0, 0, 1).astype(np.float32)[:, None]
    wx = np.clip(fx - i0, 0, 1).astype(np.float32)
    padded = np.pad(plane, 1)
    rows = padded[j0]
    rows *= 1 - wy
    rows += padded[j0 + 1] * wy
    out = np.take(rows, i0, axis=1)
    out *= 1 - wx
    right = np.take(rows, i0 + 1, axis=1)
    right *= wx
    out += right
    return out


def project(
    materials: Mapping[str, np.ndarray],
    grid: Grid,
    geometry: Geometry,
    *,
    factor: int = RASTER,
    plane_spacing: float = PLANE_SPACING,
) -> dict[str, np.ndarray]:
    """Cone-beam line integrals ∫ρ dl (g/cm²) of each material on a detector raster ``factor`` times
    coarser than working resolution (obliquity of the rays included). Materials that are all zero
    are left out."""
    v, u = geometry.detector_axes(factor)
    cy, cx = geometry.centre
    obliquity = np.sqrt(1 + ((v[:, None] - cy) ** 2 + (u[None, :] - cx) ** 2) / geometry.sid**2).astype(np.float32)
    out = {}
    for name, volume in materials.items():
        depths, planes = _planes(volume, grid, plane_spacing)
        total = np.zeros((len(v), len(u)), np.float32)
        for depth, plane in zip(depths, planes, strict=True):
            if plane.any():
                total += _sample(plane, grid, geometry, geometry.sid / (depth - geometry.source_z), v, u)
        if total.any():
            out[name] = total * obliquity * np.float32(grid.spacing / 10)
    return out


def project_mask(mask: np.ndarray, grid: Grid, geometry: Geometry, *, factor: int = 1) -> np.ndarray:
    """The detector pixels (working resolution / ``factor``) whose rays cross the bool volume ``mask``:
    its projected silhouette (a ray counts once it runs through half a voxel of the mask)."""
    chord = project({"mask": mask.astype(np.float32)}, grid, geometry, factor=RASTER).get("mask")
    shape = (geometry.shape[0] // factor, geometry.shape[1] // factor)
    if chord is None:
        return np.zeros(shape, bool)
    return resize(chord, shape) * 10 > grid.spacing / 2


def resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling of a float image to ``shape`` (rows, columns), pixel centres aligned."""
    if image.shape == shape:
        return image
    resized = Image.fromarray(np.ascontiguousarray(image, np.float32), mode="F").resize(
        (shape[1], shape[0]), Image.Resampling.BILINEAR
    )
    return np.array(resized)  # writable (PIL's buffer is read-only)


def small_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (``sigma`` in pixels, at most ~3) by shifted sums: edges replicated."""
    if sigma < 0.2:
        return image
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * sigma**2)).astype(np.float32)
    taps /= taps.sum()
    out = image
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        size = out.shape[axis]
        acc = np.zeros_like(out)
        for k, tap in enumerate(taps):
            acc += tap * (padded[k : k + size] if axis == 0 else padded[:, k : k + size])
        out = acc
    return out


def _gauss_matrix(n: int, sigma: float) -> np.ndarray:
    x = np.arange(n, dtype=np.float32)
    kernel = np.exp(-((x[:, None] - x[None, :]) ** 2) / (2 * sigma**2))
    return kernel / kernel.sum(1, keepdims=True)


def wide_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur for ``sigma`` (pixels) much larger than a pixel: done on a ~4σ/… reduced image by
    dense Gaussian matrices (normalised at the borders), then resized back."""
    step = max(1, int(sigma // 4))
    small = image if step == 1 else resize(image, (image.shape[0] // step, image.shape[1] // step))
    rows, cols = small.shape
    blurred = _gauss_matrix(rows, sigma / step) @ small @ _gauss_matrix(cols, sigma / step).T
    return resize(blurred.astype(np.float32), image.shape)


@cache
def _texture_tile(size: int = 1024, seed: int = 20261120) -> np.ndarray:
    """A periodic trabecular-network tile (zero mean, unit standard deviation) at 1/3 mm pixels.

    Projected cancellous bone is the sum of many 0.1–0.2 mm trabeculae 0.5–1 mm apart: on a film it
    reads as a network of bright struts 1.5–3 mm across, not pixel noise. Drawn as the zero crossings
    of band-pass noise peaked at 0.45 cycles/mm (ridged noise: bright thin lines where the field
    changes sign), so nothing reaches the pixel scale where the quantum mottle is.
    """
    noise = np.random.default_rng(seed).standard_normal((size, size))
    f = np.fft.fftfreq(size) * 3.0  # cycles per mm at 1/3 mm pixels
    radius = np.hypot(f[:, None], f[None, :])
    band = np.exp(-(((radius - 0.45) / 0.18) ** 2))
    field = np.fft.ifft2(np.fft.fft2(noise) * band).real
    field /= field.std()
    ridges = np.exp(-((field / 0.9) ** 2))
    ridges = np.fft.ifft2(np.fft.fft2(ridges) * np.exp(-((radius / 0.9) ** 2))).real  # struts ~1 mm wide
    ridges -= ridges.mean()
    return (ridges / ridges.std()).astype(np.float32)


@dataclass(frozen=True)
class Technique:
    """One exposure's technique and detector: everything :func:`expose` needs besides the anatomy."""

    kvp: float = 80.0
    filtration: float = 2.5  # total mm Al
    quanta: float = 2.0e4  # noise-equivalent quanta per mm² (DQE included) at the body's median
    scatter_to_primary: float = 0.7  # with a grid; several times more without
    scatter_sigma: float = 60.0  # mm, width of the scatter veil
    heel: float = 0.15  # intensity drop across the field toward the anode
    anode_toward_feet: bool = True
    focal_spot: float = 1.2  # mm
    object_distance: float = 250.0  # mm, hips to detector (for the focal spot's penumbra)
    blur_sigma: float = 0.12  # mm, detector core blur
    glare: float = 0.04  # share of signal in the detector's broad tail
    glare_sigma: float = 4.0  # mm
    grid_lines: float = 0.0  # relative amplitude of stationary-grid lines (0 = moving/no grid)
    grid_period: float = 3.3  # pixels, the lines' aliased period at working resolution
    collimation: tuple[float, float, float, float] = (10.0, 10.0, 10.0, 10.0)  # top, bottom, left, right mm
    window_low: float = 0.03  # share of the display range below the thinnest anatomy
    window_high: float = 0.97  # where the densest anatomy (99.5th percentile) lands
    texture: float = 0.08  # trabecular texture: relative modulation of the bone line integral
    equalisation: float = 0.4  # share of the log image's low-frequency variation removed (processing)
    equalisation_sigma: float = 30.0  # mm
    detail: float = 0.0  # unsharp-mask gain of the vendor's detail (edge) enhancement; 0 = none
    detail_sigma: float = 1.5  # mm, the scale that enhancement lifts
    soft_level: float = 0.0  # display level of the median anatomy pixel (soft tissue); 0 = linear window


def draw_technique(rng: np.random.Generator) -> Technique:
    """A technique as AP pelvis rooms use (75–85 kVp, ~2.5 mm Al, grid, AEC dose), drawn in a fixed order."""
    return Technique(
        kvp=float(rng.uniform(75, 85)),
        filtration=float(rng.uniform(2.5, 3.5)),
        quanta=float(np.exp(rng.uniform(np.log(1.5e4), np.log(8e4)))),  # 2.5–5 µGy at DQE 0.3–0.6
        scatter_to_primary=float(rng.uniform(0.5, 1.0)),
        scatter_sigma=float(rng.uniform(40, 80)),
        heel=float(rng.uniform(0.10, 0.25)),
        anode_toward_feet=bool(rng.random() < 0.5),
        focal_spot=float(rng.uniform(1.0, 1.3)),
        object_distance=250.0,
        blur_sigma=float(rng.uniform(0.08, 0.2)),
        glare=float(rng.uniform(0.02, 0.08)),
        glare_sigma=float(rng.uniform(2.0, 6.0)),
        grid_lines=float(rng.uniform(0.005, 0.02)) if rng.random() < 0.25 else 0.0,
        grid_period=float(rng.uniform(2.2, 6.0)),
        collimation=tuple(float(c) for c in rng.uniform(0, 25, 4)),  # type: ignore[arg-type]
        window_low=float(rng.uniform(0.0, 0.08)),
        window_high=float(rng.uniform(0.9, 1.0)),
        texture=float(rng.uniform(0.04, 0.08)),
        equalisation=float(rng.uniform(0.35, 0.65)),
        equalisation_sigma=float(rng.uniform(20, 50)),
        detail=float(rng.uniform(0.5, 1.0)),
        detail_sigma=float(rng.uniform(1.0, 2.5)),
        soft_level=float(rng.uniform(0.3, 0.45)),
    )


@dataclass(frozen=True)
class Exposure:
    """A detected exposure: ``counts`` (quanta per pixel after the detector, before the log), the
    ``image`` in [0, 1] (1 = bright), and the collimated ``field`` (bool), all at working resolution."""

    counts: np.ndarray
    image: np.ndarray
    field: np.ndarray


def _field(geometry: Geometry, collimation: tuple[float, float, float, float], factor: int) -> np.ndarray:
    """The collimated field (soft edge of one working pixel: the blades' penumbra) at raster ``factor``."""
    rows, cols = geometry.shape[0] // factor, geometry.shape[1] // factor
    pitch = geometry.pitch * factor
    r = (np.arange(rows, dtype=np.float32) + 0.5) * pitch
    c = (np.arange(cols, dtype=np.float32) + 0.5) * pitch
    top, bottom, left, right = collimation
    edge = geometry.pitch
    fr = np.clip(np.minimum(r - top, rows * pitch - bottom - r) / edge + 0.5, 0, 1)
    fc = np.clip(np.minimum(c - left, cols * pitch - right - c) / edge + 0.5, 0, 1)
    return fr[:, None] * fc[None, :]


def expose(
    integrals: Mapping[str, np.ndarray],
    geometry: Geometry,
    technique: Technique,
    rng: np.random.Generator,
    *,
    marker: np.ndarray | None = None,
) -> Exposure:
    """The detector's image of per-material line integrals (:func:`project`'s raster).

    ``marker`` (working resolution, 0–1) is a lead letter on the table: it stops the primary beam.
    Draws from ``rng`` in a fixed order (texture offset, grid phase, noise), whatever the anatomy.
    """
    rows, cols = geometry.shape
    coarse = next(iter(integrals.values())).shape
    factor = rows // coarse[0]
    v, u = geometry.detector_axes(factor)
    cy, cx = geometry.centre

    primary = transmission(integrals, technique.kvp, technique.filtration)
    # Inverse square and obliquity of the detector's surface (cos³ of the ray's angle), heel effect.
    cos = geometry.sid / np.sqrt(geometry.sid**2 + (v[:, None] - cy) ** 2 + (u[None, :] - cx) ** 2)
    along = (np.arange(coarse[0], dtype=np.float32) + 0.5) / coarse[0]
    toward_anode = along if technique.anode_toward_feet else 1 - along
    heel = 1 - technique.heel * toward_anode[:, None]
    primary *= (cos**3 * heel).astype(np.float32)
    field_coarse = _field(geometry, technique.collimation, factor)

    # Scatter: each pixel's primary weighted by the water-equivalent thickness it crossed, spread wide.
    thickness = sum(integrals.get(name, 0) * w for name, w in (("soft", 1.0), ("adipose", 0.9), ("bone", 1.8)))
    thickness = np.asarray(thickness, np.float32) * np.ones(coarse, np.float32)
    body = thickness > 2.0
    exposed = primary * field_coarse
    scatter = wide_blur(exposed * thickness, technique.scatter_sigma / (geometry.pitch * factor))
    # Scatter reaching the detector beyond the field's edge comes obliquely, and the grid rejects it.
    scatter *= 0.15 + 0.85 * wide_blur(field_coarse.astype(np.float32), 5.0 / (geometry.pitch * factor))
    inside = body & (field_coarse > 0.99)
    if inside.any():  # the body's median pixel gets the technique's scatter-to-primary ratio
        ratio = float(np.median(scatter[inside] / np.maximum(exposed[inside], 1e-12)))
        scatter *= technique.scatter_to_primary / max(ratio, 1e-12)

    # Working resolution: trabecular texture through the bone, penumbra, grid lines, collimation.
    primary_fine = resize(primary, (rows, cols))
    tile = _texture_tile()
    off_r, off_c = rng.integers(0, tile.shape[0], 2)
    if "bone" in integrals and technique.texture > 0:
        energies, fractions = spectrum(technique.kvp, technique.filtration)
        mu_bone = float(
            np.sum(fractions * energies * mass_attenuation("bone", energies)) / np.sum(fractions * energies)
        )
        texture = tile[np.ix_((np.arange(rows) + off_r) % tile.shape[0], (np.arange(cols) + off_c) % tile.shape[1])]
        bone = resize(integrals["bone"], (rows, cols))
        primary_fine *= np.exp(-np.float32(technique.texture * mu_bone) * bone * texture)
    penumbra = technique.focal_spot * technique.object_distance / (geometry.sid - technique.object_distance)
    primary_fine = small_blur(primary_fine, penumbra / 2.355 / geometry.pitch)
    phase = rng.uniform(0, 2 * math.pi)
    if technique.grid_lines > 0:
        lines = 1 + technique.grid_lines * np.cos(2 * math.pi * np.arange(cols) / technique.grid_period + phase)
        primary_fine *= lines.astype(np.float32)[None, :]
    field = _field(geometry, technique.collimation, 1)
    primary_fine *= field
    if marker is not None:
        primary_fine *= 1 - 0.98 * marker
    expected = primary_fine + resize(scatter, (rows, cols))

    # Quanta: the AEC sets the dose so the body's median pixel receives ``quanta`` per mm².
    reference = float(np.median(expected[::8, ::8][resize(body.astype(np.float32), (rows, cols))[::8, ::8] > 0.5]))
    per_pixel = technique.quanta * geometry.pitch**2 / max(reference, 1e-12)
    mean_counts = expected * np.float32(per_pixel)
    # Poisson noise (variance = mean), drawn as a unit normal scaled by √mean: at hundreds of quanta
    # per pixel and more the two agree, and one fixed draw keeps unchanged regions identical.
    counts = mean_counts + np.sqrt(mean_counts) * rng.standard_normal((rows, cols), dtype=np.float32)
    np.maximum(counts, 0.0, out=counts)
    counts = (1 - technique.glare) * small_blur(counts, technique.blur_sigma / geometry.pitch)
    counts += technique.glare * wide_blur(mean_counts, technique.glare_sigma / geometry.pitch)

    # Log transform and a window of the anatomy's histogram (direct exposure and unexposed borders
    # excluded), as a vendor's automatic processing does before its display curve.
    attenuation = np.log(np.float32(per_pixel)) - np.log(np.maximum(counts, 0.5))
    anatomy = (field > 0.99) & (attenuation > 1.0)
    if anatomy[::4, ::4].sum() < 100:
        anatomy = field > 0.99
    level = np.float32(np.median(attenuation[::4, ::4][anatomy[::4, ::4]]))
    if technique.equalisation > 0:
        # Dynamic-range compression (a vendor's "latitude" processing): part of the log image's
        # low-frequency variation inside the anatomy is removed, so bone detail keeps its contrast.
        smooth = wide_blur(np.where(anatomy, attenuation, level), technique.equalisation_sigma / geometry.pitch)
        attenuation -= np.float32(technique.equalisation) * (smooth - level)
    sample = attenuation[::4, ::4][anatomy[::4, ::4]]
    low, high = np.percentile(sample, (1.0, 99.5))
    unit = (attenuation - np.float32(low)) * np.float32(1 / max(float(high - low), 1e-6))
    if technique.detail > 0:
        # Detail enhancement (the unsharp mask of a vendor's multi-scale processing), applied to every
        # edge alike: bone margins, trabeculae, fracture lines, mimics and noise.
        # A band-pass lift: the finest scale (single-pixel quantum mottle) is left as it is, as
        # vendors' noise suppression does.
        sigma = technique.detail_sigma / geometry.pitch
        blurred = wide_blur(unit, sigma) if sigma > 4 else small_blur(unit, sigma)
        unit += np.float32(technique.detail) * (small_blur(unit, DETAIL_FLOOR / geometry.pitch) - blurred)
    if technique.soft_level > 0:
        # The display LUT: a power curve that puts the median anatomy pixel (the soft tissue of the
        # pelvis) at ``soft_level``, so soft tissue is mid-grey and bone bright, as films are read.
        median = float(np.clip(np.median(unit[::4, ::4][anatomy[::4, ::4]]), 0.05, 0.95))
        gamma = math.log(technique.soft_level) / math.log(median)
        np.clip(unit, 0, None, out=unit)
        unit **= np.float32(gamma)
    span = technique.window_high - technique.window_low
    image = unit * np.float32(span) + np.float32(technique.window_low)
    return Exposure(counts=counts, image=np.clip(image, 0, 1).astype(np.float32), field=field > 0.5)
