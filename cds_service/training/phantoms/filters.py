"""Image filters shared by the renderers and the site encoding (numpy only: the demo has no scipy)."""

from __future__ import annotations

import numpy as np


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (PIL cannot blur float images)."""
    radius = max(1, int(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(image, radius, mode="edge")
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, rows).astype(np.float32)
