"""``train grpo --vllm colocate|server``: the flags reach ``GRPOConfig`` as TRL reads them, a missing
vLLM is a clear error before anything loads, and :class:`~mathagent.training.rollout.VLLMGenerator`
(the rollout's generator on TRL's vLLM backend) keeps the sampled tokens and cuts them by the format's
stop rule, checked with scripted engines that answer like ``vllm.LLM`` / TRL's ``VLLMClient`` (vLLM
itself needs a CUDA GPU and is not installed here)."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
from mathagent.training.cli_grpo import config_from_args
from mathagent.training.grpo import GRPORunConfig, vllm_config
from mathagent.training.rollout import RolloutConfig, VLLMGenerator, run_rollouts, stop_rule

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _cfg(*flags: str) -> GRPORunConfig:
    import argparse

    from mathagent.training.cli_grpo import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="cmd"))
    return config_from_args(parser.parse_args(["grpo", "--data", "d", "--model", "m", "--out", "o", *flags]))


def _grpo_config(**fields):
    from trl import GRPOConfig

    return GRPOConfig(output_dir="unused", use_cpu=True, report_to=[], **fields)


def test_vllm_server_flags_reach_grpo_config():
    cfg = _cfg("--vllm", "server", "--vllm-server-host", "10.0.0.7", "--vllm-server-port", "8123",
               "--vllm-server-timeout", "60")  # fmt: skip
    args = _grpo_config(**vllm_config(cfg, check_installed=False))
    assert args.use_vllm and args.vllm_mode == "server"
    assert (args.vllm_server_host, args.vllm_server_port, args.vllm_server_timeout) == (
        "10.0.0.7",
        8123,
        60.0,
    )
    assert args.vllm_server_base_url is None
    assert args.vllm_importance_sampling_correction is False  # the rollout returns no sampling log-probs
    url = _cfg("--vllm", "server", "--vllm-server-base-url", "http://gpu0:8000")
    assert _grpo_config(**vllm_config(url, check_installed=False)).vllm_server_base_url == "http://gpu0:8000"


def test_vllm_colocate_flags_reach_grpo_config():
    cfg = _cfg(
        "--vllm", "colocate", "--vllm-gpu-memory-utilization", "0.45", "--vllm-max-model-length", "4096"
    )
    args = _grpo_config(**vllm_config(cfg, check_installed=False))
    assert args.use_vllm and args.vllm_mode == "colocate"
    assert args.vllm_gpu_memory_utilization == 0.45 and args.vllm_max_model_length == 4096
    assert args.vllm_tensor_parallel_size == 1
    assert vllm_config(_cfg(), check_installed=False) == {}  # no --vllm: transformers generates
    assert _grpo_config(**vllm_config(_cfg())).use_vllm is False


def test_unsupported_vllm_settings_are_clear_errors():
    with pytest.raises(ValueError, match="tensor-parallel"):
        vllm_config(_cfg("--vllm", "colocate", "--vllm-tensor-parallel-size", "2"), check_installed=False)
    with pytest.raises(ValueError, match="colocate, server"):
        vllm_config(GRPORunConfig(data="d", model="m", out="o", vllm="remote"), check_installed=False)


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_missing_vllm_stops_before_anything_loads(tmp_path, capsys):
    from mathagent.training.cli_train import main

    out = tmp_path / "o"
    rc = main(["grpo", "--data", str(tmp_path / "nothing.jsonl"), "--model", "not-a-model", "--out", str(out),
               "--vllm", "server"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "vllm package is not installed" in err and "trl[vllm]" in err
    assert not out.exists()  # stopped before the data, the model, the kernels


# -- the generator, with engines scripted to answer as vLLM does -----------------------------------


class ScriptedLLM:
    """Answers ``generate(prompts, sampling_params=..., use_tqdm=False)`` like ``vllm.LLM``: one request
    per prompt, ``outputs[0].token_ids`` the sampled ids (here: the scripted text, up to ``max_tokens``)."""

    def __init__(self, tokenizer, texts):
        self.tokenizer, self.texts, self.calls = tokenizer, list(texts), []

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append((prompts, sampling_params))
        outs = []
        for _prompt, params in zip(prompts, sampling_params, strict=True):
            ids = self.tokenizer(self.texts.pop(0), add_special_tokens=False)["input_ids"][
                : params["max_tokens"]
            ]
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=tuple(ids))]))
        return outs


class ScriptedClient:
    """Answers ``generate(prompts=..., n=..., max_tokens=..., generation_kwargs=...)`` like TRL's
    ``VLLMClient`` (``{"completion_ids": [...]}``)."""

    def __init__(self, tokenizer, texts):
        self.tokenizer, self.texts, self.calls = tokenizer, list(texts), []

    def generate(self, prompts, n=1, max_tokens=16, generation_kwargs=None, **sampling):
        self.calls.append(
            {"prompts": prompts, "n": n, "max_tokens": max_tokens, "gk": generation_kwargs, **sampling}
        )
        ids = [
            self.tokenizer(self.texts.pop(0), add_special_tokens=False)["input_ids"][:max_tokens]
            for _ in prompts
        ]
        return {"prompt_ids": prompts, "completion_ids": ids}


def test_vllm_generator_colocate_cuts_at_the_closed_code_block(smol_tokenizer):
    tok = smol_tokenizer
    text = "Compute it.\n```python\nprint(6 * 7)\n```\nAnd then more text the rule cuts away."
    llm = ScriptedLLM(tok, [text, "short" + tok.eos_token])
    gen = VLLMGenerator(llm, "colocate", tok, [tok.eos_token_id], "markdown", {"temperature": 0.7},
                        sampling_params=lambda **kw: kw)  # fmt: skip
    ctx = [[1, 2, 3], [4, 5]]
    a, b = gen.generate(ctx, [64, 10], stop_rule("markdown"), [0, 1])
    prompts, params = llm.calls[0]
    assert prompts == [{"prompt_token_ids": [1, 2, 3]}, {"prompt_token_ids": [4, 5]}]
    assert [p["max_tokens"] for p in params] == [64, 10]  # each context its own budget
    assert params[0]["stop"] == ["```output"] and params[0]["include_stop_str_in_output"] is True
    assert params[0]["temperature"] == 0.7 and params[0]["n"] == 1
    assert a.finish == "stop" and tok.decode(a.ids).endswith("print(6 * 7)\n```")
    assert "more text" not in tok.decode(a.ids)
    assert b.finish == "eos" and b.ids[-1] == tok.eos_token_id


def test_vllm_generator_server_sends_token_ids_and_stop_strings(smol_tokenizer):
    tok = smol_tokenizer
    client = ScriptedClient(tok, ["<|code|>print(1)<|endofblock|>", "x" * 80])
    gen = VLLMGenerator(client, "server", tok, [tok.eos_token_id], "mathcoder", {"top_p": 0.9})
    a, b = gen.generate([[7, 8], [9]], [32, 5], stop_rule("mathcoder"), [0, 1])
    call = client.calls[0]
    assert call["prompts"] == [[7, 8], [9]] and call["n"] == 1 and call["top_p"] == 0.9
    assert call["max_tokens"] == 32  # one request; each result is then held to its own budget
    assert call["gk"] == {"stop": ["<|endofblock|>", "<|endofmessage|>"], "include_stop_str_in_output": True}
    assert a.finish == "stop"
    assert b.finish == "length" and len(b.ids) == 5


@pytest.mark.kernel
def test_rollouts_through_the_vllm_generator_run_real_code(smol_tokenizer):
    """The multi-round rollout on the vLLM generator: the code really runs in a sandboxed kernel, the
    output is appended and masked, the answer is graded."""
    from mathagent.sandbox import KernelPool
    from mathagent.training.rewards import score_correct

    tok = smol_tokenizer
    llm = ScriptedLLM(tok, ["```python\nprint(6 * 7)\n```\nignored tail", "So \\boxed{42}." + tok.eos_token])
    gen = VLLMGenerator(llm, "colocate", tok, [tok.eos_token_id], "markdown", sampling_params=lambda **kw: kw)
    pool = KernelPool(size=1, acquire_timeout_s=600)
    try:
        (r,) = run_rollouts(["What is 6 times 7?"], gen, tok, pool, RolloutConfig(grading="gsm8k"))
    finally:
        pool.close()
    assert r.executions == 1 and r.answer == "42" and score_correct(r.record(), "42", "gsm8k") == 1.0
    assert len(llm.calls) == 2  # round 1: the code; round 2: after the output was appended
    second_prompt = llm.calls[1][0][0]["prompt_token_ids"]
    assert "```output\n42" in tok.decode(second_prompt)  # the real execution's output, fed back
    masked = tok.decode([t for t, m in zip(r.completion_ids, r.env_mask, strict=True) if m == 0])
    assert "42" in masked and "print" not in masked
    assert "ignored tail" not in tok.decode(r.completion_ids)


def test_rollout_generator_follows_the_trainers_vllm_backend(smol_tokenizer):
    from mathagent.training.grpo import vllm_generator

    llm = object()
    trainer = SimpleNamespace(
        vllm_generation=SimpleNamespace(mode="colocate", llm=llm),
        temperature=0.8, top_p=0.95, top_k=20, eos_token_ids=[smol_tokenizer.eos_token_id],
    )  # fmt: skip
    gen = vllm_generator(trainer, smol_tokenizer, RolloutConfig(format="mathcoder"))
    assert gen.engine is llm and gen.mode == "colocate"
    assert gen.sampling == {"temperature": 0.8, "top_p": 0.95, "top_k": 20}
    assert gen.stop_strings == ["<|endofblock|>", "<|endofmessage|>"]
