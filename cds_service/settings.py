"""All configuration, as one pydantic-settings object: every knob is an environment variable.

Each field's environment variable is its name in upper case with the ``HIPCAD_`` prefix
(``triton_url`` → ``HIPCAD_TRITON_URL``). The README's configuration table lists them all.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cds_service.cdshooks.relevance import DEFAULT_CODES
from cds_service.fhir.effective import zone
from cds_service.outbound import UrlPolicy

REPO_ROOT = Path(__file__).resolve().parent.parent


class IssuerSettings(BaseModel):
    """One trusted CDS Client (EHR), as configured in ``HIPCAD_JWT_ISSUERS``."""

    iss: str
    jwks_url: str | None = None
    public_key_file: Path | None = None
    jku_allowed: list[str] = Field(default_factory=list)
    tenants: list[str] | None = None


class Settings(BaseSettings):
    """Service configuration (environment variables ``HIPCAD_*``)."""

    model_config = SettingsConfigDict(env_prefix="HIPCAD_", env_file=None, extra="ignore")

    # Web layer
    host: str = Field("127.0.0.1", description="Address the service listens on.")
    port: int = Field(8080, description="Port the service listens on.")
    public_base_url: str = Field(
        "", description="External base URL of the service (JWT `aud`, links); default http://host:port."
    )
    metrics_port: int = Field(
        0, description="Port of a separate Prometheus `/metrics` listener (same address); 0 = `/metrics` on `port`."
    )
    ready_max_loop_lag_s: float = Field(
        2.0, description="`/readyz` answers 503 (overloaded) while the event loop runs this late, seconds."
    )
    dependency_check_interval_s: float = Field(
        5.0, description="How often PostgreSQL and Triton are checked in the background (probes, metrics), seconds."
    )
    database_retry_max_s: float = Field(
        30.0, description="`serve`/`migrate` retry an unreachable database with backoff up to this delay, seconds."
    )
    grpc_port: int = Field(0, description="Port of the hipcad.v1 gRPC API (AnalyzeStudy); 0 = off.")
    grpc_host: str = Field(
        "127.0.0.1", description="Address the gRPC API listens on (loopback unless set; callers need a JWT)."
    )
    max_request_bytes: int = Field(5_000_000, description="Largest accepted hook request body (413 beyond).")
    max_json_depth: int = Field(64, description="Deepest JSON nesting accepted in a request body (400 beyond).")
    max_json_number_digits: int = Field(
        64, description="Longest JSON number literal accepted in a request body, in characters (400 beyond)."
    )
    body_read_timeout_s: float = Field(
        10.0, gt=0, description="A request head, and a hook or feedback body, must arrive within this, seconds (408)."
    )
    max_header_bytes: int = Field(
        32_768, ge=1024, description="Largest accepted request line and header block, bytes (431 beyond)."
    )

    # Security (CDS Hooks 2.0 JWT)
    jwt_required: bool = Field(True, description="Require a valid CDS Hooks JWT on every endpoint.")
    jwt_issuer: str = Field("hipcad-demo-ehr", description="Trusted JWT issuer (`iss`).")
    jwt_public_key_file: Path = Field(
        REPO_ROOT / "var" / "keys" / "ehr-public.pem",
        description="PEM public key of the trusted issuer (ES384/RS384).",
    )
    jwt_leeway_s: int = Field(30, description="Allowed clock skew for `exp`/`iat`, seconds.")
    jwt_issuers: list[IssuerSettings] = Field(
        default_factory=list,
        description="More trusted issuers (JSON list of {iss, jwks_url | public_key_file, jku_allowed, tenants}).",
    )
    jti_strict: bool = Field(
        True,
        description="Refuse (401) a JWT whose `jti` cannot be checked in the shared store (database down); "
        "false = accept on this replica's memory alone (a replay on another replica goes unseen).",
    )
    jwks_refresh_s: float = Field(
        10.0,
        description="Least time between two fetches of one JWKS URL (an unknown `kid` refetches at most this often).",
    )
    jwks_max_age_s: float = Field(
        3600.0, description="A fetched JWKS is refetched after this long (keys the EHR retired stop being accepted)."
    )
    dev_trust_cds_hooks_sandbox: bool = Field(
        False, description="DEVELOPMENT ONLY: trust the public CDS Hooks sandbox issuer (its private key is public)."
    )
    cors_allow_origins: list[str] = Field(
        default_factory=list, description="Browser origins allowed by CORS (JSON list); `*` only in development."
    )
    feedback_db: Path = Field(
        REPO_ROOT / "var" / "feedback.sqlite3",
        description="SQLite file of the embedded store (results, viewer links, leases, feedback, JWT jti) "
        "when no database URL is set.",
    )
    database_url: str = Field(
        "",
        description="Shared store for several replicas, e.g. `postgresql+psycopg://user:pass@host/db` "
        "(then HIPCAD_VIEWER_SECRET is required); empty = the SQLite file HIPCAD_FEEDBACK_DB.",
    )
    database_timeout_s: float = Field(
        1.0,
        description="Bound of one database call (connect, statement, and the wait on a frozen server), seconds; "
        "past it, writes go to the outbox and replay once the database answers.",
    )
    outbox_dir: Path | None = Field(
        None,
        description="Folder of this host's outbox files (writes kept while the database is unreachable); "
        "empty = `outbox/` beside HIPCAD_FEEDBACK_DB. Keep it on a volume that outlives the container.",
    )
    analysis_lease_s: float = Field(
        5.0,
        description="How long a replica's claim on an image it analyses lasts without a heartbeat (renewed every "
        "quarter of it) before others may take over.",
    )

    # Relevance
    relevant_order_codes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CODES),
        description="Order codes that make a hook relevant, JSON list of 'system|code' (CPT, LOINC, SNOMED CT).",
    )

    selection_behavior: Literal["at-most-one", "any"] = Field(
        "at-most-one", description="Card `selectionBehavior` for suggestions (`any` suits some EHRs)."
    )
    ehr_profile: Literal["generic", "epic", "oracle"] = Field(
        "generic",
        description="What the cards, links and JWT checks are shaped for: `generic` (CDS Hooks 2.0), `epic` or "
        "`oracle` (Oracle Health); see docs/ehr-integration.md.",
    )
    registered_link_urls: list[str] = Field(
        default_factory=list,
        description="Oracle profile: card links allowed (registered with the EHR; JSON list); "
        "empty = the static SMART launch URL `<base>/smart/launch`.",
    )

    # Images
    study_lookback_days: float = Field(
        30.0, description="Only ImagingStudies started within this many days are analysed (0 = no limit)."
    )
    dicom_folder: Path = Field(
        REPO_ROOT / "var" / "dicom", description="Local DICOMweb folder store (embedded default)."
    )
    dicomweb_allowed_bases: list[str] = Field(
        default_factory=list,
        description="DICOMweb base URLs the service may contact (JSON list); the local folder store is always allowed.",
    )
    dicomweb_credentials: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description='Credentials per DICOMweb base, JSON: {"<base>": {"username": "...", "password": "..."} '
        'or {"bearer_token": "..."}}.',
    )
    fhir_allowed_bases: list[str] = Field(
        default_factory=list, description="FHIR server base URLs the service may search (JSON list)."
    )
    fhir_timeout_s: float = Field(5.0, description="Timeout of one FHIR request, seconds.")
    dicomweb_timeout_s: float = Field(10.0, description="Timeout of one DICOMweb retrieval, seconds.")
    store_results: bool = Field(
        False, description="Store the result in the study's PACS as DICOM (TID 1500 SR + heat-map SC) over STOW-RS."
    )
    uid_root: str = Field(
        "",
        max_length=40,
        pattern=r"^([0-2](\.(0|[1-9][0-9]*))*)?$",
        description="Registered UID root of the SR/SC UIDs (PS3.5 9.1); empty = 2.25 UUID-derived UIDs (PS3.5 B.2).",
    )
    dicomweb_max_clients: int = Field(
        16, description="Most DICOMweb clients kept open at once (one per allow-listed base, least recently used out)."
    )
    max_image_pixels: int = Field(
        60_000_000, description="Largest image (rows × columns × frames) decoded; bigger ones are refused unread."
    )
    decode_workers: int = Field(
        2,
        ge=0,
        description="Worker processes decoding pixel data, each limited by HIPCAD_DECODE_MEMORY_MB and "
        "HIPCAD_DECODE_TIMEOUT_S; 0 = decode in the service process (no limits: development only).",
    )
    decode_memory_mb: int = Field(
        1536,
        ge=384,
        description="Address-space limit of one decode worker, MB (RLIMIT_AS); must cover the largest image "
        "HIPCAD_MAX_IMAGE_PIXELS allows (~15 bytes per pixel + ~250 MB).",
    )
    decode_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Time limit of one image's decoding, seconds (lossless JPEG 2000 decodes at ~7 Mpixel/s on one "
        "core). The hook still answers within HIPCAD_HOOK_DEADLINE_S: a longer analysis goes on in the background.",
    )

    # Analysis on arrival (DICOM Storage SCP)
    dicom_listener_port: int = Field(
        0, description="Port of the DICOM Storage SCP that images are routed to (`cds-service listen`: 11112); 0 = off."
    )
    dicom_listener_host: str = Field("127.0.0.1", description="Address the DICOM listener binds.")
    dicom_listener_ae_title: str = Field("HIPCAD", description="AE title of the DICOM listener.")
    dicom_listener_calling_ae_titles: list[str] = Field(
        default_factory=list, description="Calling AE titles allowed to send (JSON list); empty = any."
    )
    dicom_listener_source: str = Field(
        "",
        description="DICOMweb base of the archive that routes images to the listener: arrived results are filed "
        "under it, so hooks naming studies there hit them; empty = the local folder store.",
    )
    arrival_concurrency: int = Field(1, description="Analyses of arrived images running at once.")

    # Inference
    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC address (host:port).")
    triton_timeout_s: float = Field(10.0, description="Timeout of one Triton inference, seconds.")
    triton_model: str = Field(
        "hip_analysis", description="Ensemble model answering fracture and Garden in one round trip."
    )
    model_repository: Path = Field(REPO_ROOT / "model_repository", description="Triton model repository.")
    triton_venv: Path = Field(
        REPO_ROOT / ".venv-triton", description="Virtual environment holding nvidia-pytriton (local Triton)."
    )
    triton_workdir: Path = Field(
        REPO_ROOT / "var" / "triton", description="Where the local Triton's generated repository lives."
    )
    triton_grpc_port: int = Field(8001, description="gRPC port of the local Triton.")
    triton_http_port: int = Field(8000, description="HTTP port of the local Triton.")
    triton_metrics_port: int = Field(8002, description="Metrics port of the local Triton.")

    # Output
    output_folder: Path = Field(REPO_ROOT / "out", description="Where `demo` writes its results.")
    hook_deadline_s: float = Field(5.0, description="Time budget for one hook answer, seconds.")
    local_timezone: str = Field(
        "UTC",
        description="IANA zone of DICOM dates/times without Timezone Offset From UTC (0008,0201), e.g. Europe/Zurich.",
    )
    negative_card: bool = Field(True, description="Show an info card when no fracture is found.")
    low_suspicion_cards: bool = Field(
        True,
        description="Show a low-suspicion info card for a hip between the operating and the high-specificity "
        "operating points (worded as suspicion, with its probability); false = no card for such a study.",
    )

    # Heat-map viewer
    viewer_secret: str = Field(
        "",
        description="HMAC key signing viewer links (a Kubernetes Secret); required with HIPCAD_DATABASE_URL; "
        "empty = a random key per process (links die on restart).",
    )
    viewer_link_ttl_s: int = Field(
        86400,
        description="Lifetime of a viewer link, seconds (as long as a card typically stays in the chart; "
        "capped by HIPCAD_RESULT_TTL_S).",
    )
    viewer_renew_grace_s: int = Field(
        86400,
        ge=0,
        description="How long after it expired a genuine viewer link can still be renewed from the card "
        "(the expired page's 'Get a fresh link'), seconds, while the result is kept; 0 = never renewed.",
    )
    result_ttl_s: int = Field(
        86400, description="How long analysed results are kept for the viewer (and reused by hooks), seconds."
    )

    # The viewer as a SMART App Launch 2.0 app (cds_service/smart)
    card_link: Literal["smart", "absolute"] = Field(
        "smart",
        description="The card's viewer link: `smart` (a SMART launch of `<base>/smart/launch` with the result in "
        "`appContext`, what EHRs that keep only registered apps' links act on) or `absolute` (the fallback: the "
        "signed, short-lived viewer URL, for a CDS client that cannot launch SMART apps).",
    )
    smart_client_id: str = Field("hipcad-viewer", description="The app's `client_id` registered with the EHR.")
    smart_client_secret: str = Field(
        "", description="Confidential symmetric client (`client_secret_basic`); empty with no key = public client."
    )
    smart_private_key_file: Path | None = Field(
        None, description="PEM private key (RSA or EC) of a confidential asymmetric client (`private_key_jwt`)."
    )
    smart_key_id: str = Field("", description="`kid` of that key in the JWKS registered with the EHR.")
    smart_redirect_uri: str = Field("", description="The registered `redirect_uri`; empty = `<base>/smart/callback`.")
    smart_scope: str = Field(
        "launch openid fhirUser patient/ImagingStudy.rs patient/DiagnosticReport.rs",
        description="Scopes requested in an EHR launch (`launch` becomes `launch/patient` in a standalone launch).",
    )
    smart_standalone_iss: str = Field(
        "", description="FHIR base a standalone launch (`/smart/launch` without `iss`) starts from; empty = none."
    )
    smart_auth_allowed_bases: list[str] = Field(
        default_factory=list,
        description="Authorization servers (token endpoints) on another origin than their allow-listed FHIR "
        "server (JSON list); the FHIR server's own origin is always allowed.",
    )
    smart_session_ttl_s: int = Field(3600, description="Lifetime of a SMART session (token kept server-side), s.")

    # Observability
    log_format: Literal["json", "text"] = Field(
        "json", description="Log lines on stderr: `json` (one object per line, with trace/span ids) or `text`."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Lowest level logged.")
    otel_console: bool = Field(False, description="Print finished trace spans to stderr.")
    otlp_endpoint: str = Field(
        "", description="OpenTelemetry collector base URL (OTLP/HTTP, e.g. http://otel-collector:4318); empty = off."
    )
    triton_trace: bool = Field(
        False,
        description="Local Triton exports its own spans to the OTLP endpoint too (opt-in: Triton 2.51 tracing bug).",
    )

    @field_validator("fhir_allowed_bases", "dicomweb_allowed_bases")
    @classmethod
    def _valid_bases(cls, bases: list[str]) -> list[str]:
        """An allow-listed base that the outbound URL policy would refuse is a start-up error, not a 500 later."""
        UrlPolicy([base for base in bases if not base.startswith("file:")])  # file bases: checked with the folder
        return bases

    @field_validator("local_timezone")
    @classmethod
    def _valid_timezone(cls, name: str) -> str:
        """An unknown zone is a start-up error, not a wrong report time later."""
        zone(name)
        return name

    def base_url(self) -> str:
        """The external URL of the service, without a trailing slash."""
        return (self.public_base_url or f"http://{self.host}:{self.port}").rstrip("/")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
