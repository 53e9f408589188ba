"""The CamNet's weights: a Garden model can start from the fracture model's features."""

from __future__ import annotations

import pytest

from tests.conftest import IN_CI

if not IN_CI:  # the [train] extra is optional on a developer machine; CI installs it and must run these
    pytest.importorskip("torch")
    pytest.importorskip("timm")

import torch

from cds_service.training.model import CamNet, create_backbone, load_features


@pytest.mark.parametrize("backbone", ["test_resnet", "tinynet_e"])
def test_load_features_copies_everything_but_the_classifier(backbone):
    torch.manual_seed(0)
    fracture = CamNet(create_backbone(backbone, 2, 16))
    torch.manual_seed(1)
    garden = CamNet(create_backbone(backbone, 4, 16))
    head_before = garden.classifier.weight.detach().clone()
    left = load_features(garden, fracture.state_dict())
    # The classifier (and the backbone's alias of it) keeps its own 4-class weights.
    assert "classifier.weight" in left and len(left) == 4
    assert torch.equal(garden.classifier.weight, head_before)
    copied = {name: value for name, value in fracture.state_dict().items() if name not in left}
    assert copied and all(torch.equal(garden.state_dict()[name], value) for name, value in copied.items())
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(garden.eval().features(image), fracture.eval().features(image))


def test_load_features_refuses_another_backbone():
    fracture = CamNet(create_backbone("test_resnet", 2, 16))
    garden = CamNet(create_backbone("tinynet_e", 4, 16))
    with pytest.raises(ValueError, match="does not fit"):
        load_features(garden, fracture.state_dict())


def test_load_features_copies_the_classifier_of_the_same_model_too():
    """`--fracture-init`: a fine-tune continues the whole fracture model, classifier included."""
    torch.manual_seed(0)
    trained = CamNet(create_backbone("test_resnet", 2, 16))
    torch.manual_seed(1)
    net = CamNet(create_backbone("test_resnet", 2, 16))
    assert load_features(net, trained.state_dict()) == []
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net.eval()(image)[0], trained.eval()(image)[0])
