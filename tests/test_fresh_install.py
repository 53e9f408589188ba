"""A fresh install works: the serving commands never need the [train] extra, and a built wheel serves.

Last round the README's main job failed on a fresh machine because building the ``cds-service``
parser imported torch, and CI (which installs ``[test,train]`` first) could not see it. These
tests look from the outside: a subprocess in which the training extra cannot be imported, and the
package installed as a wheel (not editable) into a fresh virtual environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from cds_service.cli import TRAIN_EXTRA

REPO = Path(__file__).resolve().parent.parent

#: Imports every module that ``serve``, ``triton``, ``send-hook`` and ``demo`` reach, with the
#: training extra made unimportable, and prints which extra modules got imported anyway.
NO_TRAIN_EXTRA = textwrap.dedent(
    """
    import importlib.abc, json, sys
    blocked = set(json.loads(sys.argv[1]))
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, Block())
    from cds_service import cli
    parser = cli.build_parser()
    for command in ("serve", "triton", "send-hook", "demo", "train", "evaluate"):
        assert command in parser._subparsers._group_actions[0].choices, command
    import cds_service.app, cds_service.demo, cds_service.ehr, cds_service.grpc_api
    import cds_service.inference.triton_server, cds_service.training.phantoms
    from cds_service.settings import Settings
    cds_service.app.create_app(Settings(jwt_required=False))
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in blocked)))
    """
)


def test_serving_commands_import_nothing_from_the_train_extra():
    result = subprocess.run(
        [sys.executable, "-c", NO_TRAIN_EXTRA, json.dumps(sorted(TRAIN_EXTRA))],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_a_training_command_without_the_extra_says_how_to_install_it():
    code = NO_TRAIN_EXTRA.split("from cds_service import cli")[0] + textwrap.dedent(
        """
        from cds_service import cli
        sys.exit(cli.main(["export", "--repository", sys.argv[2]]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(sorted(TRAIN_EXTRA)), "/nonexistent"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2
    assert "needs the [train] extra" in result.stderr and "pip install" in result.stderr


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the package as a built wheel (no editable link back to this checkout).

    The dependencies are borrowed from the test venv through a plain path entry (a ``.pth`` line:
    the editable install's own ``.pth`` hooks there are not run), so the test needs no downloads.
    """
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = root.glob("hipcad_cds_service-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return venv


def test_wheel_install_answers_discovery_from_package_data(wheel_venv: Path, tmp_path: Path):
    code = textwrap.dedent(
        """
        import json, cds_service
        from fastapi.testclient import TestClient
        from cds_service.app import create_app
        from cds_service.ehr import load_example
        from cds_service.settings import Settings
        settings = Settings(jwt_required=False, feedback_db="feedback.sqlite3", dicom_folder=".")
        with TestClient(create_app(settings)) as client:
            answer = client.get("/cds-services")
        print(json.dumps({
            "file": cds_service.__file__,
            "status": answer.status_code,
            "services": sorted(s["id"] for s in answer.json()["services"]),
            "example": load_example("order-select.json")["hook"],
        }))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",) and not k.startswith("HIPCAD_")}
    result = subprocess.run(
        [wheel_venv / "bin" / "python", "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["file"].startswith(str(wheel_venv))  # the wheel, not this checkout
    assert answer["status"] == 200
    assert answer["services"] == [
        "hip-fracture-order-select",
        "hip-fracture-order-sign",
        "hip-fracture-patient-view",
    ]
    assert answer["example"] == "order-select"


def test_wheel_console_script_runs(wheel_venv: Path, tmp_path: Path):
    result = subprocess.run(
        [wheel_venv / "bin" / "cds-service", "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "send-hook" in result.stdout
