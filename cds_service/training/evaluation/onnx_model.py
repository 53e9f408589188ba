"""The exported models as the evaluation runs them: onnxruntime, calibrated as the service does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cds_service.domain import ModelInfo
from cds_service.findings import calibrated_probabilities, fracture_cam, fracture_probability
from cds_service.inference.client import model_info_from_config
from cds_service.inference.triton_server import latest_model_file, read_model_config


def served_model_info(repository: Path, name: str) -> ModelInfo:
    """Model ``name`` of ``repository`` as the service reads it (its newest version's number, and the
    metadata of its config.pbtxt: class names, input size, threshold, temperature…)."""
    from google.protobuf import json_format

    config = read_model_config(repository / name / "config.pbtxt")
    version = latest_model_file(repository, name).parent.name
    return model_info_from_config(json_format.MessageToDict(config, preserving_proto_field_name=True), version)


@dataclass
class OnnxModel:
    """One exported model run with onnxruntime, with the metadata from its config.pbtxt."""

    name: str
    session: object
    parameters: dict[str, str]
    info: ModelInfo  # parsed by the service's own reader: same threshold, temperature, class names

    @classmethod
    def load(cls, repository: Path, name: str) -> OnnxModel:
        import onnxruntime as ort

        config = read_model_config(repository / name / "config.pbtxt")
        params = {key: value.string_value for key, value in config.parameters.items()}
        info = served_model_info(repository, name)
        session = ort.InferenceSession(str(latest_model_file(repository, name)), providers=["CPUExecutionProvider"])
        return cls(name, session, params, info)

    def fracture_outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Calibrated class probabilities [N, C], p(fracture) [N] and the fracture maps [N, h, w], derived
        from the class outputs as the service derives them (:func:`~cds_service.findings.fracture_probability`,
        ``fracture_cam``)."""
        probs, cams = self.run(images)
        return probs, fracture_probability(probs, self.info), fracture_cam(cams, probs, self.info)

    def fracture(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated p(fracture) [N] and the fracture maps [N, h, w] (:meth:`fracture_outputs`)."""
        return self.fracture_outputs(images)[1:]

    def parameter(self, key: str) -> float | None:
        """A numeric config parameter, or None when it is absent or empty (older models)."""
        try:
            return float(self.parameters.get(key, ""))
        except ValueError:
            return None

    def run(self, images: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities [N, C] (as served: :func:`~cds_service.findings.calibrated_probabilities`)
        and raw CAMs [N, C, h, w]."""
        logits, cams = [], []
        for start in range(0, len(images), batch):
            out = self.session.run(["logits", "cam"], {"image": images[start : start + batch, None]})
            logits.append(out[0])
            cams.append(out[1])
        if not logits:
            shapes = [output.shape[1:] for output in self.session.get_outputs()]
            return np.zeros((0, *shapes[0])), np.zeros((0, *shapes[1]), np.float32)
        return calibrated_probabilities(np.concatenate(logits), self.info), np.concatenate(cams)

    def p_fracture(self, images: np.ndarray) -> np.ndarray:
        """Calibrated p(fracture) per crop."""
        return fracture_probability(self.run(images)[0], self.info)
