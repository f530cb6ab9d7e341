"""`mathagent generate` end to end: scripted backend over GSM8K train problems on the real kernel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mathagent.training.cli_generate import main as generate_main
from mathagent.training.generate import Shard, shard_of

pytestmark = pytest.mark.kernel


def solved(ans: str, code: str | None = None) -> str:
    code = code or f"print({ans})"
    return (
        f"Let me compute.\n```python\n{code}\n```\n```output\n{ans}\n```\nThe answer is $\\boxed{{{ans}}}$."
    )


def gsm8k_train(shared_data: Path, n: int) -> list[dict]:
    path = shared_data / "datasets" / "gsm8k_train.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()[:n]]
    for r in rows:
        r["gold"] = r["answer"].split("####")[-1].strip().replace(",", "")
    return rows


def write_script(path: Path, rows: list[dict], make) -> None:
    with open(path, "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({"problem_id": str(i), **make(i, r["gold"])}) + "\n")


def jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def base_args(shared_data, script, out, n) -> list[str]:
    return [
        "--problems",
        str(shared_data / "datasets" / "gsm8k_train.jsonl"),
        "--limit",
        str(n),
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--out",
        str(out),
        "--concurrency",
        "2",
        "--json",
    ]


def test_generate_filters_exports_and_resume(shared_data, tmp_path, capsys):
    rows = gsm8k_train(shared_data, 6)

    def make(i, gold):
        if i == 1:
            return {"turns": [solved(str(int(gold) + 1))]}  # wrong answer
        if i == 2:
            return {"turns": [f"I know it: $\\boxed{{{gold}}}$."]}  # no code
        if i == 3:  # last cell fails, answer stated anyway
            return {
                "turns": [
                    f"```python\nprint(1/0)\n```\n```output\nZeroDivisionError\n```\nSo the answer is $\\boxed{{{gold}}}$."
                ]
            }
        if i == 4:
            return {"error": "server down (503)"}
        # k=2: both samples right, the second one a different route
        return {"samples": [[solved(gold)], [solved(gold, f"x = {gold}\nprint(x)")]]}

    script, out = tmp_path / "script.jsonl", tmp_path / "gen"
    write_script(script, rows, make)
    assert generate_main([*base_args(shared_data, script, out, 6), "--k", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    d = summary["dataset"]
    assert d["samples"] == 12 and d["problems"] == 6
    assert d["kept"] == 4 and d["problems_kept"] == 2  # problems 0 and 5, two routes each
    assert d["dropped"]["wrong_answer"] == 2 and d["dropped"]["no_code"] == 2
    assert d["dropped"]["unrepaired_error"] == 2 and d["dropped"]["failed"] == 2
    assert sum(d["dropped"].values()) + d["kept"] == d["samples"]
    assert d["rows"] == {"chat": 4, "mathcoder": 4}

    chat = jsonl(out / "data" / "train_chat.jsonl")
    mc = jsonl(out / "data" / "train_mathcoder.jsonl")
    assert [(r["problem_id"], r["sample_index"]) for r in chat] == [
        (r["problem_id"], r["sample_index"]) for r in mc
    ]
    row = chat[0]
    assert row["source"] == "gsm8k" and row["model"] == "scripted" and row["final_answer"] == rows[0]["gold"]
    roles = [m["role"] for m in row["messages"]]
    assert roles[:2] == ["system", "user"] and "tool" in roles and roles[-1] == "assistant"
    tool = next(m for m in row["messages"] if m["role"] == "tool")
    assert tool["content"].strip() == rows[0]["gold"]  # the real kernel's output, not the scripted one
    assert "<|execution|>" in mc[0]["text"] and rows[0]["question"] in mc[0]["text"]
    card = (out / "README.md").read_text()
    assert "| wrong_answer | 2 |" in card and "MIT (c) 2021 OpenAI" in card and "`scripted`" in card

    # the same command again: nothing re-run, nothing counted twice; a backend failure is retried
    write_script(script, rows, lambda i, g: make(0, g) if i == 4 else make(i, g))
    assert generate_main([*base_args(shared_data, script, out, 6), "--k", "2"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["counts"]["ran"] == 2 and again["dataset"]["samples"] == 12
    assert again["dataset"]["kept"] == 6 and again["dataset"]["dropped"]["failed"] == 0
    assert len(jsonl(out / "samples.jsonl")) == 14  # 12 + the 2 retried lines; the latest wins


def test_exports_load_with_datasets_and_trl(shared_data, tmp_path, capsys, smol_tokenizer):
    datasets = pytest.importorskip("datasets")
    from mathagent.training import masking
    from trl.data_utils import is_conversational

    rows = gsm8k_train(shared_data, 3)
    script, out = tmp_path / "script.jsonl", tmp_path / "gen"
    write_script(script, rows, lambda i, g: {"turns": [solved(g)]})
    assert generate_main(base_args(shared_data, script, out, 3)) == 0
    capsys.readouterr()
    chat = datasets.load_dataset("json", data_files=str(out / "data" / "train_chat.jsonl"), split="train")
    mc = datasets.load_dataset("json", data_files=str(out / "data" / "train_mathcoder.jsonl"), split="train")
    assert len(chat) == len(mc) == 3 and "messages" in chat.column_names and "text" in mc.column_names
    # rows are written in the order samples finished (concurrently): find the first problem's row
    row = next(
        r
        for r in chat
        if any("Natalia" in (m["content"] or "") for m in r["messages"] if m["role"] == "user")
    )
    assert is_conversational(row)  # how SFTTrainer decides to apply the chat template
    tok = smol_tokenizer
    masking.ensure_chat_template(tok)
    enc = masking.tokenize_chat(row["messages"], tok, row["tools"], 2048)
    assert len(enc["input_ids"]) == len(enc["labels"]) > 50
    trained = tok.decode([t for t, lab in zip(enc["input_ids"], enc["labels"], strict=True) if lab != -100])
    assert f"print({rows[0]['gold']})" in trained  # the model's code is trained on
    assert "Natalia" not in trained  # the problem (user turn) is not


def test_kill_mid_run_and_resume(shared_data, tmp_path):
    n = 10
    rows = gsm8k_train(shared_data, n)
    script, out = tmp_path / "script.jsonl", tmp_path / "gen"
    write_script(script, rows, lambda i, g: {"turns": [solved(g)], "latency_s": 0.4})
    args = base_args(shared_data, script, out, n)
    env = {**os.environ, "MATHAGENT_LOG_LEVEL": "ERROR"}
    cmd = [sys.executable, "-m", "mathagent.agent.cli", "generate", *args]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    samples = out / "samples.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not samples.exists() or len(samples.read_text().splitlines()) < 3):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(jsonl(samples))
    assert 3 <= done < n and not (out / "data").exists()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["counts"]["skipped"] == done and summary["counts"]["ran"] == n - done
    assert summary["dataset"]["samples"] == n and summary["dataset"]["kept"] == n
    assert len(jsonl(samples)) == n and len(jsonl(out / "data" / "train_chat.jsonl")) == n


def test_shards_are_stable_and_cover_everything():
    ids = [str(i) for i in range(200)]
    parts = [[i for i in ids if Shard(k, 3).holds(i)] for k in range(3)]
    assert sorted(sum(parts, [])) == sorted(ids) and all(len(p) > 40 for p in parts)
    assert shard_of("42", 3) == shard_of("42", 3) and Shard(shard_of("42", 3), 3).holds("42")
    assert Shard.parse("2/4") == Shard(2, 4) and str(Shard(2, 4)) == "2/4"
    with pytest.raises(ValueError):
        Shard.parse("4/4")
