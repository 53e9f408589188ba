"""STARD-2015-style evaluation of the exported models, on fresh held-out phantoms or a labelled DICOM folder.

Runs the ONNX files in ``model_repository/`` (what Triton serves) with onnxruntime on crops made by
the serving preprocessing, and divides the logits by each model's calibration ``temperature`` before
the softmax exactly as the service does. With phantoms the groups are the internal sites and each
external site (``phantoms.EXTERNAL_SITES``) separately; with ``data`` (DICOM files + ``labels.csv``,
the format of ``train --data``) the folder is the one group. Writes ``report.md``, ``metrics.json``
and figures (ROC curves, reliability diagram, heat maps, false-negative contact sheet).

Reported per group: accuracy, sensitivity, specificity, F1, AUC and expected calibration error with
95 % CIs (Wilson for proportions, bootstrap otherwise) at the stored operating threshold; sensitivity
and specificity at the Youden threshold beside it when the model carries one; per-subtype
sensitivity (Garden I–IV, AO 31-A1/A2/A3); Garden 4-class and undisplaced (I–II) vs displaced
(III–IV) accuracy on femoral-neck fractures; heat-map localisation as Study A measured it (hottest
point of the fracture-class map inside the fracture box; non-fractures: outside the proximal femur)
and a stricter criterion (IoU of the top-5 % region of the map with the fracture box). On the
external phantom sites, three shortcut controls: a global-statistics baseline (intensity histogram +
logistic regression) that should stay far below, the laterality-marker swap (the same studies with
the other marker letter burned in), and occlusion (blur the fracture box, or a same-size box off the
proximal femur, and count the calls that flip).

The parts: :mod:`.onnx_model` (the exported models, calibrated as served), :mod:`.groups` (the
groups and their metrics), :mod:`.localisation`, :mod:`.controls` (shortcut controls),
:mod:`.figures`, :mod:`.markdown` (the report text) and :mod:`.run` (``evaluate``).
"""

from cds_service.training.evaluation.groups import PHANTOM_GROUPS, GroupResult, PhantomGroup
from cds_service.training.evaluation.onnx_model import OnnxModel
from cds_service.training.evaluation.run import evaluate

__all__ = ["PHANTOM_GROUPS", "GroupResult", "OnnxModel", "PhantomGroup", "evaluate"]
