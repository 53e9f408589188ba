"""Benchmark: what each served model costs — parameters, FLOPs and CPU latency per hip, side by side.

Reads the ONNX files Triton serves (``model_repository/``), counts parameters from their initialisers,
counts FLOPs of the same architecture in PyTorch (``torch.utils.flop_counter``, multiply-add = 2 FLOPs,
one crop, heat map included) and times onnxruntime on one study's two hips (batch 2) with the
threads the local Triton twins get. Absolute times depend on the CPU: its model is printed beside them.

    .venv/bin/python bench/model_cost.py [--repository model_repository] [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench.e2e's helpers

from bench.e2e import cpu_model, percentile
from cds_service.inference.triton_server import latest_model_file, read_model_config


def onnx_parameters(path: Path) -> int:
    """Parameters of an ONNX graph: the element count of its float initialisers."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)


def flops_per_crop(config: dict, classes: int, size: int) -> int:
    """FLOPs of one forward pass (logits and CAM) of the architecture the model was trained with."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from cds_service.training.model import CamNet, create_backbone

    net = CamNet(create_backbone(config["backbone"], classes, config.get("output_stride", 32))).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, size, size))
    return int(counter.get_total_flops())


def latency_ms(path: Path, size: int, runs: int, threads: int) -> list[float]:
    """onnxruntime wall time of one call with both hips of a study (batch 2), ms."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).integers(0, 255, (2, 1, size, size), dtype=np.uint8)
    for _ in range(3):
        session.run(None, {"image": batch})
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {"image": batch})
        times.append(1000 * (time.perf_counter() - started))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="per model")
    args = parser.parse_args()
    print(f"\nServed models in {args.repository}, on {cpu_model()} ({os.cpu_count()} cores), {args.threads} thread(s)")
    print(f"\n{'model':<10}{'network':<22}{'input':>7}{'heat map':>10}{'params':>10}{'GFLOPs/hip':>12}", end="")
    print(f"{'ms/study (2 hips) p50':>23}{'p95':>7}{'ms/hip':>8}")
    for name in ("fracture", "garden"):
        config = read_model_config(args.repository / name / "config.pbtxt")
        params = {key: value.string_value for key, value in config.parameters.items()}
        train = json.loads(params.get("train_config") or "{}") or {"backbone": params.get("architecture")}
        size = int(params["input_size"])
        classes = len(params["class_names"].split(","))
        cam = next(o for o in config.output if o.name == "cam").dims
        onnx_path = latest_model_file(args.repository, name)
        times = latency_ms(onnx_path, size, args.runs, args.threads)
        p50 = statistics.median(times)
        print(
            f"{name:<10}{train['backbone']:<22}{size:>7}{f'{cam[1]}×{cam[2]}':>10}"
            f"{onnx_parameters(onnx_path) / 1e6:>9.2f}M{flops_per_crop(train, classes, size) / 1e9:>12.2f}"
            f"{p50:>23.1f}{percentile(times, 0.95):>7.1f}{p50 / 2:>8.1f}"
        )
    print("\nGPU latency: measured only where a GPU machine is lent (bench/triton.sh on it); not in this run.")


if __name__ == "__main__":
    main()
