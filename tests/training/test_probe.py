"""The format probe's verdict on generated MathCoder text (a table), and the prompt it renders."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from mathagent.agent.formats.mathcoder import MathCoderFormat  # noqa: E402
from mathagent.training.probe import mathcoder_prompt, writes_code_block  # noqa: E402


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("<|text|>Let me compute.<|endofblock|><|code|>print(6 + 7)<|endofblock|>", True),
        ("<|code|>\nx = 6 + 7\nprint(x)\n<|endofblock|><|execution|>13", True),
        ("The answer is 13.", False),  # plain text, no markers (the flaky run's output)
        ("<|text|>Let me compute.<|endofblock|><|code|>print(6 + 7)", False),  # never closed
        ("<|code|>print(6 +<|endofblock|>", False),  # does not compile
        ("<|code|><|endofblock|>", False),  # empty
        ("<|execution|>13<|endofblock|><|code|>print(1)<|endofblock|>", False),  # execution written first
        ("<|code|>print(1)<|text|>x<|endofblock|>", False),  # another marker inside the block
    ],
)
def test_writes_code_block(text, ok):
    assert writes_code_block(text) is ok


def test_probe_prompt_is_the_agents_prompt():
    system = "Below is a math problem."
    assert mathcoder_prompt("What is 6 + 7?", system) == MathCoderFormat().build_prompt(
        "What is 6 + 7?", [], system
    )
