"""Launch the real Triton Inference Server locally, on CPU, from nvidia-pytriton's bundled binary.

Production runs NVIDIA's Triton container on GPU nodes with ``model_repository/`` unchanged
(onnxruntime backend, TensorRT accelerator). The bundled CPU server has only the python backend,
so :func:`prepare_repository` derives a runnable copy: each ONNX model keeps its name, tensors and
``parameters`` and gets ``backend: "python"`` with ``python_backend_model.py`` beside its
``model.onnx``; ensembles are copied as they are.

The recipe (see ``shared/design/components.md``): the stub for this Python version must sit next
to ``libtriton_python.so``; the server venv's ``bin`` first on ``PATH`` and its libpython and
``nvidia_pytriton.libs`` on ``LD_LIBRARY_PATH``; numpy < 2 in that venv. A missing library makes
the server hang while loading models, so readiness is polled with a deadline and the process is
checked alive on every poll.

Threads: each python-backend twin runs its own onnxruntime session, and by default onnxruntime
starts one intra-op thread per core in every session, so two models on a 2-core machine would run
four busy threads on two cores. The launcher tells each twin how many twins share the machine
(``HIPCAD_TWIN_COUNT``) and the twin sizes its session to ``max(1, cores // twins)`` intra-op
threads and one inter-op thread. ``HIPCAD_ORT_THREADS=N`` (N ≥ 1) in the launcher's environment
overrides the intra-op count for every twin.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from cds_service.errors import InferenceError

if TYPE_CHECKING:
    from cds_service.settings import Settings

log = logging.getLogger(__name__)

WRAPPER = Path(__file__).with_name("python_backend_model.py")


def read_model_config(path: Path) -> model_config_pb2.ModelConfig:
    """Parse a ``config.pbtxt`` (protobuf text format) into Triton's ModelConfig message."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def model_versions(repository: Path, name: str) -> list[int]:
    """The numbered version folders of ``repository/name``, oldest first (empty when there are none)."""
    folder = repository / name
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()) if folder.is_dir() else []


def latest_model_file(repository: Path, name: str, filename: str = "model.onnx") -> Path:
    """``repository/name/<newest version>/filename``: what Triton serves under ``version_policy: latest 1``
    (the path of version 1 when the model has no version yet)."""
    versions = model_versions(repository, name)
    return repository / name / str(versions[-1] if versions else 1) / filename


def to_python_backend(config: model_config_pb2.ModelConfig) -> model_config_pb2.ModelConfig:
    """The CPU python-backend twin of an onnxruntime model config (same name, tensors, parameters)."""
    cpu = model_config_pb2.ModelConfig()
    cpu.CopyFrom(config)
    cpu.platform = ""
    cpu.backend = "python"
    cpu.ClearField("optimization")
    cpu.ClearField("model_warmup")
    cpu.ClearField("instance_group")
    cpu.instance_group.add(kind=model_config_pb2.ModelInstanceGroup.KIND_CPU, count=1)
    return cpu


def prepare_repository(source: Path, target: Path) -> list[str]:
    """Write the CPU-runnable copy of ``source`` into ``target``; returns the model names."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    names = []
    for config_path in sorted(source.glob("*/config.pbtxt")):
        model_dir = config_path.parent
        config = read_model_config(config_path)
        name = config.name or model_dir.name
        out = target / model_dir.name
        out.mkdir()
        if config.platform == "onnxruntime_onnx" or config.backend == "onnxruntime":
            config = to_python_backend(config)
            for onnx_file in sorted(model_dir.glob("*/model.onnx")):
                version_dir = out / onnx_file.parent.name
                version_dir.mkdir()
                os.symlink(onnx_file.resolve(), version_dir / "model.onnx")
                shutil.copyfile(WRAPPER, version_dir / "model.py")
        else:
            for version_dir in model_dir.iterdir():
                if version_dir.is_dir() and version_dir.name.isdigit():
                    shutil.copytree(version_dir, out / version_dir.name)
        (out / "config.pbtxt").write_text(text_format.MessageToString(config))
        names.append(name)
    return names


def count_twins(repository: Path) -> int:
    """How many python-backend model instances a prepared repository runs (they share the cores)."""
    total = 0
    for config_path in repository.glob("*/config.pbtxt"):
        config = read_model_config(config_path)
        if config.backend == "python":
            total += sum(group.count or 1 for group in config.instance_group) or 1
    return total


@dataclass(frozen=True)
class TritonPaths:
    """Where the pieces of nvidia-pytriton's server live inside its venv."""

    binary: Path
    backends: Path
    stub: Path
    libs: Path
    python_libdir: Path
    venv_bin: Path

    @classmethod
    def from_venv(cls, venv: Path) -> TritonPaths:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        site = venv / "lib" / f"python{version}" / "site-packages"
        server = site / "pytriton" / "tritonserver"
        paths = cls(
            binary=server / "bin" / "tritonserver",
            backends=server / "backends",
            stub=server / "python_backend_stubs" / version / "triton_python_backend_stub",
            libs=site / "nvidia_pytriton.libs",
            python_libdir=Path(sysconfig.get_config_var("LIBDIR") or "/usr/lib"),
            venv_bin=venv / "bin",
        )
        if not paths.binary.exists():
            raise InferenceError(
                f"no tritonserver in {venv}: create it with "
                "`python3 -m venv .venv-triton && .venv-triton/bin/pip install -r requirements-triton.txt`"
            )
        return paths


def free_port() -> int:
    """A currently free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TritonServer:
    """A local Triton process on loopback ports; use as a context manager or call start/stop."""

    def __init__(
        self,
        model_repository: Path,
        venv: Path,
        workdir: Path,
        grpc_port: int = 8001,
        http_port: int = 8000,
        metrics_port: int = 8002,
        trace_url: str | None = None,
        model_control_mode: str = "none",
    ) -> None:
        self.model_repository = model_repository
        self.paths = TritonPaths.from_venv(venv)
        self.workdir = workdir
        self.grpc_port = grpc_port
        self.http_port = http_port
        self.metrics_port = metrics_port
        self.trace_url = trace_url
        self.model_control_mode = model_control_mode
        self.twins = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "tritonserver.log"

    @classmethod
    def on_free_ports(cls, settings: Settings, workdir: Path, **kwargs: Any) -> TritonServer:
        """The local Triton for ``settings``' model repository and venv, on three free loopback ports.

        ``kwargs`` go to the constructor (``model_control_mode="explicit"``, ``trace_url``).
        """
        return cls(
            settings.model_repository,
            settings.triton_venv,
            workdir,
            grpc_port=free_port(),
            http_port=free_port(),
            metrics_port=free_port(),
            **kwargs,
        )

    @property
    def repository(self) -> Path:
        """The generated, CPU-runnable repository the server actually loads (``start`` writes it)."""
        return self.workdir / "model_repository"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _backend_dir(self) -> Path:
        """A backend folder with the python backend and the stub for this Python side by side."""
        backends = self.workdir / "backends"
        python = backends / "python"
        if python.exists():
            shutil.rmtree(python)
        python.mkdir(parents=True)
        for item in (self.paths.backends / "python").iterdir():
            if item.is_file():
                os.symlink(item, python / item.name)
        shutil.copy2(self.paths.stub, python / self.paths.stub.name)
        return backends

    def command(self, repository: Path, backends: Path) -> list[str]:
        cmd = [
            str(self.paths.binary),
            f"--model-repository={repository}",
            f"--backend-directory={backends}",
            f"--grpc-port={self.grpc_port}",
            f"--http-port={self.http_port}",
            f"--metrics-port={self.metrics_port}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--metrics-address=127.0.0.1",
            "--log-verbose=0",
            "--exit-on-error=true",
            "--strict-readiness=true",
            f"--model-control-mode={self.model_control_mode}",
        ]
        if self.model_control_mode == "explicit":
            cmd.append("--load-model=*")  # everything at start; later (re)loads through the repository API
        if self.trace_url:
            cmd += [
                "--trace-config=mode=opentelemetry",
                "--trace-config=rate=1",
                "--trace-config=level=TIMESTAMPS",
                f"--trace-config=opentelemetry,url={self.trace_url}",
            ]
        return cmd

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.paths.venv_bin}{os.pathsep}{env.get('PATH', '')}"
        libs = [str(self.paths.python_libdir), str(self.paths.libs)]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        env["HIPCAD_TWIN_COUNT"] = str(max(1, self.twins))  # python_backend_model.py sizes its threads by it
        return env

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the server and wait until every model is ready, or raise InferenceError."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        repository = self.repository
        names = prepare_repository(self.model_repository, repository)
        self.twins = count_twins(repository)
        backends = self._backend_dir()
        log.info("starting Triton with models %s on gRPC port %d", names, self.grpc_port)
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(  # noqa: S603 - fixed binary, arguments built here
                self.command(repository, backends),
                env=self.environment(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        url = f"http://127.0.0.1:{self.http_port}/v2/health/ready"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise InferenceError(
                    f"Triton exited with code {self.process.returncode}; log: {self.log_path}\n" + self.log_tail()
                )
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            time.sleep(0.2)
        self.stop()
        raise InferenceError(f"Triton not ready after {timeout_s:.0f} s; log: {self.log_path}\n" + self.log_tail())

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a few seconds)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_triton(**kwargs: object) -> Iterator[TritonServer]:
    """Context manager form of :class:`TritonServer`."""
    server = TritonServer(**kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m cds_service.inference.triton_server``: the local Triton on free (or given) ports.

    Writes ``{"grpc": …, "http": …, "metrics": …, "log": …}`` as JSON to ``--ready-file`` (and
    stdout) once every model is ready, then serves until SIGTERM/SIGINT. Benchmarks start it this way.
    """
    import argparse
    import json
    import threading

    from cds_service.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m cds_service.inference.triton_server", description=main.__doc__)
    parser.add_argument("--workdir", type=Path, help="where the generated repository and log go")
    parser.add_argument("--grpc-port", type=int, default=0, help="0: a free port")
    parser.add_argument("--http-port", type=int, default=0, help="0: a free port")
    parser.add_argument("--metrics-port", type=int, default=0, help="0: a free port")
    parser.add_argument("--model-control-mode", default="none", choices=("none", "explicit", "poll"))
    parser.add_argument("--ready-file", type=Path, help="write the ports here as JSON once ready")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings()
    server = TritonServer(
        settings.model_repository,
        settings.triton_venv,
        args.workdir or settings.triton_workdir,
        grpc_port=args.grpc_port or free_port(),
        http_port=args.http_port or free_port(),
        metrics_port=args.metrics_port or free_port(),
        model_control_mode=args.model_control_mode,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start(timeout_s=args.timeout)
    try:
        ready = {
            "grpc": server.grpc_port,
            "http": server.http_port,
            "metrics": server.metrics_port,
            "log": str(server.log_path),
            "twins": server.twins,
        }
        if args.ready_file:
            args.ready_file.write_text(json.dumps(ready))
        print(json.dumps(ready), flush=True)
        while not stop.wait(1.0):
            if server.process is not None and server.process.poll() is not None:
                print(f"Triton exited with code {server.process.returncode}; log: {server.log_path}", file=sys.stderr)
                return 1
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
