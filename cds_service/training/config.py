"""The training configuration and class names, importable without torch.

``cds-service`` builds its parser from these defaults, and ``serve``/``demo`` run on the base
install (no torch), so nothing here may import the ``[train]`` extra. The defaults are the
configuration of the shipped weights in ``model_repository/`` (each model's ``config.pbtxt`` holds
the ``train_config`` it was trained with).
"""

from __future__ import annotations

from dataclasses import dataclass

FRACTURE_CLASSES = ("no_fracture", "fracture")
GARDEN_CLASSES = ("garden_I", "garden_II", "garden_III", "garden_IV")


@dataclass
class TrainConfig:
    """Everything that determines the shipped weights (stored next to them)."""

    backbone: str = "test_resnet"  # timm's tiny ResNet (0.37 M parameters): trains on a 2-core CPU
    input_size: int = 192
    output_stride: int = 32  # 6×6 heat map at 192; 16 dilates the last stage (12×12)
    train_studies: int = 2500
    val_studies: int = 400
    fracture_epochs: int = 8
    garden_epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 2e-3
    seed: int = 20261122
    threads: int = 2
    training_data: str = "synthetic-phantoms"  # anything else: describe the real data set
    disclaimer: str = "Research use only; not cleared for clinical use."  # used when training_data is real
