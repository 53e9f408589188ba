"""Rebuild a trainable :class:`~cds_service.training.model.CamNet` from a served ONNX model.

The served ``model.onnx`` is the only copy of the shipped weights that a fresh clone has (the
``.pt`` checkpoints live in a training work folder). Exporting in eval mode folded every batch norm
into the convolution before it (``W' = γ/σ·W``, ``b' = β − γ·μ/σ``), so γ, β and the running
statistics are gone: only their product survives. This module splits them again:

1. the ONNX ``Conv`` nodes are matched, in graph order, with the network's ``Conv2d`` modules in
   call order (shapes checked), and each convolution takes its folded weight ``W'``;
2. the running statistics are re-estimated on crops of the training data (``μ̂``, ``σ̂²`` of ``W'x``
   per channel), and γ = σ̂, β = b' + μ̂ are chosen so that in eval mode the batch norm adds ``b'``
   exactly (γ·(y − μ̂)/σ̂ + β = y + b'), while in train mode the batch statistics it normalises by
   are close to the ones the shipped network saw;
3. the classifier (the ONNX ``Gemm``) is copied, and the rebuilt network is checked against
   onnxruntime on those crops: the same logits and heat maps, or an error.

So ``--fracture-init repository`` / ``--garden-init repository`` continue the shipped models from a
fresh clone, without the work folder that trained them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from cds_service.training.model import CamNet, ServingNet, normalise_batch

# How far the rebuilt network may be from onnxruntime (max |Δ| over the check crops, relative to the
# largest |value|): float32 re-association of the folded weights, nothing more.
TOLERANCE = 1e-3


def _folded_convolutions(onnx_path: Path) -> tuple[list[tuple[np.ndarray, np.ndarray | None]], np.ndarray, np.ndarray]:
    """The ONNX graph's Conv weights and biases in graph order, and the classifier's (weight [C, K], bias [C])."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    initial = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    convolutions = []
    gemms = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in initial:  # the exporter's de-duplicated weights
            initial[node.output[0]] = initial[node.input[0]]
        elif node.op_type == "Constant" and node.attribute[0].name == "value":
            initial[node.output[0]] = numpy_helper.to_array(onnx.helper.get_attribute_value(node.attribute[0]))
        elif node.op_type == "Conv":
            weight = initial[node.input[1]]
            bias = initial[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            convolutions.append((weight, bias))
        elif node.op_type == "Gemm":
            attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            weight = initial[node.input[1]]
            gemms.append((weight if attributes.get("transB", 0) else weight.T, initial[node.input[2]]))
        elif node.op_type == "BatchNormalization":
            raise ValueError(f"{onnx_path}: an unfolded BatchNormalization; only eval-mode exports are supported")
    if len(gemms) != 1:
        raise ValueError(f"{onnx_path}: expected one classifier (Gemm), found {len(gemms)}")
    return convolutions, *gemms[0]


def _call_order(net: CamNet, size: int) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """The network's convolutions in the order a forward pass calls them, each with the batch norm
    that normalises its output (None when nothing does, e.g. squeeze-and-excitation convolutions)."""
    # (kind, module, input, output): the tensors themselves are kept, so no id is reused while pairing
    calls: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []
    hooks = [
        module.register_forward_hook(lambda m, inputs, output, kind=kind: calls.append((kind, m, inputs[0], output)))
        for module in net.modules()
        for kind in (
            ("conv",) if isinstance(module, nn.Conv2d) else ("bn",) if isinstance(module, nn.BatchNorm2d) else ()
        )
    ]
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 3, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    normalised_by = {id(inp): module for kind, module, inp, _ in calls if kind == "bn"}
    return [(module, normalised_by.get(id(out))) for kind, module, _, out in calls if kind == "conv"]


def state_dict_from_onnx(net: CamNet, onnx_path: Path, images: np.ndarray, batch_size: int = 64) -> dict:
    """Load the served ``onnx_path`` into ``net`` (same backbone, output stride and classes) and return
    its state dict; ``images`` (uint8 crops [N, S, S] at the model's input size, e.g. a few hundred
    training crops) re-estimate the batch-norm statistics and check the result against onnxruntime."""
    convolutions, classifier_weight, classifier_bias = _folded_convolutions(onnx_path)
    size = images.shape[-1]
    order = _call_order(net, size)
    if len(order) != len(convolutions):
        raise ValueError(
            f"{onnx_path}: {len(convolutions)} convolutions, the network has {len(order)} (another backbone?)"
        )
    if tuple(net.classifier.weight.shape) != classifier_weight.shape:
        raise ValueError(
            f"{onnx_path}: classifier {classifier_weight.shape}, the network's {tuple(net.classifier.weight.shape)}"
        )
    folded_bias: dict[nn.BatchNorm2d, torch.Tensor] = {}
    with torch.no_grad():
        for index, ((conv, norm), (weight, bias)) in enumerate(zip(order, convolutions, strict=True)):
            if tuple(conv.weight.shape) != weight.shape:
                raise ValueError(
                    f"{onnx_path}: convolution {index} is {weight.shape}, the network's {tuple(conv.weight.shape)}"
                )
            conv.weight.copy_(torch.from_numpy(weight.copy()))
            bias_tensor = torch.zeros(weight.shape[0]) if bias is None else torch.from_numpy(bias.copy())
            if norm is not None:  # start as identity + b' (eval mode), the statistics come next
                if conv.bias is not None:
                    conv.bias.zero_()
                norm.running_mean.zero_()
                norm.running_var.fill_(1.0 - norm.eps)
                norm.weight.fill_(1.0)
                norm.bias.copy_(bias_tensor)
                folded_bias[norm] = bias_tensor
            elif conv.bias is not None:
                conv.bias.copy_(bias_tensor)
            elif bias is not None and np.any(bias):
                raise ValueError(f"{onnx_path}: convolution {index} has a bias the network's has no place for")
        net.classifier.weight.copy_(torch.from_numpy(classifier_weight.copy()))
        net.classifier.bias.copy_(torch.from_numpy(classifier_bias.copy()))
    _reestimate_statistics(net, folded_bias, images, batch_size)
    _check_against_onnxruntime(net, onnx_path, images[:batch_size])
    return net.state_dict()


def _reestimate_statistics(
    net: CamNet, folded_bias: dict[nn.BatchNorm2d, torch.Tensor], images: np.ndarray, batch_size: int
) -> None:
    """Per batch norm, the mean and variance of its input (``W'x``) over ``images``; then γ = σ̂ and
    β = b' + μ̂, which leaves the eval-mode function unchanged (one pass suffices: it does not change
    while the statistics are being set)."""
    sums = {norm: torch.zeros(norm.num_features, dtype=torch.float64) for norm in folded_bias}
    squares = {norm: torch.zeros(norm.num_features, dtype=torch.float64) for norm in folded_bias}
    counts = dict.fromkeys(folded_bias, 0)

    def record(norm: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        x = inputs[0].detach().double()
        sums[norm] += x.sum(dim=(0, 2, 3))
        squares[norm] += (x * x).sum(dim=(0, 2, 3))
        counts[norm] += x.shape[0] * x.shape[2] * x.shape[3]

    hooks = [norm.register_forward_hook(record) for norm in folded_bias]
    try:
        with torch.no_grad():
            net.eval()
            for start in range(0, len(images), batch_size):
                net(normalise_batch(torch.from_numpy(images[start : start + batch_size]).unsqueeze(1)))
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        for norm, bias in folded_bias.items():
            mean = sums[norm] / counts[norm]
            variance = (squares[norm] / counts[norm] - mean * mean).clamp(min=0)
            norm.running_mean.copy_(mean.float())
            norm.running_var.copy_(variance.float())
            norm.weight.copy_(torch.sqrt(variance + norm.eps).float())
            norm.bias.copy_(bias + mean.float())


def _check_against_onnxruntime(net: CamNet, onnx_path: Path, images: np.ndarray) -> None:
    """Raise unless the rebuilt network gives onnxruntime's logits and heat maps on ``images``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    pixels = images[:, None]
    expected = session.run(["logits", "cam"], {"image": pixels})
    with torch.no_grad():
        got = ServingNet(net).eval()(torch.from_numpy(pixels))
    for name, want, have in zip(("logits", "cam"), expected, got, strict=True):
        error = float(np.abs(want - have.numpy()).max()) / max(float(np.abs(want).max()), 1e-6)
        if error > TOLERANCE:
            raise ValueError(
                f"{onnx_path}: the rebuilt network's {name} differ from onnxruntime's by {error:.2g} (relative)"
            )
