"""Run David Clunie's ``dciodvfy`` (dicom3tools, .ci/install-tools.sh) on a DICOM file.

Its ``Error`` lines are IOD violations and fail a test; ``Warning`` lines are returned for
inspection. Missing on a developer machine: skip; under ``CI=true``: fail (see tests/conftest.py).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pydicom


@dataclass(frozen=True)
class Validation:
    iod: str
    errors: list[str]
    warnings: list[str]


def available() -> bool:
    return shutil.which("dciodvfy") is not None


def validate(path: Path) -> Validation:
    """Validate one file; skips (or fails in CI) when dciodvfy is not installed."""
    from tests.conftest import require

    require(available(), "dciodvfy is not installed (run .ci/install-tools.sh)")
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120, check=False)
    lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    return Validation(
        iod=lines[0] if lines and not lines[0].startswith(("Error", "Warning")) else "",
        errors=[line for line in lines if line.startswith("Error")],
        warnings=[line for line in lines if line.startswith("Warning")],
    )


def assert_valid(dataset: pydicom.Dataset, folder: Path, name: str = "object.dcm") -> Validation:
    """Write ``dataset`` as a DICOM file into ``folder`` and assert dciodvfy reports no error."""
    path = folder / name
    dataset.save_as(path, enforce_file_format=True)
    validation = validate(path)
    assert not validation.errors, "\n".join(validation.errors)
    return validation
