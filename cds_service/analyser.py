"""The analysis of one image, stateless: fetch → decode → split hips → infer → explain (→ store results).

    StudyRef (+ dataset in hand) ──► Analysis

One trace span and one latency histogram per stage. Nothing here caches or schedules: that is
:mod:`cds_service.scheduler`'s job.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from cds_service.dicom.decode import DecodedImage
from cds_service.dicom.preprocess import HipCrop, display_image, split_hips
from cds_service.dicom.results import result_objects
from cds_service.dicom.retrieve import DicomRetriever
from cds_service.dicom.worker import decode_in_worker
from cds_service.domain import Analysis, HipInference, StudyFindings, StudyIdentity
from cds_service.errors import StudyUnavailableError
from cds_service.explain.heatmap import (
    ChartImage,
    HipHeatmap,
    encode_radiograph,
    heat_canvas,
    heat_levels,
    normalise_cam,
    render_chart_image,
)
from cds_service.fhir.imaging_study import StudyRef
from cds_service.findings import calibrated_probabilities, fracture_cam, interpret
from cds_service.inference.client import FRACTURE_MODEL, GARDEN_MODEL, TritonInferenceClient
from cds_service.metrics import STAGE_LATENCY, timed
from cds_service.settings import Settings
from cds_service.telemetry import tracer

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def usable_cores(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Cores this process may use: its affinity mask, bounded by a cgroup v2 CPU quota.

    In a Kubernetes pod the affinity mask is the node's cores (say 64) while ``resources.limits.cpu``
    (say 2) is a quota in ``cpu.max`` ("200000 100000": 2 CPUs' worth of each 100 ms); a pool sized
    to the node would oversubscribe the pod.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 (or an unreadable one): the affinity mask alone
        pass
    return cores


#: The image stages (decode, split, explain, DICOM results) run here: one thread per core, first come
#: first served. In asyncio's shared default pool (cores + 4 threads, also running every store query)
#: concurrent analyses interleaved their stages and all finished late together.
_IMAGE_STAGES = ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix="hipcad-image")


async def on_image_thread(function: Callable[..., _T], *args: Any) -> _T:
    """``function(*args)`` on the image-stage pool, in this task's context (its trace span included)."""
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_IMAGE_STAGES, functools.partial(context.run, function, *args))


class UidMismatchError(StudyUnavailableError):
    """The retrieved instance is not the one the ImagingStudy names (no card: the data disagree)."""


class Analyser:
    """Runs the image stages; holds only its clients (DICOMweb retriever, Triton)."""

    def __init__(self, settings: Settings, inference: TritonInferenceClient, retriever: DicomRetriever) -> None:
        self.settings = settings
        self.inference = inference
        self.retriever = retriever

    async def models_label(self) -> str:
        """The served model versions, as part of the result key (a new version re-analyses)."""
        models = await self.inference.models()
        return ",".join(models[name].label for name in (FRACTURE_MODEL, GARDEN_MODEL))

    # Stage: fetch ----------------------------------------------------------------------------
    async def fetch(self, study: StudyRef) -> Any:
        with tracer().start_as_current_span("fetch"), timed(STAGE_LATENCY, stage="fetch"):
            return await self.retriever.retrieve_instance(
                study.endpoint_address, study.study_instance_uid, study.series_instance_uid, study.sop_instance_uid
            )

    # Stage: decode ---------------------------------------------------------------------------
    def decode(self, dataset: Any) -> DecodedImage:
        with tracer().start_as_current_span("decode") as span, timed(STAGE_LATENCY, stage="decode"):
            span.set_attribute("dicom.transfer_syntax_uid", str(dataset.file_meta.get("TransferSyntaxUID", "")))
            image = decode_in_worker(dataset, self.settings)
            span.set_attribute("dicom.rows", image.grey.shape[0])
            span.set_attribute("dicom.columns", image.grey.shape[1])
            return image

    # Stage: split hips -----------------------------------------------------------------------
    def split_hips(self, image: DecodedImage, size: int) -> list[HipCrop]:
        with tracer().start_as_current_span("split_hips") as span, timed(STAGE_LATENCY, stage="split_hips"):
            crops = split_hips(image, size)
            span.set_attribute("hipcad.hips", len(crops))
            span.set_attribute("hipcad.laterality_known", all(c.laterality for c in crops))
            return crops

    # Stage: infer ----------------------------------------------------------------------------
    async def infer(self, crops: list[HipCrop]) -> HipInference:
        with tracer().start_as_current_span("infer") as span, timed(STAGE_LATENCY, stage="infer"):
            span.set_attribute("hipcad.model", self.inference.ensemble)
            return await self.inference.infer(np.stack([crop.pixels for crop in crops]))

    # Stage: explain --------------------------------------------------------------------------
    def explain(
        self,
        image: DecodedImage,
        crops: list[HipCrop],
        maps: np.ndarray,
        probabilities: list[float],
    ) -> tuple[list[HipHeatmap], np.ndarray, np.ndarray, ChartImage]:
        """Each hip's fracture map (``maps`` [B, h, w]: :func:`~cds_service.findings.fracture_cam`),
        normalised, then scaled by that hip's fracture probability.

        Renders the one chart-sized image the report carries; the full-resolution view is the
        viewer's (display image + heat layer, rendered when a clinician opens the link).

        The scaling keeps a confident "no fracture" hip from showing a full-strength map: min-max
        normalisation alone would blow its noise up to the same colours as a real finding.
        """
        with tracer().start_as_current_span("explain"), timed(STAGE_LATENCY, stage="explain"):
            heatmaps = [
                HipHeatmap(
                    crop.laterality,
                    normalise_cam(maps[i]) * np.float32(probabilities[i]),
                    crop.mirrored,
                    crop.box,
                )
                for i, crop in enumerate(crops)
            ]
            display = display_image(image)
            heat = heat_canvas(heatmaps, image.grey.shape, display.shape)
            chart = render_chart_image(display, heat, heatmaps, image.grey.shape)
            return heatmaps, display, heat_levels(heat), chart

    # Stage: store results (optional) ----------------------------------------------------------
    async def store_results(
        self,
        address: str,
        dataset: Any,
        findings: StudyFindings,
        heatmaps: list[HipHeatmap],
    ) -> tuple[str, ...]:
        """With ``HIPCAD_STORE_RESULTS``: the SR and heat-map SC, STOW-RS'd into the study's own store at ``address``.

        A store that refuses is logged and the hook still answers (the EHR result does not depend on
        the PACS copy); the WADO-RS URLs of what was stored are returned (card, report).
        """
        if not self.settings.store_results:
            return ()
        with tracer().start_as_current_span("store_results") as span, timed(STAGE_LATENCY, stage="store_results"):
            try:
                objects = await on_image_thread(
                    functools.partial(result_objects, uid_root=self.settings.uid_root), dataset, findings, heatmaps
                )
                stored = await self.retriever.store_instances(address, objects)
            except Exception as exc:  # the card does not wait for, or fail with, the PACS copy
                span.set_attribute("hipcad.stored", 0)
                log.warning("result not stored in the PACS: %s", type(exc).__name__)
                return ()
            span.set_attribute("hipcad.stored", len(stored))
            return tuple(stored)

    # The whole analysis ------------------------------------------------------------------------
    async def analyse(self, study: StudyRef, dataset: Any = None, results_to: str | None = None) -> Analysis:
        """fetch (unless ``dataset`` is already in hand: an arrived image) → … → explain → store results.

        Call :func:`check_uids` on the dataset first when the key depends on the retrieved instance.
        """
        models = await self.inference.models()
        fracture, garden = models[FRACTURE_MODEL], models[GARDEN_MODEL]
        if dataset is None:
            dataset = await self.fetch(study)
        check_uids(dataset, study)
        image = await on_image_thread(self.decode, dataset)
        crops = await on_image_thread(self.split_hips, image, fracture.input_size)
        outputs = await self.infer(crops)
        findings = StudyFindings(
            hips=interpret([c.laterality for c in crops], outputs, fracture, garden),
            fracture_model=fracture,
            garden_model=garden,
            sop_instance_uid=image.sop_instance_uid,
        )
        maps = fracture_cam(outputs.fracture_cam, calibrated_probabilities(outputs.fracture_logits, fracture), fracture)
        probabilities = [hip.fracture_probability for hip in findings.hips]
        heatmaps, display, heat, chart = await on_image_thread(self.explain, image, crops, maps, probabilities)
        stored = await self.store_results(results_to or study.endpoint_address, dataset, findings, heatmaps)
        radiograph = await on_image_thread(encode_radiograph, image.grey)  # the viewer's source-resolution image
        return Analysis(
            findings,
            chart,
            image.grey.shape,
            heatmaps,
            display,
            heat,
            stored,
            radiograph,
            StudyIdentity.from_dataset(dataset),
        )


def check_uids(dataset: Any, study: StudyRef) -> str:
    """The retrieved SOP Instance UID, once the instance is the one the ImagingStudy names."""
    study_uid = str(dataset.get("StudyInstanceUID", ""))
    sop_uid = str(dataset.get("SOPInstanceUID", ""))
    if study_uid != study.study_instance_uid:
        raise UidMismatchError("the retrieved instance belongs to another study than the ImagingStudy names")
    if study.sop_instance_uid and sop_uid != study.sop_instance_uid:
        raise UidMismatchError("the retrieved instance is not the one the ImagingStudy names")
    if not sop_uid:
        raise UidMismatchError("the retrieved instance has no SOP Instance UID")
    return sop_uid
