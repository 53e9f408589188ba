"""Export a :class:`~cds_service.training.model.CamNet` to ONNX and write its Triton config.

The ONNX graph takes ``image`` (UINT8 [B, 1, S, S]) and returns ``logits`` (FP32 [B, C]) and
``cam`` (FP32 [B, C, h, w]), batch dimension dynamic. ``config.pbtxt`` is the production GPU
Triton's (onnxruntime backend, TensorRT FP16 accelerator with an engine cache, dynamic batching,
warm-up); the local CPU launcher derives its python-backend twin from it. Model metadata
(class names, the two operating points, training data, disclaimer) travels in its ``parameters``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cds_service.inference.triton_server import model_versions
from cds_service.training.model import CamNet, ServingNet

UNTRAINED_DISCLAIMER = "Untrained model: outputs are meaningless."
SYNTHETIC_DISCLAIMER = "Trained on synthetic phantoms only; not for clinical use."


@dataclass
class ExportMetadata:
    """What travels with the model into every output."""

    class_names: tuple[str, ...]
    architecture: str
    input_size: int
    training_data: str = "untrained"
    operating_threshold: float = 0.5
    sensitivity: float | None = None
    specificity: float | None = None
    disclaimer: str = UNTRAINED_DISCLAIMER
    temperature: float = 1.0  # calibration: the service divides the logits by it before the softmax
    # Prior shift (domain.prior_shift): the validation's share of positive crops, and the share the
    # served probabilities are for. None = not stored (no shift).
    calibration_prevalence: float | None = None
    prevalence: float | None = None
    # The second operating point (calibration.specificity_threshold, Seed A's specificity) on the
    # served scale, with its validation sensitivity and specificity; None = not stored, and the
    # service falls back to the Youden point or to none (inference.client.model_info_from_config).
    high_specificity_threshold: float | None = None
    high_specificity_sensitivity: float | None = None
    high_specificity_specificity: float | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def parameters(self) -> dict[str, str]:
        values = {
            "class_names": ",".join(self.class_names),
            "architecture": self.architecture,
            "input_size": str(self.input_size),
            "training_data": self.training_data,
            "operating_threshold": f"{self.operating_threshold:.6f}",
            "sensitivity": _optional(self.sensitivity),
            "specificity": _optional(self.specificity),
            "disclaimer": self.disclaimer,
            "temperature": f"{self.temperature:.6f}",
            "calibration_prevalence": _optional(self.calibration_prevalence),
            "prevalence": _optional(self.prevalence),
            "high_specificity_threshold": _optional(self.high_specificity_threshold),
            "high_specificity_sensitivity": _optional(self.high_specificity_sensitivity),
            "high_specificity_specificity": _optional(self.high_specificity_specificity),
        }
        values.update(self.extra)
        return values


def _optional(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def export_onnx(net: CamNet, path: Path, input_size: int) -> tuple[int, int]:
    """Write the ONNX file; returns the CAM's (h, w)."""
    serving = ServingNet(net).eval()
    example = torch.zeros(2, 1, input_size, input_size, dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        _, cam = serving(example)
        torch.onnx.export(
            serving,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logits", "cam"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "cam": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return int(cam.shape[2]), int(cam.shape[3])


def _escape(value: str) -> str:
    """A protobuf text-format string literal body (quotes and backslashes escaped)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def triton_config(name: str, metadata: ExportMetadata, cam_hw: tuple[int, int]) -> str:
    """The production ``config.pbtxt`` (protobuf text format)."""
    size, classes = metadata.input_size, len(metadata.class_names)
    params = "\n".join(
        f'parameters {{ key: "{key}" value {{ string_value: "{_escape(value)}" }} }}'
        for key, value in metadata.parameters().items()
    )
    return f"""# Production GPU Triton: onnxruntime backend with the TensorRT FP16 accelerator.
# The local CPU launcher (cds_service.inference.triton_server) derives a python-backend twin.
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: {{ latest: {{ num_versions: 1 }} }}
input [ {{ name: "image" data_type: TYPE_UINT8 dims: [ 1, {size}, {size} ] }} ]
output [
  {{ name: "logits" data_type: TYPE_FP32 dims: [ {classes} ] }},
  {{ name: "cam" data_type: TYPE_FP32 dims: [ {classes}, {cam_hw[0]}, {cam_hw[1]} ] }}
]
dynamic_batching {{ max_queue_delay_microseconds: 500 }}
instance_group [ {{ kind: KIND_GPU count: 1 }} ]
optimization {{
  execution_accelerators {{
    gpu_execution_accelerator [
      {{
        name: "tensorrt"
        parameters {{ key: "precision_mode" value: "FP16" }}
        parameters {{ key: "trt_engine_cache_enable" value: "true" }}
        parameters {{ key: "trt_engine_cache_path" value: "/models/trt-cache" }}
      }}
    ]
  }}
}}
model_warmup [
  {{
    name: "zeros_batch_1"
    batch_size: 1
    inputs {{ key: "image" value: {{ data_type: TYPE_UINT8 dims: [ 1, {size}, {size} ] zero_data: true }} }}
  }}
]
{params}
"""


def export_model(
    net: CamNet, repository: Path, name: str, metadata: ExportMetadata, version: int | None = None
) -> Path:
    """Export ``net`` as ``repository/name/version/model.onnx`` with its ``config.pbtxt``.

    By default the version is one above the newest already there (1 for a new model), and the older
    version folders are removed: new weights (or a new threshold or temperature) are a new served
    version, so the result store, keyed by ``name@version``, never answers from the old model's results.
    """
    earlier = model_versions(repository, name)
    version = version if version is not None else (earlier[-1] + 1 if earlier else 1)
    onnx_path = repository / name / str(version) / "model.onnx"
    cam_hw = export_onnx(net, onnx_path, metadata.input_size)
    (repository / name / "config.pbtxt").write_text(triton_config(name, metadata, cam_hw))
    for old in earlier:
        if old != version:
            shutil.rmtree(repository / name / str(old))
    return onnx_path
