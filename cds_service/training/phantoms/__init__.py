"""Synthetic AP pelvis radiographs ("phantoms") with per-hip ground truth, written as DICOM.

No public hip radiographs are reachable here, so the shipped models learn from these. They are
geometric phantoms — pelvic ring, acetabula, femoral heads, necks, trochanters and shafts over a
soft-tissue shadow, with exposure, positioning and noise variation — not real anatomy: models
trained on them are NOT for clinical use (see docs/model-card.md).

Per hip: no fracture; femoral-neck fracture Garden I (incomplete), II (complete, undisplaced),
III (partially displaced), IV (fully displaced); trochanteric AO/OTA 31-A1/A2/A3. Confounders:
contralateral hip implant, spine implant, osteoarthritis (narrowed joint, sclerosis), pubic ramus
fracture, burned-in laterality markers at random places. Site profiles vary size, bit depth,
photometric interpretation, processing curve and lossless compression (RLE, JPEG 2000);
``external`` is never used in training. Deterministic by seed. Imports only numpy, pydicom and PIL
(the demo runs without torch).

The package: :mod:`.truth` (labels and per-hip truth), :mod:`.sites` (site profiles), :mod:`.cartoon`
(the version-1 2-D renderer), :mod:`.writer` (DICOM encoding, sample study, labelled sets); version 2
renders from 3-D anatomy (:mod:`.volume`, :mod:`.patient`, the pelvis, femur and soft-tissue parts)
through :mod:`.physics` in :mod:`.radiograph` (``writer.renderer(2)``).
"""

from cds_service.training.phantoms.cartoon import WORK, random_confounders, render
from cds_service.training.phantoms.sites import (
    EXTERNAL_SITES,
    SITES,
    TRAINING_SITES,
    SiteProfile,
    apply_curve,
    draw_acquisition,
)
from cds_service.training.phantoms.truth import GARDEN, LABELS, HipTruth, Phantom
from cds_service.training.phantoms.writer import (
    UID_PREFIX,
    renderer,
    sample_labels,
    to_dataset,
    write_phantom_set,
    write_sample_study,
)

__all__ = [
    "EXTERNAL_SITES",
    "GARDEN",
    "LABELS",
    "SITES",
    "TRAINING_SITES",
    "UID_PREFIX",
    "WORK",
    "HipTruth",
    "Phantom",
    "SiteProfile",
    "apply_curve",
    "draw_acquisition",
    "random_confounders",
    "render",
    "renderer",
    "sample_labels",
    "to_dataset",
    "write_phantom_set",
    "write_sample_study",
]
