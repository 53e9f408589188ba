"""The naive way to answer the same study: the yardstick ``bench/e2e.py`` prints its ratio against.

What a first prototype would write, with each library's obvious call:

* decode: ``pydicom`` ``pixel_array`` → ``apply_modality_lut`` → ``apply_voi_lut`` on the whole
  image in float64, min-max to 8 bits, MONOCHROME1 inverted;
* split: the vertical midline, each half resized with PIL (bilinear) to the model input;
* infer + explain: eager PyTorch, the same timm architecture as the shipped model, both models and
  both hips, with pytorch-grad-cam's ``GradCAM`` (a backward pass per hip and model);
* overlay: each CAM upsampled with PIL, coloured with matplotlib's ``jet``, blended with the
  radiograph and saved as PNG (default compression).

The weights are random: the cost of a forward/backward pass does not depend on their values, and
the shipped weights exist only as ONNX graphs. Needs the ``[train]`` extra (torch, timm, grad-cam).

    .venv/bin/python bench/baseline.py FILE.dcm [--runs 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut


class NaiveHipAnalysis:
    """Fracture + Garden with Grad-CAM, eager PyTorch, one hip at a time."""

    def __init__(self, architecture: str, input_size: int) -> None:
        import timm
        import torch

        torch.manual_seed(0)
        self.torch = torch
        self.input_size = input_size
        self.models = [
            timm.create_model(architecture, pretrained=False, num_classes=classes).eval() for classes in (2, 4)
        ]

    def decode(self, path: Path) -> np.ndarray:
        ds = pydicom.dcmread(path)
        values = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float64)
        grey = (values - values.min()) / max(values.max() - values.min(), 1e-9)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            grey = 1.0 - grey
        return (grey * 255).astype(np.uint8)

    def hips(self, grey: np.ndarray) -> list[np.ndarray]:
        middle = grey.shape[1] // 2
        halves = [grey[:, :middle], np.ascontiguousarray(grey[:, middle:][:, ::-1])]
        size = (self.input_size, self.input_size)
        return [np.asarray(Image.fromarray(half).resize(size, Image.BILINEAR)) for half in halves]

    def explain(self, crop: np.ndarray) -> list[np.ndarray]:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        x = self.torch.from_numpy(np.array(crop)).float().div(255).expand(1, 3, -1, -1).contiguous()
        maps = []
        for model in self.models:
            with self.torch.no_grad():
                target = int(model(x).argmax())
            layer = model.get_submodule("layer4") if hasattr(model, "layer4") else list(model.children())[-3]
            with GradCAM(model=model, target_layers=[layer]) as cam:
                maps.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0])
        return maps

    def overlay(self, grey: np.ndarray, maps: list[np.ndarray]) -> bytes:
        from matplotlib import colormaps

        middle = grey.shape[1] // 2
        heat = np.zeros(grey.shape, np.float32)
        for side, cam in enumerate(maps):
            up = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((middle, grey.shape[0])))
            heat[:, middle * side : middle * (side + 1)] = up if side == 0 else up[:, ::-1]
        rgb = (colormaps["jet"](heat)[..., :3] * 255).astype(np.uint8)
        blend = Image.blend(Image.fromarray(grey).convert("RGB"), Image.fromarray(rgb), 0.35)
        buffer = io.BytesIO()
        blend.save(buffer, format="PNG")
        return buffer.getvalue()

    def __call__(self, path: Path) -> dict[str, float]:
        """One study end to end; milliseconds per step."""
        times: dict[str, float] = {}
        started = time.perf_counter()
        grey = self.decode(path)
        times["decode"] = time.perf_counter()
        crops = self.hips(grey)
        times["split"] = time.perf_counter()
        fracture_maps = [self.explain(crop)[0] for crop in crops]
        times["infer + Grad-CAM"] = time.perf_counter()
        self.overlay(grey, fracture_maps)
        times["overlay PNG"] = time.perf_counter()
        previous, result = started, {}
        for name, stamp in times.items():
            result[name] = 1000 * (stamp - previous)
            previous = stamp
        result["total"] = 1000 * (previous - started)
        return result


def measure(path: Path, architecture: str, input_size: int, runs: int) -> dict[str, list[float]]:
    """Per-step milliseconds of ``runs`` naive analyses of ``path`` (after one warm-up)."""
    naive = NaiveHipAnalysis(architecture, input_size)
    naive(path)
    results: dict[str, list[float]] = {}
    for _ in range(runs):
        for name, ms in naive(path).items():
            results.setdefault(name, []).append(ms)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path)
    parser.add_argument("--architecture", default="test_resnet")
    parser.add_argument("--input-size", type=int, default=192)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for name, values in measure(args.file, args.architecture, args.input_size, args.runs).items():
        print(f"{name:<20}{statistics.median(values):>10.1f} ms")


if __name__ == "__main__":
    main()
