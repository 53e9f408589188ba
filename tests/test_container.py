"""The container images' supply chain, read from the Dockerfiles and the lock files (no Docker daemon).

* every ``FROM`` names its base by digest (``image:tag@sha256:…``, Dockerfile reference, "FROM");
* the service image's builder installs third-party packages only with ``pip --require-hashes`` from
  ``requirements.lock`` / ``requirements-build.lock`` (pip's secure installs, "Hash-checking mode")
  and builds the package's wheel without fetching anything;
* its runtime stage installs nothing, removes the base image's pip, and takes the venv from the builder;
* the runtime lock pins and hashes every ``[project].dependencies`` entry of pyproject.toml (and what
  their extras pull in) at a version the entry allows, and the build lock does the same for
  ``[build-system].requires``: a dependency changed in pyproject.toml without relocking
  (``sh docker/lock-requirements.sh``) fails here.

Each check is a function returning its findings, so the tests also show that it refuses a broken input.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = (ROOT / "Dockerfile", ROOT / "docker" / "triton.Dockerfile")
RUNTIME_LOCK = ROOT / "requirements.lock"
BUILD_LOCK = ROOT / "requirements-build.lock"
LOCK_SCRIPT = ROOT / "docker" / "lock-requirements.sh"
DIGEST = re.compile(r"^(?P<name>[a-z0-9][a-z0-9./_-]*):(?P<tag>[\w][\w.-]*)@sha256:[0-9a-f]{64}$")
# The platform the locks are resolved for (docker/lock-requirements.sh) and the image runs.
IMAGE_ENVIRONMENT = {
    **default_environment(),
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


# ---------------------------------------------------------------- parsing


@dataclass
class Stage:
    """One build stage: its base (``FROM`` argument), name and instructions (keyword, arguments)."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def runs(self) -> list[str]:
        """The shell commands of its ``RUN`` instructions, continuation lines joined."""
        return [args for keyword, args in self.instructions if keyword == "RUN"]


def instructions(text: str) -> list[tuple[str, str]]:
    """Dockerfile instructions as (keyword, arguments): comments dropped, ``\\`` continuations joined."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        logical.append(pending)
        pending = ""
    assert not pending, "the last instruction ends with a line continuation"
    parsed = []
    for line in logical:
        keyword, _, args = line.strip().partition(" ")
        parsed.append((keyword.upper(), " ".join(args.split())))
    return parsed


def stages(text: str) -> list[Stage]:
    """The build stages in order."""
    result: list[Stage] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            words = [word for word in args.split() if not word.startswith("--platform=")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(base=words[0], name=name))
        else:
            assert result, f"{keyword} before the first FROM"
            result[-1].instructions.append((keyword, args))
    return result


def pip_commands(command: str) -> list[list[str]]:
    """Every pip invocation in a shell command, as its words after ``pip`` (sub-command first)."""
    found = []
    for part in re.split(r"&&|\|\||;|\|", command):
        words = shlex.split(part)
        while words and words[0] == "!":
            words = words[1:]
        if words and (Path(words[0]).name in ("pip", "pip3") or words[:3][1:3] == ["-m", "pip"]):
            words = words[1:] if Path(words[0]).name in ("pip", "pip3") else words[3:]
            if words and words[0].startswith("--python"):  # pip --python <venv python> <command>
                words = words[2:] if words[0] == "--python" else words[1:]
            found.append(words)
    return found


@dataclass(frozen=True)
class Pin:
    """One lock entry: the exact version and the sha256 hashes pip checks the downloaded file against."""

    version: str
    hashes: tuple[str, ...]


def read_lock(text: str) -> dict[str, Pin]:
    """A ``--generate-hashes`` requirements file: canonical name → pin. Anything but ``name==version``
    followed by ``--hash=sha256:`` options is refused."""
    pins: dict[str, Pin] = {}
    entries = re.sub(r"\\\n\s*", " ", "\n".join(line.split("#")[0].rstrip() for line in text.splitlines()))
    for entry in filter(None, (line.strip() for line in entries.splitlines())):
        requirement, *options = entry.split()
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", requirement)
        assert match, f"not an exact pin: {entry!r}"
        hashes = tuple(option.removeprefix("--hash=sha256:") for option in options)
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), f"not sha256 hashes: {entry!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{name} twice"
        pins[name] = Pin(match.group(2), hashes)
    return pins


# ---------------------------------------------------------------- the checks


def unpinned_bases(text: str) -> list[str]:
    """The ``FROM`` bases not named as ``image:tag@sha256:<64 hex>`` (a stage may start from an earlier
    stage by its name)."""
    named: set[str] = set()
    bad = []
    for stage in stages(text):
        if stage.base not in named and not DIGEST.match(stage.base):
            bad.append(stage.base)
        if stage.name:
            named.add(stage.name)
    return bad


def builder_findings(stage: Stage) -> list[str]:
    """What in the builder could install a package the locks do not pin and hash."""
    findings = []
    for command in stage.runs():
        for words in pip_commands(command):
            if words[:1] == ["install"]:
                locks = [words[i + 1] for i, word in enumerate(words[:-1]) if word in ("-r", "--requirement")]
                from_locks = all(re.fullmatch(r"requirements.*\.lock", lock) for lock in locks)
                if locks:
                    if "--require-hashes" not in words or not from_locks:
                        findings.append(f"pip install without --require-hashes from a lock: {' '.join(words)}")
                elif not {"--no-index", "--no-deps"} <= set(words):
                    findings.append(f"pip install of something that is not in a lock: {' '.join(words)}")
            elif words[:1] == ["wheel"] and not {"--no-index", "--no-deps", "--no-build-isolation"} <= set(words):
                findings.append(f"pip wheel that may fetch packages: {' '.join(words)}")
            elif words[:1] == ["download"]:
                findings.append(f"pip download: {' '.join(words)}")
    return findings


def runtime_findings(stage: Stage) -> list[str]:
    """What leaves an installer in the runtime stage, or installs anything into it."""
    findings = []
    commands = stage.runs()
    for command in commands:
        for words in pip_commands(command):
            if words[:1] != ["uninstall"]:
                findings.append(f"pip {' '.join(words)}")
        if re.search(r"\b(apt-get|apt|apk|dnf|yum|microdnf|conda|uv|easy_install)\b", command):
            findings.append(f"a package manager: {command}")
    removes = [words for command in commands for words in pip_commands(command) if words[:1] == ["uninstall"]]
    if not any({"pip", "--yes"} <= set(words) or {"pip", "-y"} <= set(words) for words in removes):
        findings.append("the base image's pip is not uninstalled")
    if not any(re.search(r"rm -rf .*/ensurepip\b", command) for command in commands):
        findings.append("ensurepip (a bundled pip wheel) is kept")
    if not any(re.search(r"! python3? -c ['\"]?import pip\b", command) for command in commands):
        findings.append("the build does not prove that pip is gone")
    copies = [args for keyword, args in stage.instructions if keyword in ("COPY", "ADD")]
    if copies != ["--from=builder /opt/venv /opt/venv"]:
        findings.append(f"the runtime stage takes more than the builder's venv: {copies}")
    return findings


def coverage_findings(requirements: list[str], pins: dict[str, Pin], *, extras_from_metadata: bool) -> list[str]:
    """The requirements (PEP 508 strings) the lock does not pin, pins at a version they do not allow, or
    pins without a hash. With ``extras_from_metadata`` the requirements of each requested extra (read
    from the installed distribution's metadata, where installed) are checked by name too."""
    findings = []
    for line in requirements:
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate(IMAGE_ENVIRONMENT):
            continue
        name = canonicalize_name(requirement.name)
        pin = pins.get(name)
        if pin is None:
            findings.append(f"{requirement.name} is not in the lock")
            continue
        if not requirement.specifier.contains(pin.version, prereleases=True):
            findings.append(f"{requirement.name}=={pin.version} does not satisfy {line!r}")
        if not pin.hashes:
            findings.append(f"{requirement.name} has no hash")
        if extras_from_metadata and requirement.extras:
            for extra in sorted(requirement.extras):
                for needed in extra_requirements(requirement.name, extra):
                    if canonicalize_name(needed.name) not in pins:
                        findings.append(f"{needed.name} (from {requirement.name}[{extra}]) is not in the lock")
    return findings


def extra_requirements(distribution: str, extra: str) -> list[Requirement]:
    """What ``distribution[extra]`` adds, on the image's platform, from the installed metadata."""
    declared = importlib.metadata.requires(distribution) or []
    added = []
    for line in declared:
        requirement = Requirement(line)
        if requirement.marker and requirement.marker.evaluate({**IMAGE_ENVIRONMENT, "extra": extra}):
            if not requirement.marker.evaluate({**IMAGE_ENVIRONMENT, "extra": ""}):
                added.append(requirement)
    return added


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def service() -> list[Stage]:
    return stages((ROOT / "Dockerfile").read_text())


# ---------------------------------------------------------------- the images


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda path: path.name)
def test_every_base_image_is_pinned_by_digest(path):
    assert stages(path.read_text()), path
    assert unpinned_bases(path.read_text()) == []


def test_an_unpinned_or_tag_only_base_is_refused():
    digest = "sha256:" + "ab" * 32
    assert unpinned_bases(f"FROM python:3.11-slim@{digest} AS b\nFROM b\n") == []
    assert unpinned_bases("FROM python:3.11-slim\n") == ["python:3.11-slim"]
    assert unpinned_bases(f"FROM python@{digest}\n") == [f"python@{digest}"]  # which tag was meant?
    assert unpinned_bases("FROM python:3.11-slim@sha256:abc\n") == ["python:3.11-slim@sha256:abc"]
    assert unpinned_bases(f"FROM --platform=linux/amd64 node:22@{digest}\nFROM other:1 AS b\n") == ["other:1"]


def test_both_service_stages_start_from_the_same_python_the_locks_are_resolved_for():
    builder, runtime = service()
    assert builder.name == "builder" and runtime.name is None
    assert builder.base == runtime.base  # the venv links to the base image's interpreter
    assert DIGEST.match(runtime.base)["name"] == "python"
    assert DIGEST.match(runtime.base)["tag"].startswith("3.11-")
    assert "--python-version 3.11 " in LOCK_SCRIPT.read_text()
    assert IMAGE_ENVIRONMENT["python_version"] == "3.11"


def test_the_builder_installs_only_what_the_locks_pin_and_hash():
    builder, _ = service()
    assert builder_findings(builder) == []
    pips = [words for command in builder.runs() for words in pip_commands(command)]
    hashed = [words for words in pips if "--require-hashes" in words]
    assert {words[words.index("-r") + 1] for words in hashed} == {RUNTIME_LOCK.name, BUILD_LOCK.name}
    assert any(words[0] == "wheel" for words in pips)  # the package itself, from the copied sources
    copied = " ".join(args for keyword, args in builder.instructions if keyword == "COPY")
    assert RUNTIME_LOCK.name in copied and BUILD_LOCK.name in copied
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {RUNTIME_LOCK.name, BUILD_LOCK.name, "*.lock", "requirements*"} & set(ignored)


def test_builder_findings_refuse_unhashed_and_unlocked_installs():
    def findings(run: str) -> list[str]:
        return builder_findings(Stage("b", None, [("RUN", run)]))

    assert findings("/opt/build/bin/pip install --require-hashes -r requirements.lock") == []
    assert findings("pip --python /v/bin/python install --no-deps --no-index /wheels/x.whl && pip check") == []
    assert findings("pip install -r requirements.lock")
    assert findings("python -m pip install --require-hashes -r requirements.txt")
    assert findings("true && pip install fastapi")
    assert findings("pip wheel --wheel-dir /w .")  # build isolation fetches setuptools unhashed
    assert findings("pip --python /v/bin/python install --no-deps fastapi")


def test_the_runtime_stage_has_no_pip_and_installs_nothing():
    _, runtime = service()
    assert runtime_findings(runtime) == []
    env = " ".join(args for keyword, args in runtime.instructions if keyword == "ENV")
    assert "PATH=/opt/venv/bin:$PATH" in env
    assert ("ENTRYPOINT", '["cds-service"]') in runtime.instructions  # /opt/venv/bin/cds-service


def test_runtime_findings_refuse_an_installer_left_behind():
    fine = [
        (
            "RUN",
            "python -m pip uninstall --yes pip && rm -rf /usr/local/lib/python3.11/ensurepip"
            ' && ! python -c "import pip"',
        ),
        ("COPY", "--from=builder /opt/venv /opt/venv"),
    ]
    assert runtime_findings(Stage("p", None, fine)) == []
    assert runtime_findings(Stage("p", None, [*fine, ("RUN", "pip install --no-index x")]))
    assert runtime_findings(Stage("p", None, [*fine, ("RUN", "apt-get install -y gcc")]))
    assert runtime_findings(Stage("p", None, [*fine, ("COPY", ". /src")]))
    assert runtime_findings(Stage("p", None, fine[1:]))


# ---------------------------------------------------------------- the locks


def test_the_runtime_lock_pins_and_hashes_every_dependency():
    pins = read_lock(RUNTIME_LOCK.read_text())
    dependencies = pyproject()["project"]["dependencies"]
    assert coverage_findings(dependencies, pins, extras_from_metadata=True) == []
    assert all(pin.hashes for pin in pins.values())
    assert len(pins) > len(dependencies)  # and what they depend on
    train_or_test = {
        canonicalize_name(Requirement(line).name)
        for extra in ("train", "test")
        for line in pyproject()["project"]["optional-dependencies"][extra]
    }
    direct = {canonicalize_name(Requirement(line).name) for line in dependencies}
    assert not (train_or_test - direct) & set(pins), "training or test packages in the service image"


def test_the_extras_the_service_asks_for_are_locked_too():
    pins = read_lock(RUNTIME_LOCK.read_text())
    with_extras = [line for line in pyproject()["project"]["dependencies"] if Requirement(line).extras]
    assert with_extras
    for line in with_extras:
        requirement = Requirement(line)
        for extra in requirement.extras:
            added = extra_requirements(requirement.name, extra)
            assert added, f"{requirement.name}[{extra}] adds nothing on the image's platform?"
            assert {canonicalize_name(r.name) for r in added} <= set(pins), line


def test_the_build_lock_pins_the_build_requirements_consistently_with_the_runtime_lock():
    build, runtime = read_lock(BUILD_LOCK.read_text()), read_lock(RUNTIME_LOCK.read_text())
    assert coverage_findings(pyproject()["build-system"]["requires"], build, extras_from_metadata=False) == []
    assert {"grpcio-tools", "setuptools", "wheel", "protobuf"} <= set(build)
    shared = set(build) & set(runtime)
    assert {"protobuf", "grpcio"} <= shared
    assert {name: build[name].version for name in shared} == {name: runtime[name].version for name in shared}


def test_a_dependency_added_or_raised_without_relocking_is_caught():
    pins = read_lock(RUNTIME_LOCK.read_text())
    dependencies = pyproject()["project"]["dependencies"]
    fastapi = pins["fastapi"].version
    assert coverage_findings([*dependencies, "flask>=3"], pins, extras_from_metadata=False) == [
        "flask is not in the lock"
    ]
    assert coverage_findings([f"fastapi>{fastapi}"], pins, extras_from_metadata=False) == [
        f"fastapi=={fastapi} does not satisfy 'fastapi>{fastapi}'"
    ]
    assert coverage_findings(["pywin32>=300; sys_platform == 'win32'"], pins, extras_from_metadata=False) == []
    unhashed = {**pins, "fastapi": Pin(fastapi, ())}
    assert coverage_findings(["fastapi"], unhashed, extras_from_metadata=False) == ["fastapi has no hash"]


def test_read_lock_refuses_loose_or_unhashed_lines():
    digest = "0" * 64
    assert read_lock(f"a==1 \\\n    --hash=sha256:{digest}\n    # via b\n") == {"a": Pin("1", (digest,))}
    for text in ("a>=1\n", f"a==1 --hash=md5:{digest[:32]}\n", "-e .\n", f"a==1 --hash=sha256:{digest}\nA==2\n"):
        with pytest.raises(AssertionError):
            read_lock(text)


def test_the_locks_name_the_command_that_regenerates_them():
    for lock in (RUNTIME_LOCK, BUILD_LOCK):
        assert "#    sh docker/lock-requirements.sh\n" in lock.read_text()[:200], lock.name
    script = LOCK_SCRIPT.read_text()
    assert re.search(r"^UV_VERSION=\d+\.\d+\.\d+$", script, re.M)  # the resolver is pinned too
    assert "--generate-hashes" in script
    subprocess.run(["sh", "-n", str(LOCK_SCRIPT)], check=True)
