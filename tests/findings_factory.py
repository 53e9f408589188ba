"""StudyFindings for card and report tests (plain values, as the pipeline would produce)."""

from __future__ import annotations

from cds_service.findings import HipFinding, StudyFindings
from cds_service.inference.client import ModelInfo


def model(name: str, classes: tuple[str, ...], training_data: str = "synthetic-phantoms") -> ModelInfo:
    return ModelInfo(
        name=name,
        version="1",
        class_names=classes,
        input_size=224,
        architecture="resnet18",
        training_data=training_data,
        disclaimer="Trained on synthetic phantoms only; not for clinical use.",
        operating_threshold=0.5,
        sensitivity=0.95,
        specificity=0.97,
    )


def findings(right: float = 0.94, left: float = 0.03, garden=(0.02, 0.04, 0.64, 0.30), **kw) -> StudyFindings:
    return StudyFindings(
        hips=[
            HipFinding("R", right, right >= 0.5, garden),
            HipFinding("L", left, left >= 0.5, (0.25, 0.25, 0.25, 0.25)),
        ],
        fracture_model=model("fracture", ("no_fracture", "fracture"), **kw),
        garden_model=model("garden", ("garden_I", "garden_II", "garden_III", "garden_IV"), **kw),
        sop_instance_uid="1.2.3",
    )
