"""``cds-service demo``: the main job on the embedded defaults, end to end, in one command.

Writes a sample bilateral AP pelvis study (a synthetic phantom) into the local DICOM folder store,
starts the real Triton (local CPU build) and the service, sends an ``order-select`` hook exactly as
an EHR would (signed JWT, prefetch with the ImagingStudy Bundle, a draft hip X-ray order), prints
the cards, writes the response, the DiagnosticReport and the heat map (PNG) to the output folder,
and stops what it started.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import uvicorn
from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel

from cds_service.app import create_app
from cds_service.cdshooks.jwt import ensure_keypair
from cds_service.ehr import imaging_study_bundle, load_example, send_hook, with_studies
from cds_service.inference.triton_server import TritonServer, free_port
from cds_service.settings import Settings

STYLE = {"critical": "bold red", "warning": "bold yellow", "info": "bold cyan"}


@contextlib.contextmanager
def running_server(app: object, settings: Settings) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread on ``settings.host:port``; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the HTTP server did not start")
        time.sleep(0.05)
    try:
        yield settings.base_url()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def running_service(settings: Settings) -> contextlib.AbstractContextManager[str]:
    """The CDS service (uvicorn) in a thread; yields its base URL."""
    return running_server(create_app(settings), settings)


def print_cards(console: Console, response: dict) -> None:
    """Show the cards as an EHR would, readable in a terminal."""
    cards = response.get("cards", [])
    if not cards:
        console.print("[dim]No cards.[/dim]")
    for card in cards:
        parts = [f"**{card['summary']}**", card.get("detail", "")]
        parts += [f"**Suggestion:** {suggestion['label']}" for suggestion in card.get("suggestions", [])]
        parts += [f"**Link:** {link['label']} (live while the service runs)" for link in card.get("links", [])]
        console.print(
            Panel(
                Markdown("\n\n".join(parts)),
                title=f"[{STYLE.get(card['indicator'], '')}]{card['indicator'].upper()}[/]",
                subtitle=card["source"]["label"],
            )
        )


def write_outputs(output: Path, request: dict, response: dict) -> list[Path]:
    """Write the request, the CDS response, the DiagnosticReport, its chart image and the heat map.

    ``heatmap.png`` is the view a clinician opens from the card's link, as one image: the radiograph
    at source resolution with the heat layer over it and each hip labelled R/L by the laterality the
    service used (the viewer's ``overlay.png``); the DiagnosticReport carries one small chart image
    (``heatmap-report.jpg``).
    """
    output.mkdir(parents=True, exist_ok=True)
    written = []

    def dump(name: str, payload: object) -> None:
        path = output / name
        path.write_text(json.dumps(payload, indent=2) + "\n")
        written.append(path)

    def save(name: str, data: bytes) -> None:
        path = output / name
        path.write_bytes(data)
        written.append(path)

    dump("hook-request.json", request)
    dump("cds-response.json", response)
    for card in response.get("cards", []):
        for suggestion in card.get("suggestions", []):
            for action in suggestion.get("actions", []):
                resource = action.get("resource") or {}
                if resource.get("resourceType") == "DiagnosticReport":
                    dump("diagnostic-report.json", resource)
                    for media in resource.get("contained", []):
                        content = media.get("content") or {} if media.get("resourceType") == "Media" else {}
                        if str(content.get("contentType", "")).startswith("image/") and content.get("data"):
                            extension = content["contentType"].split("/")[1].replace("jpeg", "jpg")
                            save(f"heatmap-report.{extension}", base64.b64decode(content["data"]))
        for link in card.get("links", []):
            if "/viewer/" in link.get("url", ""):
                save("heatmap.png", viewer_overlay_png(link["url"]))
    return written


def viewer_overlay_png(viewer_url: str) -> bytes:
    """The viewer's labelled overlay (radiograph + heat layer + R/L labels, source resolution) as PNG."""
    import httpx

    answer = httpx.get(f"{viewer_url}/overlay.png", timeout=30)
    answer.raise_for_status()
    return answer.content


def run_demo(settings: Settings, output: Path, seed: int = 7) -> int:
    """The whole main job; returns a process exit code."""
    from cds_service.training.phantoms import write_sample_study

    console = Console()
    keys = settings.jwt_public_key_file.parent
    private_key = keys / "ehr-private.pem"
    ensure_keypair(private_key, settings.jwt_public_key_file)
    # The demo has no EHR to launch a SMART app from (no authorization server, no launch context), so its
    # card keeps the signed absolute viewer link (HIPCAD_CARD_LINK=absolute, the documented fallback):
    # write_outputs follows it to save heatmap.png, and a terminal user can open it while the demo runs.
    settings = settings.model_copy(update={"port": free_port(), "public_base_url": "", "card_link": "absolute"})

    with console.status("Writing a sample AP pelvis study (synthetic phantom)…"):
        path = write_sample_study(settings.dicom_folder, seed=seed)
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    console.print(f"[green]✓[/] sample study: {path.relative_to(settings.dicom_folder)} ({dataset.Modality})")

    triton = TritonServer.on_free_ports(settings, settings.triton_workdir)
    with console.status("Starting Triton Inference Server (local CPU build)…"):
        triton.start()
    console.print(f"[green]✓[/] Triton ready on {triton.grpc_url}")
    try:
        settings = settings.model_copy(update={"triton_url": triton.grpc_url})
        with running_service(settings) as base_url:
            console.print(f"[green]✓[/] CDS service on {base_url}")
            template = load_example("order-select.json")
            studies = imaging_study_bundle(
                dataset, template["context"]["patientId"], settings.dicom_folder.resolve().as_uri()
            )
            request = with_studies(template, studies)
            url = f"{base_url}/cds-services/hip-fracture-order-select"
            started = time.perf_counter()
            with console.status("Sending order-select hook (signed JWT, prefetch)…"):
                answer = send_hook(url, request, private_key.read_bytes(), settings.jwt_issuer)
            elapsed = time.perf_counter() - started
            if answer.status_code != 200:
                console.print(f"[red]✗ the service answered HTTP {answer.status_code}: {answer.text[:500]}")
                return 1
            response = answer.json()
            console.print(f"[green]✓[/] answered in {elapsed:.2f} s")
            print_cards(console, response)
            written = write_outputs(output, request, response)
            for path in written:
                console.print(f"  wrote {path}")
            if output / "heatmap.png" not in written:
                console.print("[red]✗ no heat map in the response")
                return 1
    finally:
        triton.stop()
    return 0
