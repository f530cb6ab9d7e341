"""A real generation run: the bundled Qwen2.5-Coder-0.5B behind a llama.cpp server, a handful of problems."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp.server")

pytestmark = [pytest.mark.slow, pytest.mark.model, pytest.mark.server, pytest.mark.kernel]

MODEL = "qwen2.5-coder-0.5b"


@pytest.fixture(scope="module")
def server():
    from mathagent.agent.llama_server import shared_server

    try:
        s = shared_server(MODEL, n_ctx=4096)
    except FileNotFoundError as e:
        pytest.skip(f"bundled model not installed: {e}")
    yield s
    s.stop()
    assert not s.is_running()


def jsonl(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_generate_and_interpolate_on_the_bundled_model(server, shared_data, tmp_path, capsys):
    import datasets
    from mathagent.agent.grading import is_equivalent
    from mathagent.training.cli_generate import main as generate_main

    # at most 4 rounds keeps this real run to minutes on 2 cores (verification is off, generate's default)
    common = ["--backend", "openai", "--model", server.alias, "--base-url", server.base_url, "--json"]
    solve_opts = ["--no-verify", "--max-rounds", "4"]
    train = str(shared_data / "datasets" / "gsm8k_train.jsonl")
    out = tmp_path / "gen"
    argv = [
        "--problems",
        train,
        "--limit",
        "4",
        "--k",
        "1",
        "--out",
        str(out),
        "--concurrency",
        "2",
        *solve_opts,
        *common,
    ]
    assert generate_main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    d = summary["dataset"]
    assert d["samples"] == 4 and sum(d["dropped"].values()) + d["kept"] == 4
    chat = jsonl(out / "data" / "train_chat.jsonl")
    assert len(chat) == d["kept"] == len(jsonl(out / "data" / "train_mathcoder.jsonl"))
    golds = {r["problem_id"]: r["gold"] for r in jsonl(out / "samples.jsonl")}
    for row in chat:  # every kept trace is right and ran code
        assert is_equivalent(row["final_answer"], golds[row["problem_id"]], "gsm8k")
        assert any(m["role"] == "tool" for m in row["messages"])
    if chat:
        assert len(
            datasets.load_dataset("json", data_files=str(out / "data" / "train_chat.jsonl"))["train"]
        ) == len(chat)
    print(f"\nqwen2.5-coder-0.5b, 4 GSM8K train problems: kept {d['kept']}, dropped {d['dropped']}")

    # interpolation: 2 candidates, solved 2 times each, kept when both agree
    hard = tmp_path / "hard.jsonl"
    hard.write_text((shared_data / "datasets" / "math500_test.jsonl").read_text().splitlines()[0] + "\n")
    d1 = tmp_path / "d1"
    # a MATH-500 test row as the hard seed (MATH train is not in the reference data): --allow-test
    argv = [
        "interpolate",
        "--easy",
        train,
        "--hard",
        str(hard),
        "--n",
        "2",
        "--k",
        "2",
        "--agree",
        "2",
        "--allow-test",
    ]
    assert generate_main([*argv, "--out", str(d1), "--concurrency", "2", *solve_opts, *common]) == 0
    stats = json.loads((d1 / "interpolation.json").read_text())
    assert stats["candidates"] == 2 and stats["accepted"] + sum(stats["rejected"].values()) == 2
    for p in jsonl(d1 / "problems.jsonl"):
        assert p["max_test_jaccard"] < 0.5 and len(p["question"].split()) >= 8
    print(f"interpolation: {json.dumps(stats)}")
