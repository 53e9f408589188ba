"""Triton python-backend model that runs an ONNX file with onnxruntime.

The CPU Triton bundled in nvidia-pytriton has no onnxruntime backend, so the local launcher
(`cds_service.inference.triton_server`) copies this file next to each ``model.onnx`` as
``model.py``. It serves the very same ONNX file under the same model name, tensor names, shapes
and dtypes as the production GPU Triton's onnxruntime backend does. Requests that Triton's dynamic
batcher groups together are concatenated into one onnxruntime call.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def session_threads(environ, cores):
    """(intra_op, inter_op) threads for one twin's onnxruntime session."""
    explicit = environ.get("HIPCAD_ORT_THREADS", "").strip()
    if explicit:
        try:
            if int(explicit) >= 1:
                return int(explicit), 1
        except ValueError:
            pass
    try:
        twins = max(1, int(environ.get("HIPCAD_TWIN_COUNT", "1")))
    except ValueError:
        twins = 1
    return max(1, cores // twins), 1


class TritonPythonModel:
    """Serve ``model.onnx`` from this model version's folder."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        intra, inter = session_threads(os.environ, available_cores())
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra
        options.inter_op_num_threads = inter
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        pb_utils.Logger.log_info(
            f"{config['name']}: onnxruntime intra_op_num_threads={intra} inter_op_num_threads={inter}"
            f" (cores={available_cores()}, twins={os.environ.get('HIPCAD_TWIN_COUNT', '1')})"
        )
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        batches = [
            {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names}
            for request in requests
        ]
        sizes = [batch[self.input_names[0]].shape[0] for batch in batches]
        feeds = {name: np.concatenate([batch[name] for batch in batches]) for name in self.input_names}
        outputs = self.session.run(self.output_names, feeds)
        responses = []
        start = 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(value[start : start + size]))
                for name, value in zip(self.output_names, outputs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
