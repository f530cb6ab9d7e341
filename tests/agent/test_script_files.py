"""One decoder for scripted turns and one cache folder, shared by every command that uses them."""

from __future__ import annotations

import asyncio
import json

import pytest
from mathagent.agent import models
from mathagent.agent.backends.base import Completion, GenerationParams
from mathagent.agent.backends.scripted import ScriptBook, decode_turn, load_script, script_backend
from mathagent.agent.backends.transformers_backend import hf_cache_dir
from mathagent.agent.cache import cache_dir
from mathagent.agent.repl.settings import history_path
from mathagent.evals import hub
from mathagent.training.convert import default_cache

TOOL_TURN = {"text": "let me run it", "tool_calls": [{"name": "python", "arguments": '{"code": "1"}'}]}


def test_decode_turn_reads_strings_and_objects():
    assert decode_turn("plain") == "plain"
    c = decode_turn(TOOL_TURN)
    assert isinstance(c, Completion) and c.text == "let me run it" and c.finish_reason == "stop"
    assert [(t.id, t.name, t.arguments) for t in c.tool_calls] == [("call_0", "python", '{"code": "1"}')]
    with pytest.raises(ValueError, match="string or an object"):
        decode_turn(3)


def test_list_and_object_script_files_give_the_same_turns(tmp_path):
    as_list = tmp_path / "a.json"
    as_list.write_text(json.dumps(["a", TOOL_TURN]))
    as_obj = tmp_path / "b.json"
    as_obj.write_text(json.dumps({"turns": ["a", TOOL_TURN], "default_format": "tools", "model": "m"}))
    assert load_script(as_list)["turns"] == load_script(as_obj)["turns"]
    b = script_backend(as_obj)
    assert (b.model, b.default_format) == ("m", "tools")
    assert script_backend(as_obj, default_format="markdown").default_format == "markdown"
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"no": "turns"}))
    with pytest.raises(ValueError, match="turns"):
        load_script(bad)


def test_eval_script_books_take_object_turns_too(tmp_path):
    path = tmp_path / "book.jsonl"
    path.write_text(json.dumps({"problem_id": "p1", "turns": [TOOL_TURN]}) + "\n")
    backend = ScriptBook(str(path)).backend("p1", "tools")
    out = asyncio.run(backend.generate("prompt", GenerationParams()))
    assert out[0].tool_calls[0].arguments == '{"code": "1"}'


def test_one_cache_folder_for_everything(tmp_path, monkeypatch):
    monkeypatch.setenv("MATHAGENT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MATHAGENT_CACHE", raising=False)
    monkeypatch.delenv("MATHAGENT_REPL_HISTORY", raising=False)
    assert cache_dir() == tmp_path
    assert models.cache_dir() == tmp_path / "models"
    assert hf_cache_dir() == default_cache() == tmp_path / "hf"
    assert hub.cache_dir() == tmp_path / "datasets"
    assert history_path() == tmp_path / "repl_history"
    monkeypatch.delenv("MATHAGENT_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir("x") == tmp_path / "home" / ".cache" / "mathagent" / "x"
