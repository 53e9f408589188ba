from pathlib import Path

from cds_service.inference.triton_server import (
    count_twins,
    latest_model_file,
    model_versions,
    prepare_repository,
    read_model_config,
    to_python_backend,
)

REPO = Path(__file__).resolve().parents[2] / "model_repository"


def test_python_backend_twin_keeps_name_tensors_and_parameters():
    config = read_model_config(REPO / "hip_analysis" / "config.pbtxt")
    assert config.platform == "ensemble"
    for name in ("fracture", "garden"):
        path = REPO / name / "config.pbtxt"
        if not path.exists():
            continue
        production = read_model_config(path)
        cpu = to_python_backend(production)
        assert cpu.backend == "python" and not cpu.platform
        assert cpu.name == production.name
        assert list(cpu.input) == list(production.input) and list(cpu.output) == list(production.output)
        assert dict(cpu.parameters) == dict(production.parameters)
        assert not cpu.HasField("optimization")


def test_prepare_repository_writes_a_runnable_copy(tmp_path):
    names = prepare_repository(REPO, tmp_path / "repo")
    assert "hip_analysis" in names
    for name in names:
        config = read_model_config(tmp_path / "repo" / name / "config.pbtxt")
        if config.backend == "python":
            assert latest_model_file(tmp_path / "repo", name, "model.py").exists()
            assert latest_model_file(tmp_path / "repo", name).exists()
            assert model_versions(tmp_path / "repo", name) == model_versions(REPO, name)
    twins = [name for name in names if read_model_config(tmp_path / "repo" / name / "config.pbtxt").backend == "python"]
    assert count_twins(tmp_path / "repo") == len(twins)  # the launcher splits the cores between them
