"""The MathCoder block markers in one place.

MathCoder renders a conversation as role markers (``<|system|>``, ``<|user|>``, ``<|assistant|>``)
followed by blocks (``<|text|>``, ``<|code|>``, ``<|execution|>``), each closed by
``<|endofblock|>``; a message ends with ``<|endofmessage|>``. When ``mathagent.agent.formats.mathcoder``
(the loop's renderer) is importable, its constants win, so training and inference always agree.
"""

from __future__ import annotations

SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
TEXT = "<|text|>"
CODE = "<|code|>"
EXECUTION = "<|execution|>"
END_BLOCK = "<|endofblock|>"
END_MESSAGE = "<|endofmessage|>"


def _from_formats() -> None:
    """Adopt the loop's spelling of the markers where that module defines them."""
    try:
        from mathagent.agent.formats import mathcoder as formats
    except Exception:  # not written yet, or an optional dependency is missing
        return
    g = globals()
    for name in ("SYSTEM", "USER", "ASSISTANT", "TEXT", "CODE", "EXECUTION", "END_BLOCK", "END_MESSAGE"):
        value = getattr(formats, name, None)
        if isinstance(value, str) and value:
            g[name] = value


_from_formats()

SPECIAL_TOKENS: tuple[str, ...] = (SYSTEM, USER, ASSISTANT, TEXT, CODE, EXECUTION, END_BLOCK, END_MESSAGE)
"""Added to a tokenizer as additional special tokens before MathCoder-format training."""

MATHCODER_STOP: tuple[str, ...] = (END_BLOCK, END_MESSAGE)
"""Stop strings the agent uses with a MathCoder-format model: it halts after every block, runs the
code when the block was a code block, and feeds ``<|execution|>…<|endofblock|>`` back."""

DEFAULT_SYSTEM = "Below is a math problem. Please solve it step by step, using Python code where it helps."
