"""The one outbound URL policy (security issue #9): what may be contacted, and what is refused why."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from cds_service.errors import PrefetchUnavailableError
from cds_service.fhir.client import FhirClient, is_allowed
from cds_service.outbound import AllowedBase, DisallowedUrlError, UrlPolicy
from tests.servers.redirect import redirecting_server as redirect_to_local

BASES = ["https://ehr.example/fhir", "http://PACS.example:8042/dicom-web/", "https://xn--bcher-kva.example/r4"]

ALLOWED = [
    ("https://ehr.example/fhir", "https://ehr.example/fhir"),
    ("https://ehr.example/fhir/", "https://ehr.example/fhir"),
    ("https://ehr.example/fhir/Patient/123?_format=json", "https://ehr.example/fhir"),
    ("HTTPS://EHR.Example/fhir", "https://ehr.example/fhir"),  # scheme and host are case-insensitive
    ("https://ehr.example./fhir", "https://ehr.example/fhir"),  # trailing dot of the FQDN
    ("https://ehr.example:443/fhir", "https://ehr.example/fhir"),  # default port spelled out
    ("https://ehr.example/%66hir/x", "https://ehr.example/fhir"),  # %66 is "f": same segment
    ("http://pacs.example:8042/dicom-web/studies/1.2.3", "http://pacs.example:8042/dicom-web"),
    ("https://BÜCHER.example/r4/Patient", "https://xn--bcher-kva.example/r4"),  # IDNA
]

REFUSED = [
    ("https://ehr.example/fhir-evil", "not under an allow-listed base"),  # string-prefix trick
    ("https://ehr.example/fhi", "not under an allow-listed base"),
    ("https://ehr.example/", "not under an allow-listed base"),
    ("https://ehr.example:8443/fhir", "not under an allow-listed base"),
    ("http://ehr.example/fhir", "not under an allow-listed base"),  # http is not https (and port 80)
    ("http://pacs.example/dicom-web", "not under an allow-listed base"),  # default port 80, not 8042
    ("https://ehr.example.evil/fhir", "not under an allow-listed base"),
    ("https://ehr.example/fhir/../admin", "path traversal"),
    ("https://ehr.example/fhir/./x", "path traversal"),
    ("https://ehr.example/fhir/%2e%2e/admin", "path traversal"),
    ("https://ehr.example/fhir/%2E./admin", "path traversal"),
    ("https://ehr.example/fhir/.%2e/admin", "path traversal"),
    ("https://ehr.example/fhir/%2e/admin", "path traversal"),
    ("https://ehr.example/fhir/..%2fadmin", "encoded path separator"),
    ("https://ehr.example/fhir/%2F..%2Fadmin", "encoded path separator"),
    ("https://ehr.example/fhir/..%5cadmin", "encoded path separator"),
    ("https://ehr.example/fhir\\..\\admin", "backslash"),
    ("https://ehr.example/fhir//admin", "empty path segment"),
    ("https://ehr.example/fhir/%00", "control character"),
    ("https://user:secret@ehr.example/fhir", "userinfo not allowed"),
    ("https://ehr.example@evil.example/fhir", "userinfo not allowed"),
    ("https://ehr.example/fhir#frag", "fragment not allowed"),
    ("ftp://ehr.example/fhir", "scheme not allowed"),
    ("gopher://ehr.example/fhir", "scheme not allowed"),
    ("file:///etc/passwd", "scheme not allowed"),  # no local folder configured
    ("//ehr.example/fhir", "scheme not allowed"),
    ("https:///fhir", "empty host"),
    ("https://ehr.example:99999/fhir", "malformed URL"),
    ("https://ehr.example/fhir x", "space"),
    # Issue 30: what servers and proxies read as traversal, and hosts the clients read otherwise.
    ("https://ehr.example/fhir/..;/admin", "path traversal"),  # servlet containers drop ";…", then see ".."
    ("https://ehr.example/fhir/..;x=1/admin", "path traversal"),
    ("https://ehr.example/fhir/..%3b/admin", "path traversal"),
    ("https://ehr.example/fhir/.../admin", "path traversal"),
    ("https://ehr.example/fhir/%252e%252e/admin", "double percent-encoding"),  # decoded twice: ".."
    ("https://ehr.example/fhir/%252fadmin", "double percent-encoding"),
    ("https://１２７.０.０.１/fhir", "invalid internationalised host"),  # httpx refuses, requests maps to 127.0.0.1
    ("https://ｅｈｒ.example/fhir", "invalid internationalised host"),
    ("https://ehr。example/fhir", "invalid internationalised host"),
    ("https://999.1.1.1/fhir", "invalid host"),  # IPv4-shaped but not an address: httpx refuses it
    ("https://ehr.exa<mple/fhir", "invalid host"),
    ("https://ehr.example:８０/fhir", "malformed URL"),
]


@pytest.fixture(scope="module")
def policy() -> UrlPolicy:
    return UrlPolicy(BASES)


@pytest.mark.parametrize(("url", "base"), ALLOWED)
def test_allowed_urls_match_their_canonical_base(policy, url, base):
    assert policy.match(url).url == base
    assert policy.is_allowed(url)


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_refused_urls_say_why_without_the_url(policy, url, reason):
    with pytest.raises(DisallowedUrlError, match=reason) as refused:
        policy.match(url)
    assert "ehr.example" not in str(refused.value) and url not in str(refused.value)
    assert not policy.is_allowed(url)


def test_hosts_are_compared_as_the_http_clients_will_contact_them():
    # IDNA 2008 (httpx, urllib3) keeps "ß": straße.example is xn--strae-oqa.example, not strasse.example.
    assert not UrlPolicy(["https://strasse.example/fhir"]).is_allowed("https://straße.example/fhir")
    allowed = UrlPolicy(["https://straße.example/fhir"])
    assert allowed.bases[0].url == "https://xn--strae-oqa.example/fhir"
    assert allowed.is_allowed("https://XN--STRAE-OQA.example/fhir/Patient")
    assert not allowed.is_allowed("https://strasse.example/fhir")
    assert UrlPolicy(["http://[::1]:8080/x"]).match("http://[0:0::1]:8080/x/y").url == "http://[::1]:8080/x"


def test_default_ports_are_equivalent():
    assert UrlPolicy(["http://h/x"]).is_allowed("http://h:80/x/y")
    assert UrlPolicy(["http://h:80/x"]).is_allowed("http://h/x")
    assert UrlPolicy(["https://h:443/x"]).match("https://h/x").url == "https://h/x"


def test_the_most_specific_base_wins():
    policy = UrlPolicy(["https://h", "https://h/a/b"])
    assert policy.match("https://h/a/b/c") == AllowedBase("https", "h", 443, ("a", "b"))
    assert policy.match("https://h/a/c").url == "https://h"


@pytest.mark.parametrize(
    "base", ["https://u:p@h/x", "https://h/x/../y", "ftp://h/x", "https://h/x?tenant=1", "file:///tmp"]
)
def test_an_invalid_allow_listed_base_is_a_configuration_error(base):
    with pytest.raises(ValueError, match="allow-listed base #0"):
        UrlPolicy([base])


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    store, other = tmp_path / "store", tmp_path / "other"
    (store / "sub").mkdir(parents=True)
    other.mkdir()
    (store / "escape").symlink_to(other, target_is_directory=True)
    return store, other


def test_file_urls_only_inside_the_local_folder(folders):
    store, other = folders
    policy = UrlPolicy([store.as_uri()], local_folder=store)
    base = policy.match(f"file://{store}/sub/")
    assert base.folder == store.resolve() and base.url == store.resolve().as_uri()
    assert policy.match(f"file://localhost{store}").folder == store.resolve()
    refused = {
        f"file://{store}/../other": "path traversal",
        f"file://{store}/%2e%2e/other": "path traversal",
        other.as_uri(): "outside the local folder",
        f"{store.as_uri()}/escape": "outside the local folder",  # a symlink out of the folder
        f"file://evil.example{store}": "local path",
        f"file:{store.name}": "local path",
    }
    for url, reason in refused.items():
        with pytest.raises(DisallowedUrlError, match=reason):
            policy.match(url)


def test_a_file_base_outside_the_local_folder_is_a_configuration_error(folders):
    store, other = folders
    with pytest.raises(ValueError, match="outside the local folder"):
        UrlPolicy([other.as_uri()], local_folder=store)


def test_file_urls_inside_the_folder_but_not_under_a_file_base_are_refused(folders):
    store, _ = folders
    policy = UrlPolicy([(store / "sub").as_uri()], local_folder=store)
    assert policy.is_allowed((store / "sub").as_uri())
    with pytest.raises(DisallowedUrlError, match="not under an allow-listed base"):
        policy.match(store.as_uri())


def test_fhir_is_allowed_delegates_to_the_policy():
    assert is_allowed("https://ehr.example/fhir/", ["https://EHR.example/fhir"])
    assert is_allowed("https://ehr.example/fhir?page=2", ["https://ehr.example/fhir"])
    assert not is_allowed("https://ehr.example/fhir-evil", ["https://ehr.example/fhir"])
    assert not is_allowed("https://ehr.example/fhir/../admin", ["https://ehr.example/fhir"])
    assert not is_allowed("https://me@ehr.example/fhir", ["https://ehr.example/fhir"])
    assert not is_allowed("https://ehr.example/fhir", [])


FHIR_BASE = "https://ehr.example/fhir"


@pytest.mark.parametrize(
    ("reference", "url"),
    [
        ("Endpoint/dicomweb-1", f"{FHIR_BASE}/Endpoint/dicomweb-1"),  # FHIR R4 §2.4: relative to the base
        ("ImagingStudy?patient=Patient/1", f"{FHIR_BASE}/ImagingStudy?patient=Patient/1"),
        ("https://EHR.example:443/fhir/ImagingStudy?page=2", f"{FHIR_BASE}/ImagingStudy?page=2"),
        ("/fhir/Endpoint/1", f"{FHIR_BASE}/Endpoint/1"),
        ("//ehr.example/fhir/Endpoint/1", f"{FHIR_BASE}/Endpoint/1"),
    ],
)
def test_fhir_references_resolve_against_the_base(reference, url):
    assert FhirClient(FHIR_BASE, "token").resolve(reference) == url


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        ("Endpoint/../../x", "path traversal"),
        ("Endpoint/..;/..;/x", "path traversal"),
        ("Endpoint/%2e%2e/x", "path traversal"),
        ("Endpoint/%252e%252e/x", "double percent-encoding"),
        ("/admin/secret", "not under an allow-listed base"),
        ("//evil.example/fhir/Endpoint/1", "not under an allow-listed base"),
        ("https://ehr.example/fhir-evil/Endpoint/1", "not under an allow-listed base"),
        ("http://ehr.example/fhir/Endpoint/1", "not under an allow-listed base"),
        ("urn:uuid:5f2c8f4e-7d4e-4d0b-9c5e-7c1f3a9a2b11", "scheme not allowed"),
    ],
)
def test_fhir_references_off_the_base_are_refused_and_not_sent(reference, reason):
    client = FhirClient(FHIR_BASE, "token")
    with pytest.raises(DisallowedUrlError, match=reason):
        client.resolve(reference)
    with pytest.raises(PrefetchUnavailableError, match="refused by the outbound URL policy") as refused:
        asyncio.run(client.get(reference))  # refused before any connection: ehr.example does not resolve
    assert "ehr.example" not in str(refused.value) and reference not in str(refused.value)


def test_a_fhir_client_for_a_refused_base_cannot_be_made():
    with pytest.raises(PrefetchUnavailableError, match="address is refused \\(invalid internationalised host\\)"):
        FhirClient("https://１２７.０.０.１/fhir", "token")


@pytest.fixture
def redirecting_server() -> Iterator[tuple[str, list[str]]]:
    """A server answering 302 to a second local server; yields its URL and the second one's hits."""
    with redirect_to_local("/fhir", b'{"resourceType": "Patient"}', "application/fhir+json") as server:
        yield server


def test_the_fhir_client_does_not_follow_redirects(redirecting_server):
    url, hits = redirecting_server
    with pytest.raises(PrefetchUnavailableError, match="HTTP 302"):
        asyncio.run(FhirClient(url, "token").get("Patient/1"))
    assert hits == []


@pytest.mark.parametrize("field", ["fhir_allowed_bases", "dicomweb_allowed_bases"])
def test_an_invalid_allow_listed_base_is_a_start_up_error(field):
    from pydantic import ValidationError

    from cds_service.settings import Settings

    with pytest.raises(ValidationError, match="userinfo not allowed"):
        Settings(**{field: ["https://user:secret@ehr.example/fhir"]})
    assert getattr(Settings(**{field: ["https://ehr.example/fhir"]}), field) == ["https://ehr.example/fhir"]
