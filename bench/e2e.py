"""Benchmark: one order-select hook end to end on the embedded defaults, per stage, cold and warm.

Cold = first hook for a study (analysis cache empty); warm = the same study again (cache hit).
Starts the real local Triton, writes the sample phantom study into a temporary folder store and
drives the pipeline in-process (the HTTP layer adds ~1 ms). Prints median and p95 per stage, and
in the same run the naive baseline of ``bench/baseline.py`` on the same study with the ratio
(``--no-baseline`` skips it; it needs the ``[train]`` extra). Absolute figures depend on the CPU
(AVX-512 vs AVX2 runs the same model up to 4× apart): the CPU model is printed with them.

    .venv/bin/python bench/e2e.py [--runs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pydicom
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cds_service.cdshooks.models import HookRequest, to_json
from cds_service.ehr import imaging_study_bundle, load_example, with_studies
from cds_service.inference.triton_server import TritonServer
from cds_service.pipeline import STAGES as HOOK_STAGES
from cds_service.pipeline import AnalysisPipeline
from cds_service.settings import Settings
from cds_service.telemetry import setup_tracing
from cds_service.training.phantoms import write_sample_study

STAGES = [*HOOK_STAGES, "hook"]


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), printed beside every absolute figure."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(settings: Settings, request: HookRequest, runs: int, exporter: InMemorySpanExporter) -> dict:
    results: dict = {"cold": defaultdict(list), "warm": defaultdict(list), "cold_spans": []}
    pipeline = AnalysisPipeline.from_settings(settings)
    await pipeline.handle(request)  # connect, read model metadata, warm Triton and the file index
    for _ in range(runs):
        for mode in ("cold", "warm"):
            if mode == "cold":
                await pipeline.store.clear_results()
            exporter.clear()
            started = time.perf_counter()
            outcome = await pipeline.handle(request)
            to_json(outcome.response)
            results[mode]["total (incl. JSON)"].append(1000 * (time.perf_counter() - started))
            spans = exporter.get_finished_spans()
            if mode == "cold":
                results["cold_spans"] = list(spans)
            for span in spans:
                if span.name in STAGES:
                    results[mode][span.name].append((span.end_time - span.start_time) / 1e6)
    await pipeline.close()
    return results


def span_tree(spans: list) -> list[str]:
    """One hook's spans as an indented tree: start offset and duration (ms), then the attributes."""
    children: dict[int | None, list] = defaultdict(list)
    ids = {span.context.span_id for span in spans}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None and span.parent.span_id in ids else None
        children[parent].append(span)
    origin = min(span.start_time for span in spans)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in sorted(children[parent], key=lambda s: s.start_time):
            start, took = (span.start_time - origin) / 1e6, (span.end_time - span.start_time) / 1e6
            attributes = " ".join(f"{k}={v}" for k, v in sorted((span.attributes or {}).items()))
            lines.append(f"{start:>7.1f} {took:>7.1f}  {'  ' * depth}{span.name:<{24 - 2 * depth}} {attributes}")
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-baseline", action="store_true", help="skip the naive baseline (no [train] extra)")
    parser.add_argument("--trace", action="store_true", help="print the span tree of the last cold hook")
    args = parser.parse_args()
    exporter = InMemorySpanExporter()
    setup_tracing(processors=[SimpleSpanProcessor(exporter)])
    base = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "dicom"
        path = write_sample_study(folder)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        template = load_example("order-select.json")
        request = HookRequest.model_validate(
            with_studies(template, imaging_study_bundle(ds, template["context"]["patientId"], folder.as_uri()))
        )
        triton = TritonServer.on_free_ports(base, Path(tmp) / "triton")
        triton.start()
        try:
            settings = base.model_copy(update={"dicom_folder": folder, "triton_url": triton.grpc_url})
            results = asyncio.run(run(settings, request, args.runs, exporter))
        finally:
            triton.stop()
        naive = None
        if not args.no_baseline:
            from baseline import measure  # bench/baseline.py, beside this file

            arch, size = pipeline_model(settings)
            naive = measure(path, arch, size, max(3, args.runs // 2))
    print(
        f"\nOne order-select hook, sample study {ds.Columns}×{ds.Rows} {ds.Modality} "
        f"({ds.file_meta.TransferSyntaxUID.name}), {args.runs} runs, milliseconds, on {cpu_model()} "
        f"({os.cpu_count()} cores)\n"
    )
    print(f"{'stage':<20}{'cold median':>12}{'cold p95':>10}{'warm median':>13}{'warm p95':>10}{'cold/warm':>11}")
    for stage in [*STAGES, "total (incl. JSON)"]:
        cold, warm = results["cold"].get(stage, []), results["warm"].get(stage, [])
        if not cold and not warm:
            continue
        cm = statistics.median(cold) if cold else float("nan")
        wm = statistics.median(warm) if warm else float("nan")
        row = f"{stage:<20}{cm:>12.1f}{percentile(cold, 0.95) if cold else float('nan'):>10.1f}"
        row += f"{wm:>13.1f}{percentile(warm, 0.95) if warm else float('nan'):>10.1f}"
        row += f"{cm / wm:>10.1f}×" if cold and warm and wm > 0 else f"{'–':>11}"
        print(row)
    cold = results["cold"]
    outside = [
        statistics.median(cold["hook"]) - statistics.median(cold["infer"]),
        percentile(cold["hook"], 0.95) - percentile(cold["infer"], 0.95),
    ]
    print(f"\ncold hook except infer: median {outside[0]:.1f} ms, p95 {outside[1]:.1f} ms (target ≤ 40 ms)")
    print(f"warm hook p95: {percentile(results['warm']['hook'], 0.95):.1f} ms (target ≤ 15 ms)")
    if naive is not None:
        ours = statistics.median(cold["total (incl. JSON)"])
        print("\nNaive baseline on the same study (bench/baseline.py: pydicom LUTs, PIL, eager PyTorch + Grad-CAM):")
        for name, values in naive.items():
            print(f"  {name:<20}{statistics.median(values):>10.1f} ms")
        total = statistics.median(naive["total"])
        ratio = total / ours
        print(f"  {'ratio':<20}{ratio:>10.1f}× (baseline {total:.0f} ms / cold hook {ours:.0f} ms; target ≥ 10×)")
    if args.trace:
        print("\nSpans of the last cold hook (start ms, duration ms, name, attributes; no patient data):")
        print("\n".join(span_tree(results["cold_spans"])))
    print("\nStudy A's published time per image including Grad-CAM: 1170 ms (GPU not stated; not this CPU).")


def pipeline_model(settings: Settings) -> tuple[str, int]:
    """The served fracture model's architecture and input size, from its config.pbtxt parameters."""
    from cds_service.inference.triton_server import read_model_config

    config = read_model_config(settings.model_repository / "fracture" / "config.pbtxt")
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    return parameters.get("architecture", "test_resnet"), int(parameters.get("input_size", "192"))


if __name__ == "__main__":
    main()
