"""SMART launch without a browser: the allow-list, standalone launch with each kind of client against the
real launcher, and the pieces (scopes, appContext, the card's link)."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from joserfc.jwk import ECKey

from cds_service.cdshooks.cards import viewer_card_link
from cds_service.smart.result import app_context_token, find_result, grants_read
from cds_service.viewer import smart_app_context
from cds_service.viewer.signing import sign
from tests.smart.conftest import WITH_RESULT
from tests.smart.test_launch_in_browser import walk_to_callback


def sim_iss(launcher, client_type: int, **options: str) -> str:
    """The launcher's FHIR base for a standalone launch with these simulated EHR options (its ``sim`` segment)."""
    arr = [2, WITH_RESULT, "hipcad-test-practitioner", "NONE", 1, 1, 0, "", "", options.get("client_id", ""),
           options.get("client_secret", ""), "", "", options.get("jwks", ""), client_type, 2, ""]  # fmt: skip
    sim = base64.urlsafe_b64encode(json.dumps(arr).encode()).decode().rstrip("=")
    return f"{launcher.base_url}/v/r4/sim/{sim}/fhir"


def test_an_iss_not_on_the_allow_list_is_never_contacted(make_stack):
    hits: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        stack = make_stack()
        for iss in (f"http://127.0.0.1:{server.server_address[1]}/fhir", f"{stack.launcher.base_url}/v/r3/fhir"):
            answer = httpx.get(f"{stack.service_url}/smart/launch", params={"iss": iss, "launch": "x"})
            assert answer.status_code == 403 and "not one this service is configured to use" in answer.text
            assert "set-cookie" not in answer.headers
    finally:
        server.shutdown()
        server.server_close()
    assert hits == []


@pytest.mark.parametrize("client", ["public", "client_secret", "private_key_jwt", "wrong_secret", "wrong_key"])
def test_standalone_launch_with_each_kind_of_client(make_stack, tmp_path, client):
    key = ECKey.generate_key("P-384")
    changes: dict[str, object] = {}
    sim: dict[str, str] = {"client_id": "hipcad-viewer"}
    client_type = 0
    if client in ("client_secret", "wrong_secret"):
        changes["smart_client_secret"] = sim["client_secret"] = "smart-test-client-secret"
        if client == "wrong_secret":
            changes["smart_client_secret"] = "another-secret"
        client_type = 1
    elif client in ("private_key_jwt", "wrong_key"):
        signing = ECKey.generate_key("P-384") if client == "wrong_key" else key
        (tmp_path / "client.pem").write_bytes(signing.as_pem(private=True))
        changes.update(smart_private_key_file=tmp_path / "client.pem", smart_key_id="hipcad-1")
        sim["jwks"] = json.dumps({"keys": [{**key.as_dict(private=False), "kid": "hipcad-1", "alg": "ES384"}]})
        client_type = 2
    probe = make_stack()  # only for the launcher's address
    stack = make_stack(smart_standalone_iss=sim_iss(probe.launcher, client_type, **sim), **changes)
    with httpx.Client(timeout=30) as browser:
        callback = walk_to_callback(browser, f"{stack.service_url}/smart/launch")
        answer = browser.get(callback, follow_redirects=True)
    if client.startswith("wrong"):  # the launcher checked the client's credentials and refused
        assert answer.status_code == 502 and "refused" in answer.text
        return
    assert answer.status_code == 200 and urlsplit(str(answer.url)).path.startswith("/viewer/")
    assert "AI findings" in answer.text


def test_standalone_launch_asks_for_a_patient_not_an_ehr_context(make_stack):
    probe = make_stack()
    stack = make_stack(smart_standalone_iss=sim_iss(probe.launcher, 0))
    answer = httpx.get(f"{stack.service_url}/smart/launch")
    assert answer.status_code == 302
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert "launch" not in query and "launch/patient" in query["scope"][0].split()
    assert "launch" not in query["scope"][0].split()
    assert query["aud"] == [stack.settings.smart_standalone_iss]


def test_the_app_is_mounted_in_the_service(service_settings):
    from cds_service.app import create_app

    client = TestClient(create_app(service_settings))
    answer = client.get("/smart/launch")
    assert answer.status_code == 400 and "Open this app from the EHR" in answer.text
    assert answer.headers["cache-control"] == "no-store" and answer.headers["referrer-policy"] == "no-referrer"
    assert client.get("/smart/view").status_code == 401


def test_scopes_v2_and_v1_read():
    assert grants_read("launch openid patient/ImagingStudy.rs", "ImagingStudy")
    assert grants_read("patient/ImagingStudy.read", "ImagingStudy")  # SMART v1
    assert grants_read("user/*.read", "ImagingStudy") and grants_read("patient/*.cruds", "ImagingStudy")
    assert grants_read("", "ImagingStudy")  # scope omitted: granted as requested (RFC 6749 § 5.1)
    assert not grants_read("patient/DiagnosticReport.rs", "ImagingStudy")
    assert not grants_read("patient/ImagingStudy.c", "ImagingStudy")
    assert not grants_read("system/ImagingStudy.rs launch", "ImagingStudy")


def test_the_cards_smart_link_carries_the_viewer_token():
    url = "http://cds.example/viewer/abc.def"
    smart = viewer_card_link(url, "http://cds.example", "smart")
    assert smart.type == "smart" and smart.url == "http://cds.example/smart/launch"
    assert app_context_token(smart.appContext) == "abc.def"
    absolute = viewer_card_link(url, "http://cds.example", "absolute")
    assert absolute.type == "absolute" and absolute.url == url and absolute.appContext is None
    assert app_context_token("not json") is None and app_context_token('{"other": 1}') is None


def test_app_context_opens_the_cards_result_without_fhir(make_stack):
    stack = make_stack()
    secret = stack.settings.viewer_secret.encode()
    found = asyncio_run(
        find_result(
            stack.store,
            secret,
            900,
            "http://unused.invalid/fhir",
            "t",
            None,
            "",
            smart_app_context(sign("result-1", secret, 60)),
        )
    )
    assert found.result_id == "result-1" and found.source == "app-context"


def asyncio_run(coroutine):
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
