"""The local Triton (python-backend twins) answers exactly what the ONNX files compute.

Production GPU Triton runs the same ONNX files with its onnxruntime backend; here the CPU server runs
them through ``python_backend_model.py``. Both must agree with onnxruntime on the file itself.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from cds_service.inference.client import TritonInferenceClient
from cds_service.inference.triton_server import latest_model_file, read_model_config
from cds_service.settings import Settings


def test_ensemble_outputs_equal_onnxruntime_on_the_model_files(triton):
    ort = pytest.importorskip("onnxruntime")
    repository = Settings().model_repository

    async def through_triton(crops: np.ndarray):
        client = TritonInferenceClient(triton.grpc_url)
        try:
            models = await client.models()
            return models, await client.infer(crops)
        finally:
            await client.close()

    size = int(read_model_config(repository / "fracture" / "config.pbtxt").input[0].dims[-1])
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (3, size, size), dtype=np.uint8)
    models, outputs = asyncio.run(through_triton(crops))
    assert models["fracture"].input_size == size
    for name, logits, cam in (
        ("fracture", outputs.fracture_logits, outputs.fracture_cam),
        ("garden", outputs.garden_logits, outputs.garden_cam),
    ):
        session = ort.InferenceSession(str(latest_model_file(repository, name)), providers=["CPUExecutionProvider"])
        expected_logits, expected_cam = session.run(["logits", "cam"], {"image": crops[:, None]})
        np.testing.assert_allclose(logits, expected_logits, atol=1e-5)
        np.testing.assert_allclose(cam, expected_cam, atol=1e-5)
