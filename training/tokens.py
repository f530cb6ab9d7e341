"""The MathCoder block markers in one place.

MathCoder renders a conversation as role markers (``<|system|>``, ``<|user|>``, ``<|assistant|>``)
followed by blocks (``<|text|>``, ``<|code|>``, ``<|execution|>``), each closed by
``<|endofblock|>``; a message ends with ``<|endofmessage|>``. The markers themselves are defined once,
by the loop's renderer (:mod:`mathagent.agent.formats.mathcoder`), so training and inference agree.
"""

from __future__ import annotations

from mathagent.agent.formats.mathcoder import (
    ASSISTANT,
    CODE,
    END_BLOCK,
    END_MESSAGE,
    EXECUTION,
    SYSTEM,
    TEXT,
    USER,
)

__all__ = [
    "ASSISTANT",
    "CODE",
    "END_BLOCK",
    "END_MESSAGE",
    "EXECUTION",
    "MATHCODER_STOP",
    "SPECIAL_TOKENS",
    "SYSTEM",
    "TEXT",
    "USER",
]

SPECIAL_TOKENS: tuple[str, ...] = (SYSTEM, USER, ASSISTANT, TEXT, CODE, EXECUTION, END_BLOCK, END_MESSAGE)
"""Added to a tokenizer as additional special tokens before MathCoder-format training."""

MATHCODER_STOP: tuple[str, ...] = (END_BLOCK, END_MESSAGE)
"""Stop strings the agent uses with a MathCoder-format model: it halts after every block, runs the
code when the block was a code block, and feeds ``<|execution|>…<|endofblock|>`` back."""
