"""A throwaway PostgreSQL cluster (Debian's ``postgresql`` package) on loopback, for the shared-store tests.

PostgreSQL refuses to run as root, so the cluster belongs to the ``postgres`` system user (``runuser``
when the tests run as root). ``restart()`` is the fault test's "PostgreSQL restarted".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from cds_service.inference.triton_server import free_port

BIN = Path("/usr/lib/postgresql/15/bin")


def available() -> bool:
    return (BIN / "pg_ctl").exists()


class PostgresServer:
    def __init__(self) -> None:
        # Directly under the temp root: the postgres user must be able to reach it (pytest's own
        # folders are private to root).
        self.folder = Path(tempfile.mkdtemp(prefix="hipcad-postgres-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.user = "hipcad"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"{Path(command[0]).name} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> None:
        if not self.data.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.folder, "postgres", "postgres")
            self._run(str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user)
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start"
        )

    def stop(self) -> None:
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def restart(self) -> None:
        self.stop()
        self.start()
