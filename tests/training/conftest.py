"""Fixtures for the training tests: the real SmolLM2-135M model as a plain directory, hand-made traces."""

from __future__ import annotations

from pathlib import Path

import pytest
from mathagent.agent.trace import Step, StepKind, Trace, VerificationRound, VerificationState
from mathagent.sandbox.base import ExecResult


def make_trace(a: int, b: int, **kw) -> Trace:
    """A tiny, well-formed code-interpreter trace for ``a + b``."""
    return Trace(
        problem=f"What is {a} + {b}?",
        steps=(
            Step(StepKind.TEXT, "Let me compute it with Python."),
            Step(StepKind.CODE, f"print({a} + {b})"),
            Step(StepKind.EXECUTION, f"{a + b}", ExecResult(stdout=f"{a + b}\n")),
            Step(StepKind.TEXT, f"The answer is \\boxed{{{a + b}}}.", phase="solve"),
        ),
        final_answer=str(a + b),
        verification=(VerificationRound(1, VerificationState.TRUE, str(a + b)),),
        model="hand-made",
        problem_id=f"add-{a}-{b}",
        seed=7,
        meta={"source": "unit"},
        **kw,
    )


@pytest.fixture(scope="session")
def traces() -> list[Trace]:
    return [make_trace(a, b) for a, b in [(2, 3), (4, 5), (7, 8), (10, 12), (3, 9), (6, 6), (11, 4), (5, 13)]]


@pytest.fixture(scope="session")
def smol_dir() -> Path:
    """SmolLM2-135M-Instruct as a plain HF directory (converted once from the bundled GGUF, then cached)."""
    from mathagent.training.convert import resolve_model_dir

    try:
        return resolve_model_dir("smollm2-135m")
    except FileNotFoundError as e:
        pytest.skip(f"bundled SmolLM2 not installed: {e}")


@pytest.fixture(scope="session")
def smol_tokenizer(smol_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_dir)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, smol_dir) -> Path:
    """A tiny random Llama with SmolLM2's tokenizer, saved as a plain model directory (a few MB)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    tok = AutoTokenizer.from_pretrained(smol_dir)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out
