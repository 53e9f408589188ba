"""Triton gRPC client (tritonclient.grpc.aio): both hips, both models, one round trip.

The ``hip_analysis`` ensemble in ``model_repository/`` takes a batch of hip crops and returns the
fracture and Garden models' logits and class-activation maps together. Model metadata (class
names, operating threshold, validation sensitivity/specificity, training data, disclaimer) travels
in each model's ``config.pbtxt`` ``parameters``.

How the client behaves towards Triton:

* **One channel** for the client's life (created on first use, closed by :meth:`close`).
* **A deadline on every call**: a public call (:meth:`models`, :meth:`infer`) has ``timeout_s`` in
  all, and each gRPC call inside it gets what is left of that as its ``client_timeout``.
  :meth:`ready` has its own short deadline and never raises.
* **Retries only for UNAVAILABLE** (Triton down, restarting, not yet listening): exponential
  backoff with a little jitter, at most ``max_attempts`` attempts, never past the call's deadline.
  Every other failure (INVALID_ARGUMENT, NOT_FOUND, DEADLINE_EXCEEDED, …) raises
  :class:`~cds_service.errors.InferenceError` at once.
* **The model contract** is checked at first use, after every reconnection (an UNAVAILABLE seen,
  or the channel found disconnected before a call) and whenever a model's version changes: names,
  tensor names, dtypes and shapes of ``fracture``, ``garden`` and the ensemble, and the class names
  (``cds_service.training.config``). A mismatch raises :class:`ContractMismatch` (an
  InferenceError) naming model, field, expected and found.
* **New model versions**: the cached :class:`ModelInfo` (whose ``label`` = ``name@version`` is part
  of the result-cache key) is re-read when the served versions change — checked at most every
  ``refresh_s`` seconds, and at once when an inference answer carries another ensemble version.
* **Metrics** (``cds_service.metrics``): ``TRITON_LATENCY`` per inference call (label: the
  ensemble), ``TRITON_ERRORS`` per failed call by gRPC code (``CONTRACT_MISMATCH`` for a contract
  violation), ``TRITON_RETRIES`` per retry.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np
import tritonclient.grpc as grpc_sync
import tritonclient.grpc.aio as grpcclient
from opentelemetry import propagate
from tritonclient.utils import InferenceServerException

from cds_service.domain import HipInference, ModelInfo
from cds_service.errors import InferenceError
from cds_service.metrics import TRITON_ERRORS, TRITON_LATENCY, TRITON_RETRIES, set_served_models
from cds_service.training.calibration import PUBLISHED_SPECIFICITY
from cds_service.training.config import FRACTURE_CLASSES, FRACTURE_SITE_CLASSES, GARDEN_CLASSES

log = logging.getLogger(__name__)

FRACTURE_MODEL = "fracture"
GARDEN_MODEL = "garden"
#: The class lists each model may serve: the fracture model with or without the fracture site.
ACCEPTED_CLASSES: dict[str, tuple[tuple[str, ...], ...]] = {
    FRACTURE_MODEL: (FRACTURE_CLASSES, FRACTURE_SITE_CLASSES),
    GARDEN_MODEL: (GARDEN_CLASSES,),
}
ENSEMBLE_OUTPUTS = ("fracture_logits", "fracture_cam", "garden_logits", "garden_cam")
RETRYABLE_CODES = frozenset({"UNAVAILABLE"})
CONTRACT_MISMATCH = "CONTRACT_MISMATCH"  # TRITON_ERRORS code for a model that is not what the service expects

_T = TypeVar("_T")
_SLACK_S = 0.5  # asyncio's own guard beyond the gRPC deadline, should a call ever ignore it


def _optional_float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def high_specificity_threshold(params: dict[str, str]) -> float | None:
    """The model's high-specificity operating point from its config ``parameters``.

    The stored ``high_specificity_threshold`` (:func:`cds_service.training.calibration.specificity_threshold`);
    for a model exported before it was stored, the stored Youden point (``youden_threshold``) stands in
    only when its validation specificity (``youden_specificity``) reaches Seed A's 96.9 %
    (:data:`~cds_service.training.calibration.PUBLISHED_SPECIFICITY`), else there is none (None), and
    the card raises no ``critical`` (:func:`cds_service.cdshooks.cards.tier`).
    """
    stored = _optional_float(params.get("high_specificity_threshold", ""))
    if stored is not None:
        return stored
    youden_specificity = _optional_float(params.get("youden_specificity", ""))
    if youden_specificity is not None and youden_specificity >= PUBLISHED_SPECIFICITY:
        return _optional_float(params.get("youden_threshold", ""))
    return None


def model_info_from_config(config: dict, version: str) -> ModelInfo:
    """Build :class:`ModelInfo` from a model config as JSON (``get_model_config(as_json=True)``).

    Both operating points are read: ``operating_threshold`` and :func:`high_specificity_threshold`.
    """
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
        temperature=_optional_float(params.get("temperature", "")) or 1.0,
        calibration_prevalence=_optional_float(params.get("calibration_prevalence", "")),
        prevalence=_optional_float(params.get("prevalence", "")),
        high_specificity_threshold=high_specificity_threshold(params),
    )


# The model contract --------------------------------------------------------------------------
class ContractMismatch(InferenceError):
    """A served model is not the one the service was written for (an :class:`InferenceError`)."""

    def __init__(self, model: str, field: str, expected: object, found: object) -> None:
        self.model, self.field, self.expected, self.found = model, field, expected, found
        super().__init__(
            f"Triton model contract mismatch: model {model!r}, {field}: expected {expected}, found {found}"
        )


def _shape(tensor: dict) -> list[int]:
    return [int(d) for d in tensor.get("shape", [])]


def _tensors(model: str, metadata: dict, kind: str, expected: tuple[str, ...]) -> dict[str, dict]:
    tensors = {t["name"]: t for t in metadata.get(kind, [])}
    if sorted(tensors) != sorted(expected):
        raise ContractMismatch(model, f"{kind} names", sorted(expected), sorted(tensors))
    return tensors


def _check_dtype(model: str, tensor: dict, expected: str) -> None:
    if tensor.get("datatype") != expected:
        raise ContractMismatch(model, f"{tensor['name']} datatype", expected, tensor.get("datatype"))


def _versions(metadata: dict) -> str:
    versions = metadata.get("versions") or ["1"]
    return str(max(versions, key=int))


def check_classifier(name: str, metadata: dict, config: dict, accepted: tuple[tuple[str, ...], ...]) -> ModelInfo:
    """Check one classifier (``fracture`` / ``garden``) against the contract; its :class:`ModelInfo`.

    ``metadata`` and ``config`` are Triton's answers as JSON. Expected: input ``image`` UINT8
    ``[B, 1, S, S]``; the ``class_names`` parameter one of ``accepted``; outputs ``logits`` FP32
    ``[B, C]`` and ``cam`` FP32 ``[B, C, h, w]`` with C its number of classes; ``input_size`` (if set) = S.
    """
    if metadata.get("name") != name or config.get("name") != name:
        raise ContractMismatch(name, "name", name, metadata.get("name") or config.get("name"))
    image = _tensors(name, metadata, "inputs", ("image",))["image"]
    _check_dtype(name, image, "UINT8")
    shape = _shape(image)
    if len(shape) != 4 or shape[0] != -1 or shape[1] != 1 or shape[2] <= 0 or shape[2] != shape[3]:
        raise ContractMismatch(name, "image shape", "[-1, 1, S, S] (batch, 1 channel, square S > 0)", shape)
    size = shape[2]
    outputs = _tensors(name, metadata, "outputs", ("cam", "logits"))
    info = model_info_from_config(config, version=_versions(metadata))
    if info.class_names not in accepted:
        expected = " or ".join(",".join(classes) for classes in accepted)
        raise ContractMismatch(name, "class_names", expected, ",".join(info.class_names) or "(none)")
    count = len(info.class_names)
    for tensor in outputs.values():
        _check_dtype(name, tensor, "FP32")
    if _shape(outputs["logits"]) != [-1, count]:
        raise ContractMismatch(name, "logits shape", [-1, count], _shape(outputs["logits"]))
    cam = _shape(outputs["cam"])
    if len(cam) != 4 or cam[:2] != [-1, count] or min(cam[2:]) <= 0:
        raise ContractMismatch(name, "cam shape", f"[-1, {count}, h, w] (h, w > 0)", cam)
    if info.input_size != size:
        raise ContractMismatch(name, "parameters.input_size", size, info.input_size)
    return info


def check_ensemble(
    name: str, metadata: dict, config: dict, models: dict[str, ModelInfo], cams: dict[str, list[int]]
) -> str:
    """Check the ensemble against the contract and the checked models; returns its served version.

    Expected: input ``image`` UINT8 ``[B, 1, S|-1, S|-1]``; outputs ``{model}_logits`` FP32 ``[B, C|-1]``
    and ``{model}_cam`` FP32 ``[B, C|-1, h|-1, w|-1]``; steps routing ``image`` to ``fracture`` and
    ``garden`` and their ``logits``/``cam`` to those outputs.
    """
    if metadata.get("name") != name:
        raise ContractMismatch(name, "name", name, metadata.get("name"))
    image = _tensors(name, metadata, "inputs", ("image",))["image"]
    _check_dtype(name, image, "UINT8")
    size = models[FRACTURE_MODEL].input_size
    shape = _shape(image)
    if len(shape) != 4 or shape[:2] != [-1, 1] or any(d not in (-1, size) for d in shape[2:]):
        raise ContractMismatch(name, "image shape", f"[-1, 1, {size}|-1, {size}|-1]", shape)
    outputs = _tensors(name, metadata, "outputs", ENSEMBLE_OUTPUTS)
    for model, info in models.items():
        count = len(info.class_names)
        logits, cam = outputs[f"{model}_logits"], outputs[f"{model}_cam"]
        _check_dtype(name, logits, "FP32")
        _check_dtype(name, cam, "FP32")
        if len(_shape(logits)) != 2 or _shape(logits)[1] not in (-1, count):
            raise ContractMismatch(name, f"{model}_logits shape", f"[-1, {count}|-1]", _shape(logits))
        expected_cam = [-1, count, *cams[model][2:]]
        found_cam = _shape(cam)
        if len(found_cam) != 4 or any(f not in (-1, e) for f, e in zip(found_cam[1:], expected_cam[1:], strict=True)):
            raise ContractMismatch(name, f"{model}_cam shape", f"{expected_cam} (or -1 per axis)", found_cam)
    steps = config.get("ensemble_scheduling", {}).get("step", [])
    routed = {
        step.get("model_name"): dict(step.get("output_map", {}))
        for step in steps
        if step.get("input_map", {}).get("image") == "image"
    }
    for model in models:
        expected_map = {"logits": f"{model}_logits", "cam": f"{model}_cam"}
        if routed.get(model) != expected_map:
            raise ContractMismatch(
                name, f"ensemble step for {model!r}", f"image→image, {expected_map}", routed.get(model, "(no step)")
            )
    return _versions(metadata)


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation of this task that a gRPC error has hidden.

    Python 3.11's ``wait_for`` drops the caller's cancellation when the wrapped call fails at the same
    moment (and gRPC may report one as a status): the retries would then run on past the caller's
    ``asyncio.timeout`` — a hook answered 1.6 s after its deadline while Triton was down.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _code(exc: InferenceServerException) -> str:
    """The gRPC status code name (``UNAVAILABLE``) of a tritonclient error."""
    return (exc.status() or "UNKNOWN").removeprefix("StatusCode.")


def _channel_args() -> list[tuple[str, Any]]:
    """tritonclient's default channel options plus a quicker reconnect after Triton comes back.

    gRPC waits 1 s, then 1.6 s, … (up to 120 s) before it tries to reconnect a broken channel, and
    meanwhile fails every call with UNAVAILABLE; our own retries would be useless during that time.
    """
    keepalive = grpc_sync.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", grpc_sync.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpc_sync.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


@dataclass(frozen=True)
class _Contract:
    """What was read and checked at one time: the models' infos and the served versions."""

    models: dict[str, ModelInfo]
    versions: dict[str, str]  # fracture, garden and the ensemble
    checked_at: float


class TritonInferenceClient:
    """Async client for the ``hip_analysis`` ensemble; one instance per process (it holds a channel).

    ``timeout_s`` bounds every public call, retries included. ``max_attempts``, ``backoff_s`` and
    ``max_backoff_s`` shape the retries after UNAVAILABLE; ``refresh_s`` is how often (at most) the
    served model versions are compared with the cached ones; ``ready_timeout_s`` is :meth:`ready`'s
    deadline.
    """

    def __init__(
        self,
        url: str,
        ensemble: str = "hip_analysis",
        timeout_s: float = 10.0,
        *,
        max_attempts: int = 5,
        backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
        refresh_s: float = 10.0,
        ready_timeout_s: float = 1.0,
    ) -> None:
        self.url = url
        self.ensemble = ensemble
        self.timeout_s = timeout_s
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.refresh_s = refresh_s
        self.ready_timeout_s = ready_timeout_s
        self._client: grpcclient.InferenceServerClient | None = None
        self._contract: _Contract | None = None
        self._stale = False  # set by UNAVAILABLE (a reconnection follows) or a new version seen
        self._lock = asyncio.Lock()

    def _grpc(self) -> grpcclient.InferenceServerClient:
        if self._client is None:
            self._client = grpcclient.InferenceServerClient(url=self.url, channel_args=_channel_args())
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    # One gRPC call: deadline, retries on UNAVAILABLE, metrics ----------------------------------
    async def _call(self, model: str, what: str, call: Callable[[float], Awaitable[_T]], deadline: float) -> _T:
        """``call(client_timeout)`` with what is left until ``deadline``; retried only on UNAVAILABLE."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - loop.time()
            if remaining <= 0:
                TRITON_ERRORS.labels(model=model, code="DEADLINE_EXCEEDED").inc()
                raise InferenceError(f"Triton {what} for model {model!r}: no time left within {self.timeout_s:.1f} s")
            try:
                return await asyncio.wait_for(call(remaining), timeout=remaining + _SLACK_S)
            except TimeoutError as exc:
                TRITON_ERRORS.labels(model=model, code="DEADLINE_EXCEEDED").inc()
                raise InferenceError(
                    f"Triton {what} for model {model!r} did not answer within {self.timeout_s:.1f} s"
                ) from exc
            except InferenceServerException as exc:
                _raise_if_cancelled()
                code = _code(exc)
                if code in RETRYABLE_CODES:
                    self._stale = True  # whatever answers next may be another Triton: check the contract again
                    delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                    delay += random.uniform(0, 0.2 * delay)  # noqa: S311 - jitter, not cryptography
                    if attempt < self.max_attempts and loop.time() + delay < deadline:
                        TRITON_RETRIES.labels(model=model).inc()
                        # DEBUG: during an outage every waiting hook retries every call; the count is in
                        # hipcad_triton_retries_total and the final failure is logged once by the caller.
                        log.debug("Triton %s for %s: %s, retry %d in %.2f s", what, model, code, attempt, delay)
                        await asyncio.sleep(delay)
                        continue
                elif code == "INVALID_ARGUMENT":
                    self._stale = True  # the request no longer fits what is served: read the contract again
                TRITON_ERRORS.labels(model=model, code=code).inc()
                if code == "DEADLINE_EXCEEDED":
                    raise InferenceError(
                        f"Triton {what} for model {model!r} did not answer within {self.timeout_s:.1f} s "
                        f"(DEADLINE_EXCEEDED at {self.url})"
                    ) from exc
                tries = f" after {attempt} attempts in {loop.time() - started:.1f} s" if attempt > 1 else ""
                raise InferenceError(
                    f"Triton {what} for model {model!r} failed with {code}{tries} at {self.url}: {exc.message()}"
                ) from exc

    # The model contract and versions -------------------------------------------------------------
    async def _read_contract(self, deadline: float) -> _Contract:
        client = self._grpc()
        names = (FRACTURE_MODEL, GARDEN_MODEL, self.ensemble)

        async def read(name: str) -> tuple[dict, dict]:
            metadata = await self._call(
                name, "metadata", lambda t: client.get_model_metadata(name, as_json=True, client_timeout=t), deadline
            )
            config = await self._call(
                name, "config", lambda t: client.get_model_config(name, as_json=True, client_timeout=t), deadline
            )
            return metadata, config["config"]

        answers = dict(zip(names, await asyncio.gather(*(read(name) for name in names)), strict=True))
        try:
            models = {
                name: check_classifier(name, *answers[name], ACCEPTED_CLASSES[name])
                for name in (FRACTURE_MODEL, GARDEN_MODEL)
            }
            if models[GARDEN_MODEL].input_size != models[FRACTURE_MODEL].input_size:
                raise ContractMismatch(
                    GARDEN_MODEL,
                    "image shape (the same crops go to both models)",
                    models[FRACTURE_MODEL].input_size,
                    models[GARDEN_MODEL].input_size,
                )
            cams = {name: _shape(next(t for t in answers[name][0]["outputs"] if t["name"] == "cam")) for name in models}
            ensemble_version = check_ensemble(self.ensemble, *answers[self.ensemble], models, cams)
        except ContractMismatch as exc:
            TRITON_ERRORS.labels(model=exc.model, code=CONTRACT_MISMATCH).inc()
            log.error("%s", exc)
            raise
        versions = {name: info.version for name, info in models.items()} | {self.ensemble: ensemble_version}
        set_served_models(versions)
        log.info("Triton models checked at %s: %s", self.url, ", ".join(f"{n}@{v}" for n, v in versions.items()))
        return _Contract(models, versions, time.monotonic())

    async def _served_versions(self, deadline: float) -> dict[str, str]:
        client = self._grpc()
        names = (FRACTURE_MODEL, GARDEN_MODEL, self.ensemble)

        async def version(name: str) -> str:
            metadata = await self._call(
                name, "metadata", lambda t: client.get_model_metadata(name, as_json=True, client_timeout=t), deadline
            )
            return _versions(metadata)

        return dict(zip(names, await asyncio.gather(*(version(name) for name in names)), strict=True))

    def _connection_lost(self) -> bool:
        """The channel is not connected now: the next call (re)connects, maybe to another Triton."""
        channel = getattr(self._client, "_channel", None)
        if channel is None:
            return True
        try:
            return channel.get_state(try_to_connect=False) != grpc.ChannelConnectivity.READY
        except Exception:  # a tritonclient without the attribute: rely on UNAVAILABLE alone
            return False

    @property
    def served_versions(self) -> dict[str, str]:
        """The versions of fracture, garden and the ensemble at the last check (empty before the first)."""
        return dict(self._contract.versions) if self._contract else {}

    async def _current(self, deadline: float) -> _Contract:
        async with self._lock:
            contract = self._contract
            if contract is None or self._stale or self._connection_lost():
                self._stale = False
                self._contract = None
                contract = self._contract = await self._read_contract(deadline)
            elif time.monotonic() - contract.checked_at >= self.refresh_s:
                if await self._served_versions(deadline) != contract.versions:
                    log.info("Triton serves new model versions: reading the models again")
                    self._contract = None
                    contract = await self._read_contract(deadline)
                else:
                    contract = _Contract(contract.models, contract.versions, time.monotonic())
                self._contract = contract
            return contract

    async def models(self) -> dict[str, ModelInfo]:
        """Fracture and Garden model metadata, checked against the contract, for the served versions."""
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        return dict((await self._current(deadline)).models)

    # Readiness --------------------------------------------------------------------------------
    async def ready(self) -> bool:
        """True when Triton is live, the three models are ready and they meet the model contract
        (a model the service cannot use makes the replica unready); False otherwise, never raises."""
        timeout = min(self.ready_timeout_s, self.timeout_s)
        try:
            client = self._grpc()

            async def check() -> bool:
                if not await client.is_server_live(client_timeout=timeout):
                    return False
                names = (FRACTURE_MODEL, GARDEN_MODEL, self.ensemble)
                answers = await asyncio.gather(*(client.is_model_ready(n, client_timeout=timeout) for n in names))
                if not all(answers):
                    return False
                await self._current(asyncio.get_running_loop().time() + timeout)  # ContractMismatch → False
                return True

            return bool(await asyncio.wait_for(check(), timeout=timeout + _SLACK_S))
        except Exception as exc:  # a readiness probe answers False, whatever went wrong
            log.debug("Triton not ready at %s: %s", self.url, type(exc).__name__)
            return False

    # Inference --------------------------------------------------------------------------------
    async def infer(self, crops: np.ndarray) -> HipInference:
        """Run both models on a uint8 batch [B, S, S] of hip crops in one gRPC round trip."""
        if crops.dtype != np.uint8 or crops.ndim != 3:
            raise ValueError("crops must be uint8 [B, S, S]")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        contract = await self._current(deadline)
        batch = np.ascontiguousarray(crops[:, None, :, :])
        inputs = [grpcclient.InferInput("image", list(batch.shape), "UINT8")]
        inputs[0].set_data_from_numpy(batch)
        outputs = [grpcclient.InferRequestedOutput(name) for name in ENSEMBLE_OUTPUTS]
        headers: dict[str, str] = {}
        propagate.inject(headers)  # W3C traceparent: Triton's own spans join our trace
        client = self._grpc()
        started = time.perf_counter()
        try:
            result = await self._call(
                self.ensemble,
                "inference",
                lambda t: client.infer(self.ensemble, inputs, outputs=outputs, headers=headers, client_timeout=t),
                deadline,
            )
        finally:
            TRITON_LATENCY.labels(model=self.ensemble).observe(time.perf_counter() - started)
        served = result.get_response().model_version
        if served and served != contract.versions.get(self.ensemble):
            self._stale = True  # another ensemble version answered: read the models again next time
        arrays = {name: result.as_numpy(name) for name in ENSEMBLE_OUTPUTS}
        missing = [name for name, value in arrays.items() if value is None or value.shape[0] != len(crops)]
        if missing:
            TRITON_ERRORS.labels(model=self.ensemble, code=CONTRACT_MISMATCH).inc()
            raise InferenceError(f"Triton answered without usable outputs: {', '.join(missing)}")
        for model, info in contract.models.items():
            for output, ndim in ((f"{model}_logits", 2), (f"{model}_cam", 4)):
                shape = arrays[output].shape
                if len(shape) != ndim or shape[1] != len(info.class_names):
                    self._stale = True
                    TRITON_ERRORS.labels(model=self.ensemble, code=CONTRACT_MISMATCH).inc()
                    raise ContractMismatch(
                        self.ensemble, f"{output} shape", f"[{len(crops)}, {len(info.class_names)}, …]", list(shape)
                    )
        return HipInference(**arrays)
