"""The README's local sandbox recipe by hand: ``.venv/bin/python -m tests.sandbox``.

Starts what ``tests/sandbox`` drives (the sample AP pelvis study in a folder store, the FHIR test server
with the patient's chart behind the open FHIR gateway, the local Triton, the service configured as the
recipe says, the sandbox's build), all on loopback, prints the sandbox URL to open in a browser and
stops everything on Ctrl-C. Nothing here is product code: the FHIR gateway is a test stand-in.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from pathlib import Path

from cds_service.cdshooks.jwt import ensure_keypair
from cds_service.demo import running_service
from cds_service.inference.triton_server import TritonServer
from cds_service.settings import Settings
from cds_service.training.phantoms import write_sample_study
from tests.sandbox.stack import (
    PATIENT,
    open_fhir_gateway,
    put_chart,
    sandbox_available,
    sandbox_settings,
    sandbox_site,
    sandbox_url,
)
from tests.servers.fhir import MedplumFhirServer


def main() -> None:
    """Run the stack until interrupted."""
    if not sandbox_available() or not MedplumFhirServer.installed():
        raise SystemExit("needs ../shared/tools/cds-hooks-sandbox/build and the FHIR test server (scripts/dev test)")
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hipcad-sandbox-")))
        dicom = work / "dicom"
        dicom.mkdir()
        write_sample_study(dicom, seed=7)
        ensure_keypair(work / "private.pem", work / "public.pem")
        fhir = MedplumFhirServer(work).start()
        stack.callback(fhir.stop)
        put_chart(fhir, dicom)
        triton = TritonServer.on_free_ports(Settings(), work / "triton")
        triton.start(timeout_s=180)
        stack.callback(triton.stop)
        site = stack.enter_context(sandbox_site())
        fhir_base = stack.enter_context(open_fhir_gateway(fhir.base_url, fhir.token, site))
        base = Settings(
            host="127.0.0.1",
            jwt_public_key_file=work / "public.pem",
            dicom_folder=dicom,
            output_folder=work / "out",
            feedback_db=work / "store.sqlite3",
            triton_url=triton.grpc_url,
            hook_deadline_s=60.0,
        )
        service = stack.enter_context(running_service(sandbox_settings(base, site, fhir_base)))
        discovery = f"{service}/cds-services"
        print(f"CDS service:  {discovery}\nFHIR (open):  {fhir_base}\n")
        for label, hook, screen in (
            ("Patient view", "patient-view", "patient-view"),
            ("PAMA imaging", "order-select", "pama"),
        ):
            print(f"{label}: {sandbox_url(site, discovery, fhir_base, PATIENT, hook=hook, screen=screen)}")
        print("\nCtrl-C stops everything.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
