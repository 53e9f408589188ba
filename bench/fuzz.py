"""Fuzz the real running service with ten thousand (or more) Hypothesis-generated requests.

Starts the local Triton and the service (uvicorn in a thread, a free port, a sample phantom study in
a temporary folder store), then sends signed hook and feedback requests mutated by the strategies of
``tests/fuzz_strategies.py`` (the same as ``tests/test_fuzz.py``) over one persistent httpx.Client.
Prints a table of status codes per endpoint and the count; exits 1 if any answer is outside
{200, 400, 401, 412, 413} or the service stops answering, and writes the offending cases to a file.

    .venv/bin/python bench/fuzz.py [--examples 10000] [--seed 0] [--failures out/fuzz-failures.jsonl]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from hypothesis import HealthCheck, Phase, given, seed, settings

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.fuzz_strategies

from cds_service.cdshooks.cards import UNAVAILABLE_SUMMARY  # noqa: E402
from cds_service.cdshooks.jwt import ensure_keypair  # noqa: E402
from cds_service.demo import free_port, running_service  # noqa: E402
from cds_service.inference.triton_server import TritonServer  # noqa: E402
from cds_service.settings import Settings  # noqa: E402
from cds_service.training.phantoms import write_sample_study  # noqa: E402
from tests.fuzz_strategies import ALLOWED, Case, cases, send  # noqa: E402
from tests.test_fuzz import LIMIT, studies_for  # noqa: E402


def internal_error(response: httpx.Response) -> bool:
    """True for a 200 whose card is a last-resort answer to an unexpected exception (web layer or pipeline)."""
    try:
        cards = response.json().get("cards") or []
    except ValueError:
        return False
    return any(
        card.get("summary") == UNAVAILABLE_SUMMARY and "internal error" in str(card.get("detail")) for card in cards
    )


def fuzz(base_url: str, private_key: bytes, studies: dict, examples: int, rng_seed: int, failures: Path) -> int:
    table: Counter[tuple[str, str]] = Counter()
    bad: list[dict] = []
    started = time.perf_counter()
    with httpx.Client(timeout=120) as client:

        @seed(rng_seed)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate],  # count and record, no shrinking: every case is sent once
            suppress_health_check=list(HealthCheck),
        )
        @given(case=cases(studies))
        def run(case: Case) -> None:
            endpoint = "feedback" if case.path.endswith("/feedback") else case.path.rsplit("/", 1)[-1]
            try:
                response = send(client, base_url, private_key, case)
            except httpx.HTTPError as exc:  # a dropped connection counts as a failure
                print(f"transport error: {type(exc).__name__}", file=sys.stderr)
                response = None
            status = response.status_code if response is not None else 0
            label = str(status)
            if status == 200 and internal_error(response):
                label = "200*"  # answered, but by a last-resort card: a bug to report
            table[(endpoint, label)] += 1
            if status not in ALLOWED or label == "200*":
                body = case.body.decode("utf-8", "replace")
                bad.append({"status": label, "path": case.path, "auth": case.auth, "body": body})

        run()
        healthy = client.get(base_url + "/healthz").status_code == 200
    elapsed = time.perf_counter() - started

    endpoints = sorted({endpoint for endpoint, _ in table})
    statuses = sorted({status for _, status in table})  # "200*": a 200 carrying a last-resort card
    width = max(len(e) for e in endpoints) + 2
    print(f"\n{'endpoint':<{width}}" + "".join(f"{s:>8}" for s in statuses) + f"{'total':>9}")
    for endpoint in endpoints:
        row = [table[(endpoint, s)] for s in statuses]
        print(f"{endpoint:<{width}}" + "".join(f"{n:>8}" for n in row) + f"{sum(row):>9}")
    totals = [sum(table[(e, s)] for e in endpoints) for s in statuses]
    print(f"{'all':<{width}}" + "".join(f"{n:>8}" for n in totals) + f"{sum(totals):>9}")
    outside = sum(1 for item in bad if item["status"] != "200*")
    print(
        f"\n{sum(totals)} requests in {elapsed:.0f} s ({sum(totals) / elapsed:.0f}/s); /healthz afterwards: "
        f"{'200' if healthy else 'FAILED'}; outside {sorted(ALLOWED)}: {outside}; "
        f"last-resort cards (200*): {len(bad) - outside}"
    )
    if bad:
        failures.parent.mkdir(parents=True, exist_ok=True)
        failures.write_text("".join(json.dumps(item) + "\n" for item in bad))
        print(f"offending cases written to {failures}")
    return 0 if healthy and not outside else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--failures", type=Path, default=REPO / "out" / "fuzz-failures.jsonl")
    parser.add_argument("--verbose", action="store_true", help="show the service's warnings too")
    args = parser.parse_args()
    if not args.verbose:  # errors (last-resort log.exception) still show
        logging.getLogger("cds_service").setLevel(logging.ERROR)
        logging.getLogger("uvicorn.error").setLevel(logging.ERROR)
    base = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ensure_keypair(folder / "private.pem", folder / "public.pem")
        write_sample_study(folder / "dicom", seed=7)
        triton = TritonServer.on_free_ports(base, folder / "triton")
        triton.start(timeout_s=120)
        try:
            settings = base.model_copy(
                update={
                    "port": free_port(),
                    "public_base_url": "",
                    "jwt_public_key_file": folder / "public.pem",
                    "dicom_folder": folder / "dicom",
                    "feedback_db": folder / "feedback.sqlite3",
                    "triton_url": triton.grpc_url,
                    "hook_deadline_s": 5.0,
                    "max_request_bytes": LIMIT,
                }
            )
            with running_service(settings) as base_url:
                studies = studies_for(folder / "dicom")
                key = (folder / "private.pem").read_bytes()
                return fuzz(base_url, key, studies, args.examples, args.seed, args.failures)
        finally:
            triton.stop()


if __name__ == "__main__":
    sys.exit(main())
