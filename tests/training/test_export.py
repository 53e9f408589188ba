"""The exported ONNX graph equals eager PyTorch, and its in-graph CAM equals pytorch-grad-cam's Grad-CAM."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import IN_CI, require

if not IN_CI:  # the [train] extra is optional on a developer machine; CI installs it and must run these
    pytest.importorskip("torch")
    pytest.importorskip("timm")
import torch


@pytest.fixture(scope="module", params=[32, 16], ids=["stride32", "stride16"])
def exported(tmp_path_factory, request):
    from cds_service.training.export import ExportMetadata, export_model
    from cds_service.training.model import CamNet, create_backbone

    torch.manual_seed(3)
    net = CamNet(create_backbone("test_resnet", 2, output_stride=request.param)).eval()
    # Non-trivial classifier weights so the two classes' maps differ.
    with torch.no_grad():
        net.classifier.weight.normal_(0, 1)
    repo = tmp_path_factory.mktemp("repo")
    metadata = ExportMetadata(("no_fracture", "fracture"), "test_resnet", 96, extra={"train_config": '{"a": "b\\\\c"}'})
    path = export_model(net, repo, "fracture", metadata)
    return net, path, repo


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (3, 1, 96, 96), dtype=np.uint8)
    base[:, :, 30:60, 40:70] = 250  # a bright structure the network can react to
    return base


def test_onnx_logits_and_cam_equal_eager_pytorch(exported, images):
    ort = pytest.importorskip("onnxruntime")
    from cds_service.training.model import ServingNet

    net, path, _ = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, cam = session.run(["logits", "cam"], {"image": images})
    with torch.no_grad():
        eager_logits, eager_cam = ServingNet(net).eval()(torch.from_numpy(images))
    np.testing.assert_allclose(logits, eager_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(cam, eager_cam.numpy(), atol=1e-4)
    assert logits.shape == (3, 2) and cam.shape[:2] == (3, 2)
    from cds_service.inference.triton_server import read_model_config

    config = read_model_config(path.parent.parent / "config.pbtxt")
    assert list(config.output[1].dims) == list(cam.shape[1:])  # the CAM size the config announces


def test_dynamic_batch(exported, images):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(exported[1]), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        logits, _ = session.run(["logits", "cam"], {"image": np.repeat(images[:1], batch, 0)})
        assert logits.shape[0] == batch


@pytest.mark.parametrize("target", [0, 1])
def test_in_graph_cam_equals_grad_cam_at_the_pooled_layer(exported, images, target):
    pytest.importorskip("pytorch_grad_cam")
    import cv2
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from cds_service.training.model import normalise_batch

    net, _, _ = exported

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)[0]

    x = normalise_batch(torch.from_numpy(images))
    wrapper = LogitsOnly().eval()
    # The layer whose output feeds global average pooling (timm ResNet: the last stage).
    with GradCAM(model=wrapper, target_layers=[net.backbone.layer4]) as grad_cam:
        reference = grad_cam(input_tensor=x, targets=[ClassifierOutputTarget(target)] * len(x))
    with torch.no_grad():
        _, cams = net.eval()(x)
    for cam, expected in zip(cams[:, target].numpy(), reference, strict=True):
        ours = np.maximum(cam, 0)
        ours = cv2.resize((ours - ours.min()) / (1e-7 + ours.max() - ours.min()), (96, 96))  # as grad-cam scales
        ours = (ours - ours.min()) / max(ours.max() - ours.min(), 1e-7)
        expected = (expected - expected.min()) / max(expected.max() - expected.min(), 1e-7)
        assert np.abs(ours - expected).max() <= 1e-4


def test_config_pbtxt_parses_and_carries_the_metadata(exported):
    from cds_service.inference.triton_server import read_model_config, to_python_backend

    _, _, repo = exported
    config = read_model_config(repo / "fracture" / "config.pbtxt")
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
    assert config.parameters["class_names"].string_value == "no_fracture,fracture"
    assert config.parameters["training_data"].string_value == "untrained"
    assert config.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "tensorrt"
    assert to_python_backend(config).backend == "python"


def test_shipped_models_meet_the_contract():
    from cds_service.inference.triton_server import latest_model_file, read_model_config
    from cds_service.settings import Settings

    repo = Settings().model_repository
    require(latest_model_file(repo, "fracture").exists(), "no exported models")
    # The shipped fracture model is site-aware (none / femoral neck / trochanteric); Garden has 4 stages.
    for name, classes in (("fracture", 3), ("garden", 4)):
        config = read_model_config(repo / name / "config.pbtxt")
        assert latest_model_file(repo, name).stat().st_size <= 25 * 2**20
        assert [t.name for t in config.input] == ["image"] and [t.name for t in config.output] == ["logits", "cam"]
        assert list(config.output[0].dims) == [classes]
        assert len(config.parameters["class_names"].string_value.split(",")) == classes
        assert config.parameters["disclaimer"].string_value


def test_parameters_with_quotes_survive_the_text_format(exported):
    from cds_service.inference.triton_server import read_model_config

    config = read_model_config(exported[2] / "fracture" / "config.pbtxt")
    assert config.parameters["train_config"].string_value == '{"a": "b\\\\c"}'
