"""Helpers for ``bench/triton.sh``: Triton's statistics API and the summary of perf_analyzer's CSV files.

    python bench/triton_report.py stats --url http://127.0.0.1:8000 > before.json
    python bench/triton_report.py table RUN_DIR --cpu "AMD EPYC" --batch 2 --size 192

``table`` reads ``RUN_DIR/{model}-c{concurrency}.csv`` (perf_analyzer ``-f``) with the statistics
snapshots taken before and after that run (``….before.json`` / ``….after.json``) and prints
throughput, p50/p99 latency and the batch size Triton's dynamic batcher actually executed
(Δ inference_count / Δ execution_count per model; for the ensemble, per composing model).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import urllib.request
from pathlib import Path

COMPOSING = {"hip_analysis": ("fracture", "garden")}


def stats(url: str) -> dict[str, dict[str, int]]:
    """Per model: inference_count (images) and execution_count (batched runs) so far."""
    with urllib.request.urlopen(f"{url.rstrip('/')}/v2/models/stats", timeout=10) as response:
        body = json.load(response)
    totals: dict[str, dict[str, int]] = {}
    for entry in body.get("model_stats", []):
        model = totals.setdefault(entry["name"], {"inference_count": 0, "execution_count": 0})
        model["inference_count"] += int(entry.get("inference_count", 0))
        model["execution_count"] += int(entry.get("execution_count", 0))
    return totals


def average_batch(before: dict, after: dict, model: str) -> float | None:
    inferences = after.get(model, {}).get("inference_count", 0) - before.get(model, {}).get("inference_count", 0)
    executions = after.get(model, {}).get("execution_count", 0) - before.get(model, {}).get("execution_count", 0)
    return inferences / executions if executions > 0 else None


def read_csv(path: Path) -> dict[str, str]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise SystemExit(f"{path}: perf_analyzer wrote no measurement")
    return rows[-1]


def table(run: Path, cpu: str, batch: int, size: int) -> str:
    pattern = re.compile(r"^(?P<model>.+)-c(?P<concurrency>\d+)\.csv$")
    runs = sorted(
        (m["model"], int(m["concurrency"]), path) for path in run.glob("*.csv") if (m := pattern.match(path.name))
    )
    if not runs:
        raise SystemExit(f"no perf_analyzer results in {run}")
    header = (
        f"Triton perf_analyzer over gRPC, {batch} crops of 1×{size}×{size} uint8 per request, "
        f"random data; CPU: {cpu}\n"
        "Throughput and latency are absolute figures for that CPU (shared with whatever else runs on it).\n"
    )
    columns = ("model", "concurrency", "infer/s", "requests/s", "p50 ms", "p99 ms", "executed batch (avg)", "CPU")
    lines = []
    for model, concurrency, path in runs:
        row = read_csv(path)
        before = json.loads(path.with_suffix(".before.json").read_text())
        after = json.loads(path.with_suffix(".after.json").read_text())
        throughput = float(row["Inferences/Second"])
        batches = []
        for name in COMPOSING.get(model, (model,)):
            value = average_batch(before, after, name)
            batches.append(f"{name} {value:.2f}" if value is not None else f"{name} n/a")
        lines.append(
            (
                model,
                str(concurrency),
                f"{throughput:.1f}",
                f"{throughput / batch:.1f}",
                f"{float(row['p50 latency']) / 1000:.1f}",
                f"{float(row['p99 latency']) / 1000:.1f}",
                ", ".join(batches),
                cpu,
            )
        )
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(columns)]
    render = ["  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip() for line in lines]
    head = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()
    return header + "\n" + head + "\n" + "  ".join("-" * w for w in widths) + "\n" + "\n".join(render) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    snapshot = sub.add_parser("stats", help="print Triton's per-model statistics as JSON")
    snapshot.add_argument("--url", required=True, help="Triton's HTTP address, http://host:port")
    summary = sub.add_parser("table", help="summarise a run folder")
    summary.add_argument("run", type=Path)
    summary.add_argument("--cpu", required=True)
    summary.add_argument("--batch", type=int, required=True)
    summary.add_argument("--size", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "stats":
        json.dump(stats(args.url), sys.stdout)
        print()
    else:
        sys.stdout.write(table(args.run, args.cpu, args.batch, args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
