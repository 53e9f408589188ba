"""Rebuilding a trainable network from a served ONNX model (batch norms folded into the convolutions)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from tests.conftest import IN_CI

if not IN_CI:  # the [train] extra is optional on a developer machine; CI installs it and must run these
    pytest.importorskip("torch")
    pytest.importorskip("timm")

import torch

from cds_service.training.export import export_onnx
from cds_service.training.model import CamNet, ServingNet, create_backbone
from cds_service.training.onnx_import import state_dict_from_onnx

SIZE = 64


def _trained_looking(backbone: str, seed: int) -> CamNet:
    """A network whose batch norms are far from identity (as after training), so folding them matters."""
    torch.manual_seed(seed)
    net = CamNet(create_backbone(backbone, 2, 16))
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return net.eval()


def _crops(count: int = 24) -> np.ndarray:
    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 200, SIZE, dtype=np.float32)
    return np.clip(ramp[None, None, :] + rng.normal(0, 30, (count, SIZE, SIZE)), 0, 255).astype(np.uint8)


def _serve(net: CamNet, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        logits, cam = ServingNet(net)(torch.from_numpy(crops[:, None]))
    return logits.numpy(), cam.numpy()


@pytest.mark.parametrize("backbone", ["test_resnet", "tinynet_e"])  # tinynet_e: SE convolutions with biases, no BN
def test_the_rebuilt_network_gives_the_served_models_outputs(tmp_path, backbone):
    served = _trained_looking(backbone, seed=1)
    export_onnx(served, tmp_path / "model.onnx", SIZE)
    crops = _crops()

    rebuilt = CamNet(create_backbone(backbone, 2, 16))  # other random weights, identity batch norms
    rebuilt.load_state_dict(state_dict_from_onnx(rebuilt, tmp_path / "model.onnx", crops, batch_size=8))

    for want, got in zip(_serve(served, crops), _serve(rebuilt.eval(), crops), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())
    # The re-estimated statistics are those of the crops: in train mode, one batch of exactly those crops
    # normalises by the same numbers, so the network trains from where the served one stands.
    training = copy.deepcopy(rebuilt).train()
    for want, got in zip(_serve(served, crops), _serve(training, crops), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-3 * np.abs(want).max())


def test_a_model_of_another_backbone_is_refused(tmp_path):
    export_onnx(_trained_looking("test_resnet", seed=1), tmp_path / "model.onnx", SIZE)
    with pytest.raises(ValueError, match="another backbone"):
        state_dict_from_onnx(CamNet(create_backbone("tinynet_e", 2, 16)), tmp_path / "model.onnx", _crops())


def test_a_model_with_another_number_of_classes_is_refused(tmp_path):
    export_onnx(_trained_looking("test_resnet", seed=1), tmp_path / "model.onnx", SIZE)
    with pytest.raises(ValueError, match="classifier"):
        state_dict_from_onnx(CamNet(create_backbone("test_resnet", 4, 16)), tmp_path / "model.onnx", _crops())
