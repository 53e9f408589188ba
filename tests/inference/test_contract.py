"""The model contract, checked on Triton's metadata/config answers (no server needed here)."""

from __future__ import annotations

import copy
import importlib.util
import math
import sys
import types
from pathlib import Path

import pytest

from cds_service.errors import InferenceError
from cds_service.inference.client import ACCEPTED_CLASSES, ContractMismatch, check_classifier, check_ensemble
from cds_service.training.config import FRACTURE_CLASSES, FRACTURE_SITE_CLASSES, GARDEN_CLASSES


def classifier(name: str, classes: tuple[str, ...], size: int = 192, cam: int = 6) -> tuple[dict, dict]:
    """Triton's metadata and config (as JSON) of a classifier that keeps the contract."""
    count = len(classes)
    metadata = {
        "name": name,
        "versions": ["3"],
        "inputs": [{"name": "image", "datatype": "UINT8", "shape": ["-1", "1", str(size), str(size)]}],
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": ["-1", str(count)]},
            {"name": "cam", "datatype": "FP32", "shape": ["-1", str(count), str(cam), str(cam)]},
        ],
    }
    config = {
        "name": name,
        "input": [{"name": "image", "data_type": "TYPE_UINT8", "dims": ["1", str(size), str(size)]}],
        "parameters": {
            "class_names": {"string_value": ",".join(classes)},
            "input_size": {"string_value": str(size)},
            "operating_threshold": {"string_value": "0.4"},
            "calibration_prevalence": {"string_value": "0.45"},
            "prevalence": {"string_value": "" if name == "garden" else "0.25"},
        },
    }
    return metadata, config


def ensemble() -> tuple[dict, dict]:
    metadata = {
        "name": "hip_analysis",
        "versions": ["1"],
        "inputs": [{"name": "image", "datatype": "UINT8", "shape": ["-1", "1", "-1", "-1"]}],
        "outputs": [
            {"name": "fracture_logits", "datatype": "FP32", "shape": ["-1", "-1"]},
            {"name": "fracture_cam", "datatype": "FP32", "shape": ["-1", "-1", "-1", "-1"]},
            {"name": "garden_logits", "datatype": "FP32", "shape": ["-1", "-1"]},
            {"name": "garden_cam", "datatype": "FP32", "shape": ["-1", "-1", "-1", "-1"]},
        ],
    }
    config = {
        "name": "hip_analysis",
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": model,
                    "input_map": {"image": "image"},
                    "output_map": {"logits": f"{model}_logits", "cam": f"{model}_cam"},
                }
                for model in ("fracture", "garden")
            ]
        },
    }
    return metadata, config


def test_a_model_that_keeps_the_contract_gives_its_info_and_version():
    info = check_classifier("fracture", *classifier("fracture", FRACTURE_CLASSES), (FRACTURE_CLASSES,))
    assert info.label == "fracture@3" and info.class_names == FRACTURE_CLASSES and info.input_size == 192
    assert info.operating_threshold == pytest.approx(0.4)
    assert info.prevalence == pytest.approx(0.25) and info.calibration_prevalence == pytest.approx(0.45)
    assert info.prior_shift == pytest.approx(math.log(1 / 3) - math.log(0.45 / 0.55))
    garden = check_classifier("garden", *classifier("garden", GARDEN_CLASSES), (GARDEN_CLASSES,))
    assert garden.prevalence is None and garden.prior_shift == 0.0  # empty parameter: no shift


def test_the_fracture_model_may_also_name_the_fracture_site():
    """A site-aware fracture model (none / femoral neck / trochanteric) keeps the contract, with its own
    three-class shapes; the Garden model may not change its classes."""
    info = check_classifier("fracture", *classifier("fracture", FRACTURE_SITE_CLASSES), ACCEPTED_CLASSES["fracture"])
    assert info.class_names == FRACTURE_SITE_CLASSES
    metadata, config = classifier("fracture", FRACTURE_SITE_CLASSES)
    metadata["outputs"][0].update(shape=["-1", "2"])  # three class names, two logits
    with pytest.raises(ContractMismatch, match="logits shape"):
        check_classifier("fracture", metadata, config, ACCEPTED_CLASSES["fracture"])
    with pytest.raises(ContractMismatch, match="class_names"):
        check_classifier("garden", *classifier("garden", FRACTURE_SITE_CLASSES), ACCEPTED_CLASSES["garden"])


@pytest.mark.parametrize(
    ("change", "field", "expected", "found"),
    [
        (lambda m, c: m["inputs"][0].update(datatype="FP32"), "image datatype", "UINT8", "FP32"),
        (lambda m, c: m["inputs"][0].update(name="pixels"), "inputs names", "['image']", "['pixels']"),
        (lambda m, c: m["inputs"][0].update(shape=["-1", "3", "192", "192"]), "image shape", "[-1, 1, S, S]", "3"),
        (lambda m, c: m["inputs"][0].update(shape=["1", "192", "192"]), "image shape", "[-1, 1, S, S]", "[1, 192"),
        (lambda m, c: m["outputs"][0].update(shape=["-1", "3"]), "logits shape", "[-1, 2]", "[-1, 3]"),
        (lambda m, c: m["outputs"][1].update(datatype="FP16"), "cam datatype", "FP32", "FP16"),
        (lambda m, c: m["outputs"][1].update(shape=["-1", "2", "6"]), "cam shape", "[-1, 2, h, w]", "[-1, 2, 6]"),
        (
            lambda m, c: c["parameters"]["class_names"].update(string_value="no_fracture,broken"),
            "class_names",
            "no_fracture,fracture",
            "no_fracture,broken",
        ),
        (lambda m, c: c["parameters"]["input_size"].update(string_value="256"), "input_size", "192", "256"),
    ],
)
def test_a_contract_mismatch_names_model_field_expected_and_found(change, field, expected, found):
    metadata, config = classifier("fracture", FRACTURE_CLASSES)
    change(metadata, config)
    with pytest.raises(ContractMismatch) as caught:
        check_classifier("fracture", metadata, config, (FRACTURE_CLASSES,))
    message = str(caught.value)
    assert isinstance(caught.value, InferenceError)
    assert "'fracture'" in message and field in message and expected in message and found in message


def test_the_ensemble_must_route_both_models_to_the_expected_outputs():
    models = {
        name: check_classifier(name, *classifier(name, classes), (classes,))
        for name, classes in (("fracture", FRACTURE_CLASSES), ("garden", GARDEN_CLASSES))
    }
    cams = {"fracture": [-1, 2, 6, 6], "garden": [-1, 4, 6, 6]}
    assert check_ensemble("hip_analysis", *ensemble(), models, cams) == "1"

    metadata, config = ensemble()
    config["ensemble_scheduling"]["step"][1]["output_map"] = {"logits": "fracture_logits", "cam": "garden_cam"}
    with pytest.raises(ContractMismatch, match=r"model 'hip_analysis', ensemble step for 'garden'"):
        check_ensemble("hip_analysis", metadata, config, models, cams)

    metadata, config = ensemble()
    metadata["outputs"][2]["shape"] = ["-1", "5"]
    with pytest.raises(ContractMismatch, match=r"garden_logits shape: expected \[-1, 4\|-1\], found \[-1, 5\]"):
        check_ensemble("hip_analysis", metadata, config, models, cams)

    metadata, config = ensemble()
    metadata["inputs"][0]["shape"] = ["-1", "1", "256", "256"]
    with pytest.raises(ContractMismatch, match=r"image shape: expected \[-1, 1, 192\|-1, 192\|-1\]"):
        check_ensemble("hip_analysis", copy.deepcopy(metadata), config, models, cams)


def load_twin_module():
    """python_backend_model.py as a module, with a stand-in for Triton's own ``triton_python_backend_utils``."""
    path = Path(__file__).resolve().parents[2] / "cds_service" / "inference" / "python_backend_model.py"
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    pytest.importorskip("onnxruntime")
    spec = importlib.util.spec_from_file_location("python_backend_twin", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_twin_gets_its_share_of_the_cores():
    twin = load_twin_module()
    assert twin.session_threads({"HIPCAD_TWIN_COUNT": "2"}, cores=2) == (1, 1)
    assert twin.session_threads({"HIPCAD_TWIN_COUNT": "2"}, cores=16) == (8, 1)
    assert twin.session_threads({"HIPCAD_TWIN_COUNT": "3"}, cores=2) == (1, 1)  # never 0 (= all cores)
    assert twin.session_threads({}, cores=4) == (4, 1)
    assert twin.session_threads({"HIPCAD_TWIN_COUNT": "2", "HIPCAD_ORT_THREADS": "3"}, cores=2) == (3, 1)
    assert twin.session_threads({"HIPCAD_TWIN_COUNT": "2", "HIPCAD_ORT_THREADS": "0"}, cores=8) == (4, 1)
    assert twin.session_threads({"HIPCAD_TWIN_COUNT": "x", "HIPCAD_ORT_THREADS": "many"}, cores=2) == (2, 1)
