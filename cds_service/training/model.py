"""Networks with the class-activation map in the forward pass (exportable to ONNX with the logits).

For a backbone whose head is global average pooling followed by one linear layer, Grad-CAM at the
pooled feature map equals the class activation map (CAM) built from that map and the classifier
weights: the gradient of (GAP + linear) with respect to the feature map is the constant
``w_c / (h·w)``. So the heat map costs one einsum, in the same graph as the logits.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def create_backbone(name: str, num_classes: int, output_stride: int = 32) -> nn.Module:
    """A timm backbone trained from scratch (no pretrained weights can be downloaded here).

    ``output_stride`` 16 dilates the last stage instead of striding it: the pooled feature map, and
    so the heat map, doubles in resolution (12×12 instead of 6×6 at 192), which is what lets the
    hottest point land inside a fracture box a few dozen pixels wide.
    """
    import timm

    kwargs = {} if output_stride == 32 else {"output_stride": output_stride}
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=3, **kwargs)


class CamNet(nn.Module):
    """Backbone + in-graph class activation map.

    ``forward(x)`` takes float images [B, 3, S, S] already normalised (training); it returns
    ``(logits [B, C], cam [B, C, h, w])``.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        classifier = backbone.get_classifier()
        if not isinstance(classifier, nn.Linear):
            raise TypeError("CamNet needs a backbone whose head is global average pooling + one Linear layer")
        self.classifier = classifier

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map that feeds global average pooling (Grad-CAM's target layer)."""
        return self.backbone.forward_features(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        logits = self.backbone.forward_head(features)
        cam = torch.einsum("bkhw,ck->bchw", features, self.classifier.weight)
        return logits, cam


class ServingNet(nn.Module):
    """What is exported: uint8 grey hips [B, 1, S, S] in, ``logits`` and ``cam`` out.

    Scaling, the grey → 3-channel copy and ImageNet normalisation are inside the graph so that
    every client sends the same 8-bit crops the preprocessing produces.
    """

    def __init__(self, net: CamNet) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image.float().div(255.0).expand(-1, 3, -1, -1)
        return self.net((x - self.mean) / self.std)


def load_features(net: CamNet, checkpoint: dict[str, torch.Tensor]) -> list[str]:
    """Copy the weights of ``checkpoint`` (a CamNet state dict of the same backbone) into ``net``.

    The classifier is copied only when its shape fits (same number of classes: a fine-tune of the same
    model); otherwise it keeps its own weights (a Garden model started from the fracture model's
    features). Returns the names of the weights left as they were. Anything else that does not match
    (another backbone, output stride or width) is an error.
    """
    target = net.state_dict(keep_vars=True)
    head = {id(parameter) for parameter in net.classifier.parameters()}
    classifier = {name for name, value in target.items() if id(value) in head}  # classifier.* and its alias
    skip = {name for name in classifier if name not in checkpoint or checkpoint[name].shape != target[name].shape}
    copied = {name: value for name, value in checkpoint.items() if name not in skip}
    wrong = sorted(name for name, value in copied.items() if name not in target or target[name].shape != value.shape)
    missing = sorted(set(target) - set(copied) - skip)
    if wrong or missing:
        raise ValueError(f"checkpoint does not fit this backbone: {(wrong + missing)[:5]}")
    net.load_state_dict(copied, strict=False)
    return sorted(skip)


def normalise_batch(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 1, S, S] → the float input of :class:`CamNet` (same maths as ServingNet)."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels.float().div(255.0).expand(-1, 3, -1, -1) - mean) / std
