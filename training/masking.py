"""Token-level loss masks: which tokens of a training row the model learns to produce.

``mathcoder``: the prompt (system and user messages, and the ``<|assistant|>`` marker) and every
``<|execution|> … <|endofblock|>`` span are masked (label -100); the assistant's text and code blocks are
trained together with their opening markers and their closing ``<|endofblock|>``, and the final
``<|endofmessage|>`` — so the model learns to stop after a code block and wait for its execution.
The text is split at the markers and each run tokenized on its own; the markers are special tokens, so
this gives the same ids as tokenizing the whole text at once.

``chat``: the conversation is rendered with a chat template that carries ``{% generation %}`` markers
(shipped ``templates/chatml_tools.jinja`` for ChatML families whose own template lacks them, such as
SmolLM2 and Qwen2.5); transformers returns the assistant-token mask and assistant turns (text, tool
calls, closing ``<|im_end|>``) are trained; system, user and tool turns are masked.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from mathagent.training import tokens as T

log = logging.getLogger(__name__)

IGNORE = -100


@dataclass(frozen=True)
class Span:
    """A run of text and whether the model is trained to produce it."""

    text: str
    trained: bool


def load_template(name: str = "chatml_tools") -> str:
    """A shipped chat template (``training/templates/<name>.jinja``)."""
    return resources.files("mathagent.training").joinpath("templates", f"{name}.jinja").read_text("utf-8")


def mathcoder_spans(text: str) -> list[Span]:
    """Split MathCoder text into trained / masked spans (adjacent spans with the same flag merged)."""
    markers = (T.SYSTEM, T.USER, T.ASSISTANT, T.TEXT, T.CODE, T.EXECUTION, T.END_BLOCK, T.END_MESSAGE)
    pattern = "(" + "|".join(re.escape(m) for m in markers) + ")"
    role: str | None = None
    block: str | None = None
    spans: list[Span] = []
    for piece in re.split(pattern, text):
        if not piece:
            continue
        in_assistant = role == T.ASSISTANT
        if piece in (T.SYSTEM, T.USER, T.ASSISTANT):
            role, block, trained = piece, None, False
        elif piece in (T.TEXT, T.CODE):
            block, trained = piece, in_assistant
        elif piece == T.EXECUTION:
            block, trained = piece, False
        elif piece == T.END_BLOCK:
            trained = in_assistant and block in (T.TEXT, T.CODE)
            block = None
        elif piece == T.END_MESSAGE:
            trained, role, block = in_assistant, None, None
        else:
            trained = in_assistant and block in (T.TEXT, T.CODE)
        if spans and spans[-1].trained == trained:
            spans[-1] = Span(spans[-1].text + piece, trained)
        else:
            spans.append(Span(piece, trained))
    return spans


def tokenize_mathcoder(text: str, tokenizer: Any, max_length: int | None = None) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` for one MathCoder conversation (see the module docstring)."""
    input_ids: list[int] = []
    labels: list[int] = []
    for span in mathcoder_spans(text):
        ids = tokenizer(span.text, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if span.trained else [IGNORE] * len(ids)
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "labels": labels}


def ensure_chat_template(tokenizer: Any) -> None:
    """Give the tokenizer a template with ``{% generation %}`` markers, or raise if none fits it."""
    current = getattr(tokenizer, "chat_template", None)
    if isinstance(current, str) and re.search(r"{%-?\s*generation\s*-?%}", current):
        return
    vocab = tokenizer.get_vocab()
    if "<|im_start|>" in vocab and "<|im_end|>" in vocab:
        log.info("chat template lacks {%% generation %%} markers; using the shipped chatml_tools template")
        tokenizer.chat_template = load_template("chatml_tools")
        return
    raise ValueError(
        "the model's chat template has no {% generation %} markers and is not ChatML; pass a template with "
        "--chat-template FILE (see docs/training.md) or train with --format mathcoder"
    )


def tokenize_chat(
    messages: list[dict[str, Any]],
    tokenizer: Any,
    tools: list[dict[str, Any]] | None = None,
    max_length: int | None = None,
) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` for one tool-calling conversation: assistant turns trained, rest masked."""
    out = tokenizer.apply_chat_template(
        _clean_messages(messages),
        tools=tools or None,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    input_ids = list(out["input_ids"])
    mask = list(out["assistant_masks"])
    labels = [i if m else IGNORE for i, m in zip(input_ids, mask, strict=True)]
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "labels": labels}


def _clean_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop the ``None`` fields that Arrow adds when rows with different keys share a column."""
    return [{k: v for k, v in m.items() if v is not None} for m in messages]


def add_mathcoder_tokens(tokenizer: Any) -> int:
    """Add the MathCoder markers as special tokens; returns how many were new."""
    missing = [t for t in T.SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    if not missing:
        return 0
    return int(tokenizer.add_special_tokens({"additional_special_tokens": list(missing)}))
