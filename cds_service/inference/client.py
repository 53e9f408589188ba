"""Triton gRPC client (tritonclient.grpc.aio): both hips, both models, one round trip.

The ``hip_analysis`` ensemble in ``model_repository/`` takes a batch of hip crops and returns the
fracture and Garden models' logits and class-activation maps together. Model metadata (class
names, operating threshold, validation sensitivity/specificity, training data, disclaimer) travels
in each model's ``config.pbtxt`` ``parameters`` and is read once per client.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcclient
from opentelemetry import propagate
from tritonclient.utils import InferenceServerException

from cds_service.errors import InferenceError

FRACTURE_MODEL = "fracture"
GARDEN_MODEL = "garden"


@dataclass(frozen=True)
class ModelInfo:
    """What the service must know about one served model (from its Triton config)."""

    name: str
    version: str
    class_names: tuple[str, ...]
    input_size: int
    architecture: str
    training_data: str
    disclaimer: str
    operating_threshold: float
    sensitivity: float | None
    specificity: float | None

    @property
    def untrained(self) -> bool:
        return self.training_data == "untrained"

    @property
    def label(self) -> str:
        """``name@version`` as shown on cards and in reports."""
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class HipInference:
    """Raw model outputs for a batch of hips (first axis = hip)."""

    fracture_logits: np.ndarray  # [B, 2]
    fracture_cam: np.ndarray  # [B, 2, h, w]
    garden_logits: np.ndarray  # [B, 4]
    garden_cam: np.ndarray  # [B, 4, h, w]


def _optional_float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def model_info_from_config(config: dict, version: str) -> ModelInfo:
    """Build :class:`ModelInfo` from a model config as JSON (``get_model_config(as_json=True)``)."""
    params = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
    dims = [int(d) for d in config["input"][0]["dims"]]
    return ModelInfo(
        name=config["name"],
        version=version,
        class_names=tuple(name.strip() for name in params.get("class_names", "").split(",") if name.strip()),
        input_size=int(params.get("input_size") or dims[-1]),
        architecture=params.get("architecture", "unknown"),
        training_data=params.get("training_data", "unknown"),
        disclaimer=params.get("disclaimer", ""),
        operating_threshold=_optional_float(params.get("operating_threshold", "")) or 0.5,
        sensitivity=_optional_float(params.get("sensitivity", "")),
        specificity=_optional_float(params.get("specificity", "")),
    )


class TritonInferenceClient:
    """Async client for the ``hip_analysis`` ensemble; one instance per process (it holds a channel)."""

    def __init__(self, url: str, ensemble: str = "hip_analysis", timeout_s: float = 10.0) -> None:
        self.url = url
        self.ensemble = ensemble
        self.timeout_s = timeout_s
        self._client: grpcclient.InferenceServerClient | None = None
        self._models: dict[str, ModelInfo] | None = None
        self._lock = asyncio.Lock()

    def _grpc(self) -> grpcclient.InferenceServerClient:
        if self._client is None:
            self._client = grpcclient.InferenceServerClient(url=self.url)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def models(self) -> dict[str, ModelInfo]:
        """Fracture and Garden model metadata, read from Triton once."""
        async with self._lock:
            if self._models is None:
                try:
                    self._models = {name: await self._model_info(name) for name in (FRACTURE_MODEL, GARDEN_MODEL)}
                except InferenceServerException as exc:
                    raise InferenceError(f"Triton model metadata unavailable: {exc.message()}") from exc
            return self._models

    async def _model_info(self, name: str) -> ModelInfo:
        client = self._grpc()
        config = await asyncio.wait_for(client.get_model_config(name, as_json=True), timeout=self.timeout_s)
        metadata = await asyncio.wait_for(client.get_model_metadata(name, as_json=True), timeout=self.timeout_s)
        versions = metadata.get("versions") or ["1"]
        return model_info_from_config(config["config"], version=str(max(versions, key=int)))

    async def infer(self, crops: np.ndarray) -> HipInference:
        """Run both models on a uint8 batch [B, S, S] of hip crops in one gRPC round trip."""
        if crops.dtype != np.uint8 or crops.ndim != 3:
            raise ValueError("crops must be uint8 [B, S, S]")
        batch = np.ascontiguousarray(crops[:, None, :, :])
        inputs = [grpcclient.InferInput("image", list(batch.shape), "UINT8")]
        inputs[0].set_data_from_numpy(batch)
        names = ["fracture_logits", "fracture_cam", "garden_logits", "garden_cam"]
        outputs = [grpcclient.InferRequestedOutput(name) for name in names]
        headers: dict[str, str] = {}
        propagate.inject(headers)  # W3C traceparent: Triton's own spans join our trace
        try:
            result = await asyncio.wait_for(
                self._grpc().infer(
                    self.ensemble, inputs, outputs=outputs, headers=headers, client_timeout=self.timeout_s
                ),
                timeout=self.timeout_s + 1,
            )
        except TimeoutError as exc:
            raise InferenceError(f"Triton did not answer within {self.timeout_s:.1f} s") from exc
        except InferenceServerException as exc:
            raise InferenceError(f"Triton inference failed: {exc.message()}") from exc
        arrays = {name: result.as_numpy(name) for name in names}
        missing = [name for name, value in arrays.items() if value is None or value.shape[0] != len(crops)]
        if missing:
            raise InferenceError(f"Triton answered without usable outputs: {', '.join(missing)}")
        return HipInference(**arrays)
