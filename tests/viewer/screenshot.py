"""Write ``docs/viewer.png``: the viewer opened from a real card, in Debian's chromium.

    .venv/bin/python -m tests.viewer.screenshot [OUTPUT] [--phone PHONE_OUTPUT]

Runs what the demo runs — the sample study (a right Garden III phantom), the local Triton with the
shipped models, the service — sends an order-select hook, and screenshots the card's viewer link.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pydicom

from cds_service.cdshooks.jwt import ensure_keypair
from cds_service.demo import free_port, running_service
from cds_service.ehr import imaging_study_bundle, load_example, send_hook, with_studies
from cds_service.inference.triton_server import TritonServer
from cds_service.settings import Settings
from cds_service.training.phantoms import write_sample_study
from tests.viewer.browser import launch_chromium, offline_only


def card_viewer_url(folder: Path) -> tuple[str, object, object]:
    """Start Triton and the service, send the demo hook; returns the link and what to stop."""
    ensure_keypair(folder / "private.pem", folder / "public.pem")
    path = write_sample_study(folder / "dicom", seed=7)
    base = Settings(
        port=free_port(),
        jwt_public_key_file=folder / "public.pem",
        dicom_folder=folder / "dicom",
        feedback_db=folder / "feedback.sqlite3",
        card_link="absolute",  # the screenshot opens the card's link itself: no EHR to launch a SMART app
    )
    triton = TritonServer.on_free_ports(base, folder / "triton")
    triton.start()
    settings = base.model_copy(update={"triton_url": triton.grpc_url})
    service = running_service(settings)
    base_url = service.__enter__()
    template = load_example("order-select.json")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    request = with_studies(
        template, imaging_study_bundle(ds, template["context"]["patientId"], (folder / "dicom").as_uri())
    )
    answer = send_hook(
        f"{base_url}/cds-services/hip-fracture-order-select",
        request,
        (folder / "private.pem").read_bytes(),
        settings.jwt_issuer,
    )
    answer.raise_for_status()
    return answer.json()["cards"][0]["links"][0]["url"], service, triton


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default="docs/viewer.png", type=Path)
    parser.add_argument("--phone", type=Path, help="also write a 360 px wide (phone) screenshot here")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        url, service, triton = card_viewer_url(Path(folder))
        try:
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                shots = [(args.output, {"width": 1280, "height": 760}, 1)]
                if args.phone:
                    shots.append((args.phone, {"width": 360, "height": 740}, 2))
                for output, viewport, scale in shots:
                    context = browser.new_context(viewport=viewport, device_scale_factor=scale)
                    blocked: list[str] = []
                    offline_only(context, blocked)
                    page = context.new_page()
                    page.goto(url)
                    page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
                    output.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(output), full_page=True)
                    context.close()
                    assert not blocked, blocked
                    print(f"wrote {output}")
                browser.close()
        finally:
            service.__exit__(None, None, None)
            triton.stop()


if __name__ == "__main__":
    main()
