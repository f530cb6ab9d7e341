"""mathagent.json: one record, written and read the same way."""

from __future__ import annotations

import json

import pytest
from mathagent.agent.backends.transformers_backend import TransformersBackend
from mathagent.agent.manifest import MANIFEST, ModelManifest


def test_round_trip_and_file_layout(tmp_path):
    m = ModelManifest(
        "mathcoder",
        ("<|endofblock|>", "<|endofmessage|>"),
        base_model="smollm2-135m",
        training_format="mathcoder",
    )
    path = m.write(tmp_path)
    assert path == tmp_path / MANIFEST
    data = json.loads(path.read_text())
    assert data == {
        "format": "mathcoder",
        "stop": ["<|endofblock|>", "<|endofmessage|>"],
        "base_model": "smollm2-135m",
        "training_format": "mathcoder",
        "schema_version": 1,
    }
    assert ModelManifest.read(tmp_path) == m


def test_missing_broken_or_formatless_manifest_reads_as_none(tmp_path):
    assert ModelManifest.read(tmp_path) is None
    (tmp_path / MANIFEST).write_text("{not json")
    assert ModelManifest.read(tmp_path) is None
    (tmp_path / MANIFEST).write_text(json.dumps({"trace_format": "tools"}))
    assert ModelManifest.read(tmp_path) is None
    with pytest.raises(ValueError, match="format"):
        ModelManifest.from_dict({"stop": []})


def test_newer_keys_are_ignored(tmp_path):
    (tmp_path / MANIFEST).write_text(
        json.dumps({"format": "tools", "stop": None, "schema_version": 2, "new": 1})
    )
    m = ModelManifest.read(tmp_path)
    assert m is not None and (m.format, m.stop, m.schema_version) == ("tools", (), 2)


def test_transformers_backend_takes_its_format_from_the_manifest(tmp_path):
    # Construction reads only the manifest; weights load on first use, so an empty folder will do.
    ModelManifest("mathcoder").write(tmp_path)
    assert TransformersBackend(tmp_path).default_format == "mathcoder"
    assert TransformersBackend(tmp_path, default_format="tools").default_format == "tools"
    (tmp_path / MANIFEST).unlink()
    assert TransformersBackend(tmp_path).default_format == "markdown"
