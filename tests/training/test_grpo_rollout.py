"""GRPO rollouts on real kernels: rewards from the grader, and masks that exclude execution tokens.

The policy here is scripted (given texts, tokenized with SmolLM2's real tokenizer) so that each case is
exact; the code in it really runs in the sandbox, and the masks are checked by decoding the trained and
masked token spans, as ``test_masking.py`` does for SFT. ``test_grpo.py`` runs the real model.
"""

from __future__ import annotations

import pytest
from mathagent.training.rewards import ROLLOUT_COLUMN, reward_functions
from mathagent.training.rollout import (
    Generated,
    RolloutConfig,
    ScriptedGenerator,
    cut,
    run_rollouts,
    stop_rule,
)

EOS = "<|im_end|>"


@pytest.mark.parametrize(
    ("fmt", "text", "stops"),
    [
        ("markdown", "Let me compute.", False),
        ("markdown", "```python\nprint(1)", False),
        ("markdown", "```python\nprint(1)\n```", True),
        ("markdown", "prose ```python\nx = 1\nprint(x)\n```\nmore", True),
        ("markdown", "I claim:\n```output", True),  # the agent's stop string
        ("markdown", "```\nnot python\n```", False),  # a fence that opens no python block
        ("mathcoder", "<|text|>hello", False),
        ("mathcoder", "<|code|>print(1)<|endofblock|>", True),
        ("mathcoder", "<|text|>done<|endofmessage|>", True),
    ],
)
def test_stop_rules(fmt, text, stops):
    assert stop_rule(fmt)(text) is stops


def test_cut_keeps_the_shortest_prefix_that_ends_the_call(smol_tokenizer):
    tok = smol_tokenizer
    eos = {tok.eos_token_id}

    def decode(ids):
        return tok.decode([t for t in ids if t not in eos])

    ids = tok("```python\nprint(6*7)\n```\nThe answer is 42.", add_special_tokens=False)["input_ids"]
    g = cut(ids, decode, stop_rule("markdown"), eos)
    assert g.finish == "stop" and decode(g.ids).rstrip("\n") == "```python\nprint(6*7)\n```"
    ids = tok("All done." + EOS + "junk", add_special_tokens=False)["input_ids"]
    g = cut(ids, decode, stop_rule("markdown"), eos)
    assert g == Generated(tok("All done." + EOS, add_special_tokens=False)["input_ids"], "eos")
    ids = tok("```python\nprint(1)\n", add_special_tokens=False)["input_ids"]
    assert cut(ids, decode, stop_rule("markdown"), eos).finish == "length"


SCRIPTS = {
    "right": ["I will compute it.\n```python\nprint(6 * 7)\n```", "So the answer is \\boxed{42}." + EOS],
    "wrong": ["```python\nprint(6 + 7)\n```", "The answer is \\boxed{13}." + EOS],
    # claims an output that no execution produced; the answer in it happens to be right
    "fabricated": ["The product is\n```output\n42\n```\nso \\boxed{42}." + EOS],
    "error_then_right": [
        "```python\nprint(6 * seven)\n```",
        "```python\nprint(6 * 7)\n```\n",
        "\\boxed{42}" + EOS,
    ],
    "printed_only": ["```python\nprint(6 * 7)\n```", EOS],  # the last output is the answer
}


@pytest.fixture(scope="module")
def scripted_rollouts(smol_tokenizer):
    from mathagent.sandbox import KernelPool

    pool = KernelPool(size=2, acquire_timeout_s=600)
    try:
        gen = ScriptedGenerator(smol_tokenizer, list(SCRIPTS.values()))
        cfg = RolloutConfig(grading="gsm8k", max_completion_length=256)
        rollouts = run_rollouts(["What is 6 times 7?"] * len(SCRIPTS), gen, smol_tokenizer, pool, cfg)
    finally:
        pool.close()
    return dict(zip(SCRIPTS, rollouts, strict=True))


def _rewards(rollouts, gold="42"):
    funcs = reward_functions("gsm8k")
    names = list(rollouts)
    kw = {ROLLOUT_COLUMN: [rollouts[n].record() for n in names], "gold": [gold] * len(names)}
    prompts = [rollouts[n].problem for n in names]
    return {f.__name__: dict(zip(names, f(prompts, [""] * len(names), **kw), strict=True)) for f in funcs}


@pytest.mark.kernel
def test_rewards_right_wrong_fabricated(scripted_rollouts):
    r = _rewards(scripted_rollouts)
    assert r["correct"] == {
        "right": 1.0,
        "wrong": 0.0,
        "fabricated": 0.0,
        "error_then_right": 1.0,
        "printed_only": 1.0,
    }
    assert r["fabricated"]["fabricated"] == -1.0 and r["fabricated"]["right"] == 0.0
    assert r["format"]["right"] == 1.0 and r["format"]["fabricated"] == 0.0
    assert r["exec_error"]["error_then_right"] == -0.5 and r["exec_error"]["right"] == 0.0
    right = scripted_rollouts["right"]
    assert right.executions == 1 and right.steps[-2].execution.stdout == "42\n"  # it really ran
    first = next(s for s in scripted_rollouts["error_then_right"].steps if s.execution is not None)
    assert first.execution.error.ename == "NameError"


@pytest.mark.kernel
def test_masks_exclude_execution_tokens(scripted_rollouts, smol_tokenizer):
    right = scripted_rollouts["right"]
    assert len(right.completion_ids) == len(right.env_mask)
    spans = right.spans(smol_tokenizer)
    assert [trained for _, trained in spans] == [True, False, True]
    assert spans[0][0] == "I will compute it.\n```python\nprint(6 * 7)\n```"
    assert spans[1][0] == "\n```output\n42\n```\n"  # what the sandbox printed: never trained on
    assert spans[2][0] == "So the answer is \\boxed{42}." + EOS
    two = scripted_rollouts["error_then_right"].spans(smol_tokenizer)
    masked = [t for t, trained in two if not trained]
    assert len(masked) == 2 and "NameError" in masked[0] and masked[1].strip() == "```output\n42\n```"
    assert all("```output" not in t for t, trained in two if trained)
    # the trained and masked spans are exactly the completion, in order
    assert "".join(t for t, _ in two) == smol_tokenizer.decode(
        scripted_rollouts["error_then_right"].completion_ids
    )


@pytest.mark.kernel
def test_fabricated_output_ends_the_rollout_without_running(scripted_rollouts):
    fab = scripted_rollouts["fabricated"]
    assert fab.fabricated and fab.executions == 0 and fab.answer is None
    assert all(fab.env_mask)  # no execution block was appended


def test_bad_rollout_config_is_a_clear_error():
    with pytest.raises(ValueError, match="not supported"):
        RolloutConfig(format="tools")


class _FirstCallScripted:
    """The first call of each rollout is given (a code block); every later call is the real model."""

    def __init__(self, real, tokenizer, first: str):
        self.real, self.first, self.seen = (
            real,
            tokenizer(first, add_special_tokens=False)["input_ids"],
            set(),
        )
        self.decode = real.decode

    def generate(self, contexts, max_new, stop, rows=()):
        out = [None] * len(contexts)
        todo = [i for i, r in enumerate(rows) if r in self.seen]
        for i, r in enumerate(rows):
            if r not in self.seen:
                self.seen.add(r)
                out[i] = cut(self.first[: max_new[i]], self.decode, stop, self.real.eos)
        outs = self.real.generate([contexts[i] for i in todo], [max_new[i] for i in todo], stop)
        for i, g in zip(todo, outs, strict=True):
            out[i] = g
        return out


@pytest.mark.kernel
@pytest.mark.model
def test_real_model_continues_after_real_execution(smol_dir, smol_tokenizer):
    """SmolLM2 (which never writes code on its own) continues a rollout after a real execution: its own
    tokens are trained, the sandbox's output block is masked, and TRL-style shapes line up."""
    import torch
    from mathagent.sandbox import KernelPool
    from mathagent.training.rollout import HFGenerator
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_pretrained(smol_dir)
    real = HFGenerator(lm, smol_tokenizer, eos_ids=[smol_tokenizer.eos_token_id])
    gen = _FirstCallScripted(real, smol_tokenizer, "```python\nprint(17 * 3)\n```")
    pool = KernelPool(size=1, acquire_timeout_s=600)
    try:
        cfg = RolloutConfig(grading="gsm8k", max_completion_length=40)
        (r,) = run_rollouts(["What is 17 times 3?"], gen, smol_tokenizer, pool, cfg)
    finally:
        pool.close()
    assert r.executions == 1 and r.steps[1].execution.stdout == "51\n"
    spans = r.spans(smol_tokenizer)
    assert [t for t, trained in spans if not trained] == ["\n```output\n51\n```\n"]
    assert spans[0] == ("```python\nprint(17 * 3)\n```", True)
    model_part = spans[-1]
    assert model_part[1] is True and len(spans) == 3  # what the model wrote after the output: trained
    last_masked = max(i for i, m in enumerate(r.env_mask) if m == 0)
    assert last_masked < len(r.env_mask) - 1 and all(r.env_mask[last_masked + 1 :])
    assert len(r.completion_ids) <= 40 and len(r.env_mask) == len(r.completion_ids)
