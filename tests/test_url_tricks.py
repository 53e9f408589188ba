"""URL tricks never take a request off the allow-list (issue 30): asserted with a real decoy that counts hits.

Each trick is sent the way an attacker can send it, in a signed hook request to the real app (an
ImagingStudy's Endpoint reference, a Bundle's ``next`` link, ``fhirServer`` itself) or as the
ImagingStudy's DICOMweb address. The decoy (tests/servers/decoy.py) is the allow-listed FHIR
server and, for host names that do not resolve, the HTTP proxy every request goes through: it
records every request the service makes, so "no request outside the allow-list" is counted, not
inferred. A control proves that it counts: the same service, with an honest request, reaches it.
What the user got is asserted too: an OperationOutcome 412 (CDS Hooks 2.0: the FHIR data cannot be
obtained) for a refused FHIR request, never an "internal error" card.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from cds_service.cdshooks.jwt import sign_request_jwt
from cds_service.demo import free_port
from cds_service.dicom.retrieve import DicomRetriever
from cds_service.ehr import imaging_study_bundle, load_example
from cds_service.errors import StudyUnavailableError
from cds_service.settings import Settings
from tests.conftest import app_clients
from tests.factory import radiograph, ramp
from tests.servers.decoy import Decoy, decoy_server

SERVICE_PATH = "/cds-services/hip-fracture-order-select"
TOKEN = "ehr-access-token-for-the-fhir-server"
#: The allow-listed names reached through the decoy as a proxy (they resolve nowhere).
IDNA_BASE = "http://strasse.test/fhir"
IDNA_TRICK = "http://straße.test/fhir"  # httpx: xn--strae-oqa.test; IDNA 2003: strasse.test


@pytest.fixture
def decoy() -> Iterator[Decoy]:
    with decoy_server() as server:
        yield server


@pytest.fixture
def proxied(decoy: Decoy, monkeypatch: pytest.MonkeyPatch) -> Decoy:
    """Every outbound HTTP request of this process goes through the decoy (httpx and requests honour HTTP_PROXY)."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", decoy.url)
    return decoy


def fhir_base(decoy: Decoy) -> str:
    return f"{decoy.url}/fhir"


@pytest.fixture
def make_service(ehr_keys: tuple[bytes, Path], tmp_path: Path) -> Iterator[Callable[[list[str]], TestClient]]:
    """The real app, FHIR allow-list as given, no Triton behind it (every trick is refused before analysis)."""

    def settings_for(fhir_allowed_bases: list[str]) -> Settings:
        settings = Settings(
            host="127.0.0.1",
            port=8080,
            public_base_url="",
            jwt_public_key_file=ehr_keys[1],
            dicom_folder=tmp_path / "dicom",
            output_folder=tmp_path / "out",
            feedback_db=tmp_path / "feedback.sqlite3",
            triton_url=f"127.0.0.1:{free_port()}",
            fhir_allowed_bases=fhir_allowed_bases,
            fhir_timeout_s=3.0,
            hook_deadline_s=5.0,
        )
        (tmp_path / "dicom").mkdir(exist_ok=True)
        return settings

    with app_clients(settings_for) as make:
        yield make


def studies(endpoint_reference: str | None = None, next_link: str | None = None) -> dict[str, Any]:
    """A prefetched searchset; its Endpoint left out and referenced as given, a ``next`` link when given."""
    bundle = imaging_study_bundle(radiograph(ramp()), "pat-hip-1", "http://pacs.test/dicom-web")
    if endpoint_reference is not None:
        bundle["entry"] = bundle["entry"][:1]
        bundle["entry"][0]["resource"]["endpoint"] = [{"reference": endpoint_reference}]
    if next_link is not None:
        bundle["link"] = [{"relation": "next", "url": next_link}]
    return bundle


def hook(fhir_server: str, prefetched: dict[str, Any] | None) -> dict[str, Any]:
    """An order-select request for ``fhir_server`` with its access token and, when given, the studies prefetch."""
    request = copy.deepcopy(load_example("order-select.json"))
    request["fhirServer"] = fhir_server
    request["fhirAuthorization"] = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/ImagingStudy.read user/Endpoint.read",
        "subject": "hipcad",
    }
    if prefetched is not None:
        request["prefetch"]["studies"] = prefetched
    return request


def post(service: TestClient, private_key: bytes, request: dict[str, Any]) -> httpx.Response:
    token = sign_request_jwt(private_key, "hipcad-demo-ehr", str(service.base_url).rstrip("/") + SERVICE_PATH)
    return service.post(SERVICE_PATH, json=request, headers={"Authorization": f"Bearer {token}"})


def refused_by_policy(response: httpx.Response) -> str:
    """The diagnostics of a 412 OperationOutcome (what the EHR gets for a refused FHIR request)."""
    assert response.status_code == 412, (response.status_code, response.text[:300])
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]["diagnostics"]


# The controls: the decoy counts what the service sends it -----------------------------------------
def test_control_the_decoy_counts_every_hit_inside_and_outside(decoy):
    base = fhir_base(decoy)
    assert httpx.get(f"{decoy.url}/admin/secret").status_code == 404
    assert httpx.get(f"{base}/..;/x").status_code == 404
    assert [hit.path for hit in decoy.outside([base])] == ["/admin/secret", "/fhir/..;/x"]
    assert httpx.get(f"{base}/Endpoint/1").status_code == 404 and len(decoy.hits) == 3
    assert len(decoy.outside([base])) == 2  # /fhir/Endpoint/1 is inside


def test_control_an_honest_hook_reaches_the_decoy_with_its_token(decoy, make_service, ehr_keys):
    decoy.resources["/fhir/Endpoint/dicomweb-1"] = studies()["entry"][1]["resource"]
    service = make_service([fhir_base(decoy)])
    response = post(service, ehr_keys[0], hook(fhir_base(decoy), studies("Endpoint/dicomweb-1")))
    assert [(hit.path, hit.authorization) for hit in decoy.hits] == [("/fhir/Endpoint/dicomweb-1", True)]
    assert decoy.outside([fhir_base(decoy)]) == []
    assert response.status_code == 200  # the Endpoint was read; the (absent) PACS is a card, not a 412


def test_control_the_proxy_sees_hosts_that_do_not_resolve(proxied, make_service, ehr_keys):
    proxied.resources["/fhir/ImagingStudy"] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    service = make_service([IDNA_BASE])
    response = post(service, ehr_keys[0], hook(IDNA_BASE, None))
    assert response.status_code == 200 and response.json() == {"cards": []}  # no study: no card
    assert [hit.host for hit in proxied.hits] == ["strasse.test"]
    assert proxied.outside([IDNA_BASE]) == []


# The tricks --------------------------------------------------------------------------------------
ENDPOINT_TRICKS = [
    "Endpoint/../../x",
    "Endpoint/../../admin/secret",
    "Endpoint/..;/..;/outside-the-fhir-base",
    "Endpoint/%2e%2e/%2e%2e/x",
    "Endpoint/%2E%2E/%2e./x",
    "Endpoint/%252e%252e/%252e%252e/x",
    "Endpoint/..%3B/..%3B/x",
]


@pytest.mark.parametrize("reference", ENDPOINT_TRICKS)
def test_an_endpoint_reference_cannot_leave_the_fhir_base(decoy, make_service, ehr_keys, reference):
    service = make_service([fhir_base(decoy)])
    response = post(service, ehr_keys[0], hook(fhir_base(decoy), studies(reference)))
    assert decoy.hits == []  # not one request: not outside /fhir, and the token went nowhere
    assert "outbound URL policy" in refused_by_policy(response)
    assert "Endpoint" not in response.text and ".." not in response.text  # the reason, never the reference


NEXT_TRICKS = [
    "{base}/../admin",
    "{base}/..;/admin",
    "{base}/%2e%2e/admin",
    "{base}/%252e%252e/admin",
    "{origin}/admin?page=2",
    "http://127.0.0.2:{port}/fhir?page=2",
    "http://straße.test/fhir?page=2",
    "/admin?page=2",
    "../admin?page=2",
]


@pytest.mark.parametrize("template", NEXT_TRICKS)
def test_a_next_link_cannot_leave_the_fhir_base(decoy, make_service, ehr_keys, template):
    base = fhir_base(decoy)
    link = template.format(base=base, origin=decoy.url, port=decoy.url.rsplit(":", 1)[1])
    service = make_service([base])
    response = post(service, ehr_keys[0], hook(base, studies(next_link=link)))
    assert decoy.hits == []
    # The page was not fetched; what was prefetched is used (the absent PACS gives a card, not a 5xx).
    assert response.status_code == 200 and len(response.json()["cards"]) == 1


def test_a_next_link_under_the_base_is_followed(decoy, make_service, ehr_keys):
    base = fhir_base(decoy)
    decoy.resources["/fhir/ImagingStudy"] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    service = make_service([base])
    response = post(service, ehr_keys[0], hook(base, studies(next_link=f"{base}/ImagingStudy?page=2")))
    assert [hit.path for hit in decoy.hits] == ["/fhir/ImagingStudy?page=2"]
    assert response.status_code == 200


def test_an_idna_look_alike_of_an_allowed_host_is_refused(proxied, make_service, ehr_keys):
    service = make_service([IDNA_BASE])
    response = post(service, ehr_keys[0], hook(IDNA_TRICK, None))
    assert proxied.hits == []  # xn--strae-oqa.test was never contacted
    assert "allow-list" in refused_by_policy(response)


def test_an_allowed_internationalised_host_is_the_one_contacted(proxied, make_service, ehr_keys):
    proxied.resources["/fhir/ImagingStudy"] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    service = make_service([IDNA_TRICK])  # allow-listing straße.test allows xn--strae-oqa.test, not strasse.test
    assert post(service, ehr_keys[0], hook("http://xn--strae-oqa.test/fhir", None)).status_code == 200
    assert "allow-list" in refused_by_policy(post(service, ehr_keys[0], hook(IDNA_BASE, None)))
    assert [hit.host for hit in proxied.hits] == ["xn--strae-oqa.test"]


@pytest.mark.parametrize(
    "host",
    [
        "１２７.０.０.１",  # full-width digits: requests maps them to 127.0.0.1, httpx refuses them
        "127.0.0.１",
        "127。0。0。1",  # ideographic full stops
    ],
)
def test_a_host_the_http_client_cannot_parse_is_a_412_not_an_internal_error(decoy, make_service, ehr_keys, host):
    port = decoy.url.rsplit(":", 1)[1]
    service = make_service([fhir_base(decoy)])
    response = post(service, ehr_keys[0], hook(f"http://{host}:{port}/fhir", None))
    assert decoy.hits == []
    assert "allow-list" in refused_by_policy(response)
    assert "internal error" not in response.text


# The same policy for the DICOMweb client (requests) ----------------------------------------------
def fetch(retriever: DicomRetriever, address: str, study: str = "1.2.3", series: str = "1.2.3.4") -> None:
    asyncio.run(retriever.retrieve_instance(address, study, series, "1.2.3.4.5"))


@pytest.mark.parametrize(
    "suffix",
    ["/..;/admin", "/%252e%252e/admin", "/%2e%2e/admin", "/..%3b/admin"],
)
def test_a_dicomweb_address_cannot_leave_its_base(decoy, suffix):
    base = f"{decoy.url}/dicom-web"
    retriever = DicomRetriever([base], timeout_s=3)
    with pytest.raises(StudyUnavailableError, match="not on the allow-list"):
        fetch(retriever, base + suffix)
    assert decoy.hits == []
    retriever.close()


@pytest.mark.parametrize("uid", ["..", "../../admin", "1.2/../../admin", "%2e%2e", "1.2.3;x", "1..2"])
def test_a_uid_cannot_walk_out_of_the_dicomweb_base(decoy, uid):
    base = f"{decoy.url}/dicom-web"
    retriever = DicomRetriever([base], timeout_s=3)
    for study, series in ((uid, "1.2.3.4"), ("1.2.3", uid)):
        with pytest.raises(StudyUnavailableError, match="DICOM UID"):
            fetch(retriever, base, study, series)
    assert decoy.hits == []
    with pytest.raises(StudyUnavailableError, match="HTTP 404"):  # control: a real UID reaches the decoy
        fetch(retriever, base)
    assert decoy.hits and decoy.outside([base]) == []
    retriever.close()


def test_a_dicomweb_idna_look_alike_is_refused(proxied):
    retriever = DicomRetriever(["http://strasse.test/dicom-web"], timeout_s=3)
    with pytest.raises(StudyUnavailableError, match="not on the allow-list"):
        fetch(retriever, "http://straße.test/dicom-web")
    assert proxied.hits == []
    with pytest.raises(StudyUnavailableError, match="HTTP 404"):  # control: the allowed host goes through the decoy
        fetch(retriever, "http://strasse.test/dicom-web")
    assert {hit.host for hit in proxied.hits} == {"strasse.test"}
    retriever.close()
