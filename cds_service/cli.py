"""Command line: ``cds-service serve | triton | send-hook | demo`` (+ training commands)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cds_service.settings import Settings, get_settings
from cds_service.training.cli import register as register_training

if TYPE_CHECKING:
    from cds_service.store import AsyncStore

#: Modules of the optional ``[train]`` extra; a command that needs them says how to install them.
TRAIN_EXTRA = frozenset({"torch", "torchvision", "timm", "pytorch_grad_cam", "onnx", "onnxruntime", "matplotlib"})


log = logging.getLogger("cds_service.cli")


def _logged(command: str, settings: Settings, run: Callable[[], int]) -> int:
    """Run a long-lived command with JSON log lines from its first instant; a crash is one logged line
    (type and frames, never the message: it may quote data), exit status 1, never a bare traceback."""
    from cds_service.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        return run()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        log.critical("%s failed", command, exc_info=exc)
        return 1


def _open_store(settings: Settings) -> AsyncStore:
    """The store, migrated; an unreachable database is waited for (backoff, one log line per attempt)."""
    from cds_service.store import open_store
    from cds_service.store.migrate import upgrade_when_reachable

    store = open_store(settings, migrate=False)
    upgrade_when_reachable(store.sql.engine, max_delay_s=settings.database_retry_max_s)
    return store


def _run_service(settings: Settings) -> int:
    """uvicorn with JSON log lines (trace/span ids, no patient data; access lines: route shapes only)."""
    import uvicorn

    from cds_service.logs import RequestTimer, uvicorn_log_config

    level, fmt = settings.log_level, settings.log_format
    from cds_service.app import create_app  # after configure_logging: libraries log at import time too
    from cds_service.http_limits import bounded_protocol
    from cds_service.telemetry import setup_tracing

    # Tracing before the store opens: the SQLAlchemy instrumentation traces engines created after it.
    setup_tracing(console=settings.otel_console, otlp_endpoint=settings.otlp_endpoint)
    uvicorn.run(
        RequestTimer(create_app(settings, store=_open_store(settings))),
        host=settings.host,
        port=settings.port,
        log_level=level.lower(),
        log_config=uvicorn_log_config(level, fmt),
        http=bounded_protocol(settings.body_read_timeout_s),  # 431 / 408 for heads, slow-loris deadlines
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    settings = get_settings()
    return _logged("serve", settings, lambda: _run_service(settings))


def _listen(args: argparse.Namespace) -> int:
    """``serve`` with the DICOM listener on (analysis on arrival); the HTTP service answers the hooks."""
    settings = get_settings()
    settings = settings.model_copy(update={"dicom_listener_port": args.port or settings.dicom_listener_port or 11112})
    return _logged("listen", settings, lambda: _run_service(settings))


def _triton(args: argparse.Namespace) -> int:
    from cds_service.inference.triton_server import TritonServer

    settings = get_settings()
    server = TritonServer(
        settings.model_repository,
        settings.triton_venv,
        settings.triton_workdir,
        grpc_port=settings.triton_grpc_port,
        http_port=settings.triton_http_port,
        metrics_port=settings.triton_metrics_port,
        trace_url=settings.otlp_endpoint.rstrip("/") + "/v1/traces"
        if settings.triton_trace and settings.otlp_endpoint
        else None,
    )
    server.start()
    print(f"Triton ready: gRPC {server.grpc_url}; log {server.log_path}. Ctrl-C to stop.", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            if server.process is not None and server.process.poll() is not None:
                print("Triton exited:\n" + server.log_tail(), file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _send_hook(args: argparse.Namespace) -> int:
    from cds_service.ehr import send_hook

    settings = get_settings()
    request = json.loads(Path(args.file).read_text())
    url = f"{args.url.rstrip('/')}/cds-services/{args.service}"
    key = None if args.no_jwt else Path(args.private_key).read_bytes()
    response = send_hook(url, request, key, args.issuer or settings.jwt_issuer)
    print(f"HTTP {response.status_code}", file=sys.stderr)
    try:
        print(json.dumps(response.json(), indent=2))
    except ValueError:
        print(response.text)
    return 0 if response.status_code == 200 else 1


def _migrate(args: argparse.Namespace) -> int:
    """Migrate, waiting for an unreachable database (an init container must not crash-loop through an
    outage); ``--give-up-after`` bounds the wait."""
    settings = get_settings()

    def run() -> int:
        from cds_service.store import database_url  # after the logging set-up: alembic logs on import
        from cds_service.store.migrate import current, upgrade_when_reachable
        from cds_service.store.sql import engine_for

        engine = engine_for(database_url(settings))
        upgrade_when_reachable(
            engine,
            args.revision,
            max_delay_s=settings.database_retry_max_s,
            give_up_after_s=args.give_up_after or None,
        )
        log.info("%s store: schema at revision %s", engine.dialect.name, current(engine))
        engine.dispose()
        return 0

    return _logged("migrate", settings, run)


def _demo(args: argparse.Namespace) -> int:
    from cds_service.demo import run_demo

    settings = get_settings()
    return run_demo(settings, Path(args.output) if args.output else settings.output_folder, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="cds-service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("serve", help="run the CDS Hooks service (settings from HIPCAD_* variables)").set_defaults(
        func=_serve
    )
    listen = sub.add_parser(
        "listen", help="serve, plus a DICOM Storage SCP that analyses routed AP pelvis/hip images on arrival"
    )
    listen.add_argument("--port", type=int, default=0, help="DICOM port (default: HIPCAD_DICOM_LISTENER_PORT or 11112)")
    listen.set_defaults(func=_listen)
    sub.add_parser("triton", help="run the local Triton server on model_repository/").set_defaults(func=_triton)
    migrate = sub.add_parser(
        "migrate", help="bring the store (HIPCAD_DATABASE_URL, else the SQLite file) to the shipped schema"
    )
    migrate.add_argument("--revision", default="head", help="target revision (default: %(default)s)")
    migrate.add_argument(
        "--give-up-after",
        type=float,
        default=0,
        help="seconds to wait for an unreachable database before failing (default: 0 = wait forever)",
    )
    migrate.set_defaults(func=_migrate)

    send = sub.add_parser("send-hook", help="sign and send a hook request file, as an EHR would")
    send.add_argument("file", help="hook request JSON, e.g. hooks/examples/order-select.json")
    send.add_argument("--url", default=settings.base_url(), help="service base URL (default: %(default)s)")
    send.add_argument("--service", default="hip-fracture-order-select", help="CDS service id")
    send.add_argument(
        "--private-key",
        default=str(settings.jwt_public_key_file.parent / "ehr-private.pem"),
        help="EHR signing key, PEM (default: %(default)s)",
    )
    send.add_argument("--issuer", default=None, help="JWT iss (default: HIPCAD_JWT_ISSUER)")
    send.add_argument("--no-jwt", action="store_true", help="send without Authorization header")
    send.set_defaults(func=_send_hook)

    demo = sub.add_parser("demo", help="the main job end to end on the embedded defaults")
    demo.add_argument("--output", default=None, help="output folder (default: HIPCAD_OUTPUT_FOLDER)")
    demo.add_argument("--seed", type=int, default=7, help="phantom seed of the sample study")
    demo.set_defaults(func=_demo)

    register_training(sub)  # torch-free: torch is imported only when a training command runs
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # These libraries log study/series/instance UIDs and request URLs at INFO: identifiers stay out of logs.
    for noisy in ("dicomweb_client", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TRAIN_EXTRA:
            raise
        print(
            f"cds-service {args.command} needs the [train] extra ({exc.name} is missing): pip install -e '.[train]'",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
