"""TritonInferenceClient against the real local Triton: retries, deadlines, the model contract, versions.

Two servers: the session's ``triton`` (never changed) and a module-scoped one in explicit model-control
mode whose generated repository the tests edit and reload through Triton's repository API. Network
trouble comes from loopback stand-ins (``tests/inference/tcp.py``): a forwarder to a real Triton that
starts late or drops its connections, and a listener that accepts and never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from google.protobuf import json_format, text_format

from cds_service.domain import prior_shift
from cds_service.errors import InferenceError
from cds_service.inference.client import ContractMismatch, TritonInferenceClient, model_info_from_config
from cds_service.inference.triton_server import (
    TritonServer,
    free_port,
    latest_model_file,
    model_versions,
    read_model_config,
)
from cds_service.metrics import REGISTRY
from tests.conftest import started_triton
from tests.inference.tcp import Forwarder, black_hole

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def explicit_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A second local Triton whose models the tests reload (``--model-control-mode=explicit``)."""
    with started_triton(tmp_path_factory.mktemp("triton-explicit"), model_control_mode="explicit") as server:
        yield server


def metric(name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def crops(size: int, count: int = 2) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (count, size, size), dtype=np.uint8)


async def load(server: TritonServer, *names: str) -> None:
    """(Re)load models from the server's generated repository, as an operator would."""
    admin = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        for name in names:
            await admin.load_model(name, client_timeout=60)
    finally:
        await admin.close()


@contextlib.contextmanager
def edited_config(server: TritonServer, model: str, edit: Callable) -> Iterator[None]:
    """Edit ``model``'s config.pbtxt in the server's repository; the original comes back afterwards."""
    path = server.repository / model / "config.pbtxt"
    original = path.read_text()
    config = read_model_config(path)
    edit(config)
    path.write_text(text_format.MessageToString(config))
    try:
        yield
    finally:
        path.write_text(original)


def set_parameter(name: str, value: str) -> Callable:
    def edit(config) -> None:
        config.parameters[name].string_value = value

    return edit


async def test_unavailable_is_retried_until_triton_listens(triton):
    """The client starts before "Triton" listens on its port; retries with backoff carry it through."""
    forwarder = Forwarder(free_port(), triton.grpc_url)
    client = TritonInferenceClient(forwarder.url, timeout_s=10, max_attempts=30, backoff_s=0.05, max_backoff_s=0.4)
    retries = metric("hipcad_triton_retries_total")
    asyncio.get_running_loop().call_later(0.6, lambda: asyncio.ensure_future(forwarder.start()))
    started = time.monotonic()
    try:
        models = await client.models()
        assert time.monotonic() - started >= 0.5  # it really waited for the port
        assert metric("hipcad_triton_retries_total") > retries
        outputs = await client.infer(crops(models["fracture"].input_size))
        classes = len(models["fracture"].class_names)  # 2, or 3 for a site-aware model
        assert outputs.fracture_logits.shape == (2, classes) and outputs.garden_logits.shape == (2, 4)
    finally:
        await client.close()
        await forwarder.stop()


async def test_the_served_models_calibration_reaches_the_service(triton):
    """What the card's percentages depend on (temperature, prior shift, thresholds) arrives from the live
    Triton exactly as ``model_repository/`` states it: a twin or config reader that dropped
    ``prevalence`` would leave the thresholds on the shifted scale and call far more hips fractured."""
    client = TritonInferenceClient(triton.grpc_url, timeout_s=10)
    try:
        served = await client.models()
    finally:
        await client.close()
    for name in ("fracture", "garden"):
        config = read_model_config(REPOSITORY / name / "config.pbtxt")
        as_json = json_format.MessageToDict(config, preserving_proto_field_name=True)
        assert served[name] == model_info_from_config(as_json, latest_model_file(REPOSITORY, name).parent.name)
    # Against the raw parameters too, so a parser that dropped both shares on both sides cannot pass.
    params = {
        key: value.string_value
        for key, value in read_model_config(REPOSITORY / "fracture" / "config.pbtxt").parameters.items()
    }
    stated = prior_shift(float(params.get("prevalence") or "nan"), float(params.get("calibration_prevalence") or "nan"))
    assert served["fracture"].prior_shift == pytest.approx(stated)


async def test_invalid_argument_fails_at_once_without_retry(triton, monkeypatch):
    client = TritonInferenceClient(triton.grpc_url, timeout_s=10)
    try:
        size = (await client.models())["fracture"].input_size
        grpc_client = client._grpc()
        attempts = 0
        original = grpc_client.infer

        async def counting_infer(*args, **kwargs):
            nonlocal attempts
            attempts += 1
            return await original(*args, **kwargs)

        monkeypatch.setattr(grpc_client, "infer", counting_infer)
        retries = metric("hipcad_triton_retries_total")
        errors = metric("hipcad_triton_errors_total", model="hip_analysis", code="INVALID_ARGUMENT")
        with pytest.raises(InferenceError, match=r"inference for model 'hip_analysis' failed with INVALID_ARGUMENT"):
            await client.infer(crops(size, count=9))  # max_batch_size is 8
        assert attempts == 1
        assert metric("hipcad_triton_retries_total") == retries
        assert metric("hipcad_triton_errors_total", model="hip_analysis", code="INVALID_ARGUMENT") == errors + 1
        latency = metric("hipcad_triton_request_duration_seconds_count", model="hip_analysis")
        await client.infer(crops(size))
        assert metric("hipcad_triton_request_duration_seconds_count", model="hip_analysis") == latency + 1
    finally:
        await client.close()


async def test_the_deadline_holds_against_a_server_that_never_answers():
    with black_hole() as url:
        client = TritonInferenceClient(url, timeout_s=1.0, ready_timeout_s=0.3)
        try:
            for call in (client.models, lambda: client.infer(crops(192))):
                started = time.monotonic()
                with pytest.raises(InferenceError, match=r"did not answer within 1\.0 s"):
                    await call()
                assert 0.9 <= time.monotonic() - started < 1.0 + 0.5
            started = time.monotonic()
            assert await client.ready() is False
            assert time.monotonic() - started < 0.3 + 0.5
        finally:
            await client.close()


async def test_ready_is_true_only_with_triton_live_and_all_three_models_ready(explicit_triton):
    client = TritonInferenceClient(explicit_triton.grpc_url)
    nowhere = TritonInferenceClient(f"127.0.0.1:{free_port()}", ready_timeout_s=0.5)
    admin = grpcclient.InferenceServerClient(explicit_triton.grpc_url)
    try:
        assert await client.ready() is True
        await admin.unload_model("garden", client_timeout=60)
        try:
            assert await client.ready() is False
        finally:
            await load(explicit_triton, "garden")
        assert await client.ready() is True
        started = time.monotonic()
        assert await nowhere.ready() is False
        assert time.monotonic() - started < 1.5
    finally:
        await admin.close()
        await client.close()
        await nowhere.close()


async def test_wrong_dims_in_a_model_config_are_named(explicit_triton):
    served = read_model_config(explicit_triton.repository / "fracture" / "config.pbtxt")
    classes = next(output for output in served.output if output.name == "logits").dims[0]

    def five_logits(config) -> None:  # neither the two-class nor the site-aware contract
        next(o for o in config.output if o.name == "logits").dims[:] = [5]

    client = TritonInferenceClient(explicit_triton.grpc_url, timeout_s=30)
    try:
        with edited_config(explicit_triton, "fracture", five_logits):
            await load(explicit_triton, "fracture")
            with pytest.raises(ContractMismatch) as caught:
                await client.models()
            assert str(caught.value) == (
                "Triton model contract mismatch: model 'fracture', logits shape: "
                f"expected [-1, {classes}], found [-1, 5]"
            )
            with pytest.raises(ContractMismatch):
                await client.infer(crops(192))  # nothing is sent to a model that breaks the contract
            assert await client.ready() is False  # /readyz: this replica cannot serve these models
        await load(explicit_triton, "fracture")
        assert await client.ready() is True  # the right model is back: ready again, no restart
    finally:
        await load(explicit_triton, "fracture")
        await client.close()


async def test_a_reconnection_checks_the_contract_again(triton, explicit_triton):
    """Triton goes away and another comes back on the address, serving a wrong class name: caught at once."""
    forwarder = Forwarder(free_port(), triton.grpc_url)
    await forwarder.start()
    client = TritonInferenceClient(forwarder.url, timeout_s=10, refresh_s=3600)  # no periodic check in this test
    try:
        assert (await client.models())["garden"].class_names == ("garden_I", "garden_II", "garden_III", "garden_IV")
        with edited_config(explicit_triton, "garden", set_parameter("class_names", "I,II,III,IV")):
            await load(explicit_triton, "garden")
            await forwarder.stop()
            await asyncio.sleep(0.3)
            await forwarder.start(explicit_triton.grpc_url)
            with pytest.raises(ContractMismatch) as caught:
                await client.models()
            assert str(caught.value) == (
                "Triton model contract mismatch: model 'garden', class_names: "
                "expected garden_I,garden_II,garden_III,garden_IV, found I,II,III,IV"
            )
    finally:
        await load(explicit_triton, "garden")
        await client.close()
        await forwarder.stop()


async def test_a_new_model_version_changes_the_label(explicit_triton):
    repository = explicit_triton.repository
    names = ("fracture", "garden", "hip_analysis")
    fracture, garden, ensemble = (model_versions(repository, name)[-1] for name in names)
    periodic = TritonInferenceClient(explicit_triton.grpc_url, timeout_s=30, refresh_s=0.2)
    on_answer = TritonInferenceClient(explicit_triton.grpc_url, timeout_s=30, refresh_s=3600)
    try:
        models = await periodic.models()
        assert (models["fracture"].label, models["garden"].label) == (f"fracture@{fracture}", f"garden@{garden}")
        await on_answer.models()

        # A new fracture version: seen by the periodic version check (at most every refresh_s).
        folder = repository / "fracture"
        shutil.copytree(folder / str(fracture), folder / str(fracture + 1), symlinks=True)
        await load(explicit_triton, "fracture")
        await asyncio.sleep(0.3)
        models = await periodic.models()
        assert (models["fracture"].label, models["garden"].label) == (f"fracture@{fracture + 1}", f"garden@{garden}")
        outputs = await periodic.infer(crops(models["fracture"].input_size))
        assert outputs.fracture_logits.shape == (2, len(models["fracture"].class_names))

        # A new ensemble version: the inference answer names it, so the next call reads the models again.
        shutil.copytree(repository / "hip_analysis" / str(ensemble), repository / "hip_analysis" / str(ensemble + 1))
        await load(explicit_triton, "hip_analysis")
        assert on_answer.served_versions["hip_analysis"] == str(ensemble)
        await on_answer.infer(crops(models["fracture"].input_size))
        models = await on_answer.models()
        assert on_answer.served_versions == {
            "fracture": str(fracture + 1),
            "garden": str(garden),
            "hip_analysis": str(ensemble + 1),
        }
        assert models["fracture"].label == f"fracture@{fracture + 1}"
    finally:
        shutil.rmtree(repository / "fracture" / str(fracture + 1), ignore_errors=True)
        shutil.rmtree(repository / "hip_analysis" / str(ensemble + 1), ignore_errors=True)
        await load(explicit_triton, "fracture", "hip_analysis")
        await periodic.close()
        await on_answer.close()


def test_each_twin_runs_onnxruntime_on_its_share_of_the_cores(triton):
    """Two twins on this machine: each session gets max(1, cores // 2) intra-op threads, 1 inter-op."""
    cores = len(os.sched_getaffinity(0))
    expected = os.environ.get("HIPCAD_ORT_THREADS") or str(max(1, cores // 2))
    log = triton.log_path.read_text(errors="replace")
    for model in ("fracture", "garden"):
        assert f"{model}: onnxruntime intra_op_num_threads={expected} inter_op_num_threads=1" in log


async def test_a_cancellation_hidden_by_a_failing_call_ends_the_retries():
    """Python 3.11's wait_for drops the caller's cancellation when the call fails at that moment. The
    retries must not run on past it: a hook answered 1.6 s after its deadline while Triton was down."""
    from tritonclient.utils import InferenceServerException

    client = TritonInferenceClient("127.0.0.1:9", timeout_s=10)
    attempts = 0

    async def call(_client_timeout: float) -> None:
        nonlocal attempts
        attempts += 1
        caller.cancel()  # the hook's deadline passes ...
        raise InferenceServerException("connection refused", status="StatusCode.UNAVAILABLE")  # ... as Triton refuses

    loop = asyncio.get_running_loop()
    caller = asyncio.ensure_future(client._call("fracture", "metadata", call, loop.time() + 10))
    started = loop.time()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert attempts == 1 and loop.time() - started < 0.5
