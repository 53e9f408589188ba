"""The domain result types: per-hip findings, model info, raw model outputs and the analysis.

This module imports neither tritonclient nor the web layer, so the viewer, the result store, the
DICOM/FHIR result builders and the cards all depend on these narrow types, not on the pipeline or
the inference client.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cds_service.explain.heatmap import ChartImage, HipHeatmap

GARDEN_STAGES = ("I", "II", "III", "IV")

#: Where a fracture is (the issue's "fracture site"). Garden staging applies only to a femoral-neck
#: fracture; a trochanteric (AO/OTA 31-A) fracture has no Garden stage. ``uncertain`` is what every hip
#: gets from a fracture model without a site output (today's two-class models), or when the model's
#: site is not confident (:data:`SITE_CONFIDENCE`): no Garden stage is asserted then either.
FEMORAL_NECK, TROCHANTERIC, UNCERTAIN_SITE = "femoral_neck", "trochanteric", "uncertain"
FRACTURE_SITES = (FEMORAL_NECK, TROCHANTERIC, UNCERTAIN_SITE)
#: The conditional probability of one site, given a fracture, above which the site is named.
SITE_CONFIDENCE = 0.8


def prior_shift(prevalence: float | None, calibration_prevalence: float | None) -> float:
    """The log-odds that move probabilities calibrated at ``calibration_prevalence`` to a population
    with ``prevalence`` positives (Bayes' rule for a prior shift; Saerens et al., Neural Computation 2002).

    0 when either is unknown or outside (0, 1): probabilities are then left as calibrated.
    """
    if prevalence is None or calibration_prevalence is None:
        return 0.0
    if not (0 < prevalence < 1 and 0 < calibration_prevalence < 1):
        return 0.0
    return math.log(prevalence / (1 - prevalence)) - math.log(calibration_prevalence / (1 - calibration_prevalence))


@dataclass(frozen=True)
class ModelInfo:
    """What the service must know about one served model (from its Triton config)."""

    name: str
    version: str
    class_names: tuple[str, ...]
    input_size: int
    architecture: str
    training_data: str
    disclaimer: str
    operating_threshold: float
    sensitivity: float | None
    specificity: float | None
    temperature: float = 1.0  # calibration: logits are divided by it before the softmax
    # Prior shift (binary models): the share of positive crops in the validation data the temperature
    # was fitted on, and the share the served probabilities are meant for (see :func:`prior_shift`).
    calibration_prevalence: float | None = None
    prevalence: float | None = None
    # A second stored operating point on the same (served) scale: the threshold whose validation
    # specificity reaches Seed A's 96.9 %; None when the model's config does not store one.
    high_specificity_threshold: float | None = None

    @property
    def prior_shift(self) -> float:
        """Log-odds added to the positive class's logit after the temperature (0 = none)."""
        return prior_shift(self.prevalence, self.calibration_prevalence)

    @property
    def untrained(self) -> bool:
        return self.training_data == "untrained"

    @property
    def high_specificity_point(self) -> float | None:
        """The high-specificity threshold (never below the operating point), or None when not stored."""
        high = self.high_specificity_threshold
        return None if high is None else max(high, self.operating_threshold)

    @property
    def label(self) -> str:
        """``name@version`` as shown on cards and in reports."""
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class HipInference:
    """Raw model outputs for a batch of hips (first axis = hip)."""

    fracture_logits: np.ndarray  # [B, 2]
    fracture_cam: np.ndarray  # [B, 2, h, w]
    garden_logits: np.ndarray  # [B, 4]
    garden_cam: np.ndarray  # [B, 4, h, w]


@dataclass(frozen=True)
class HipFinding:
    """What the models say about one hip.

    ``garden_probabilities`` are only meaningful for a femoral-neck fracture and are conditional on
    one: they are shown, coded and stored only when :attr:`garden_applies` (a hip called fractured
    whose ``site`` is the femoral neck). ``site`` is one of :data:`FRACTURE_SITES`.

    ``low_suspicion``: called at the sensitive operating point but below the fracture model's
    high-specificity point (:attr:`ModelInfo.high_specificity_point`): a suspicion to review, not a
    finding. Such a hip gets no site (``site`` uncertain) and no Garden stage anywhere, so that a
    card, report or SR never stages a fracture the model itself rates unlikely.
    """

    laterality: str | None
    fracture_probability: float
    fractured: bool
    garden_probabilities: tuple[float, float, float, float]
    site: str = UNCERTAIN_SITE
    low_suspicion: bool = False

    @property
    def garden_applies(self) -> bool:
        """True only for a hip called fractured at the femoral neck, above the high-specificity point
        where the model stores one: Garden stages nothing else."""
        return self.fractured and not self.low_suspicion and self.site == FEMORAL_NECK

    @property
    def side(self) -> str:
        return {"R": "right", "L": "left"}.get(self.laterality or "", "unknown-side")

    @property
    def garden_stage(self) -> str:
        return GARDEN_STAGES[int(np.argmax(self.garden_probabilities))]

    @property
    def displaced_probability(self) -> float:
        """P(Garden III or IV): displaced fractures usually need arthroplasty, not fixation."""
        return float(self.garden_probabilities[2] + self.garden_probabilities[3])

    @property
    def displaced(self) -> bool:
        return self.displaced_probability >= 0.5


@dataclass(frozen=True)
class StudyFindings:
    """All hips of one study, with the models that produced them."""

    hips: list[HipFinding]
    fracture_model: ModelInfo
    garden_model: ModelInfo
    sop_instance_uid: str
    notes: list[str] = field(default_factory=list)

    @property
    def fractured_hips(self) -> list[HipFinding]:
        return [hip for hip in self.hips if hip.fractured]

    @property
    def untrained(self) -> bool:
        return self.fracture_model.untrained or self.garden_model.untrained

    @property
    def disclaimer(self) -> str:
        texts = dict.fromkeys(m.disclaimer for m in (self.fracture_model, self.garden_model) if m.disclaimer)
        return " ".join(texts)


@dataclass(frozen=True)
class StudyIdentity:
    """What identifies the analysed study to the clinician on the viewer page (patient data: never logged).

    From the instance's General Study module (DICOM PS3.3 C.7.2.1): Study Date (0008,0020, DA
    ``YYYYMMDD``), Study Time (0008,0030, TM), Study Description (0008,1030) and Accession Number
    (0008,0050). Empty strings where the header has none.
    """

    date: str = ""
    time: str = ""
    description: str = ""
    accession: str = ""

    @classmethod
    def from_dataset(cls, dataset: object) -> StudyIdentity:
        """The identity read from a pydicom ``Dataset`` (any object with those attributes)."""

        def text(keyword: str) -> str:
            return str(getattr(dataset, keyword, "") or "").strip()[:256]

        return cls(text("StudyDate"), text("StudyTime"), text("StudyDescription"), text("AccessionNumber"))


@dataclass(frozen=True)
class Analysis:
    """Output of fetch → explain for one instance: what the result store holds."""

    findings: StudyFindings
    chart: ChartImage  # the radiograph with the heat map blended in, chart-sized JPEG (the report's image)
    image_shape: tuple[int, int]  # stored image (rows, columns)
    heatmaps: list[HipHeatmap]
    display: np.ndarray  # uint8 radiograph at display size (viewer)
    heat: np.ndarray  # uint8 heat levels (⌊255 · heat⌋, explain.heatmap.heat_levels) at display size (viewer)
    stored_in_pacs: tuple[str, ...] = ()  # WADO-RS URLs of the SR and SC stored beside the images
    # The radiograph at source resolution for the viewer (JPEG, explain.heatmap.encode_radiograph); None
    # for results stored before it was kept (the viewer then shows ``display``).
    radiograph: ChartImage | None = None
    study: StudyIdentity | None = None  # the study's date, description and accession (viewer page)


@dataclass(frozen=True)
class ResultKey:
    """What an analysis is stored under: everything that must match for a result to be reused.

    The image store (the allow-listed base, canonical) and the patient are part of the key, so a
    request about another patient, or naming the same UIDs at another store, never receives a result
    computed for someone else; the caller (JWT issuer and tenant) keeps tenants apart; the model
    versions make a new model re-analyse.
    """

    store: str
    study_instance_uid: str
    sop_instance_uid: str
    patient_id: str
    caller: str
    models: str

    def digest(self) -> str:
        """A fixed-length id of the key (SHA-256, hex): the store's primary key, no identifiers in clear."""
        import hashlib
        import json

        fields = [self.store, self.study_instance_uid, self.sop_instance_uid, self.patient_id, self.caller, self.models]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


#: Patient and caller of a result analysed on arrival (never a valid request's: patientId is required).
ARRIVAL = ""
