"""Turn traces into training rows: TRL conversational rows (``chat``) or MathCoder text (``mathcoder``).

``chat`` rows follow TRL's tool-calling conversational layout: a ``messages`` column where the model's
text and code are ``assistant`` turns (code as a call of the ``python`` tool with a ``code``
argument), execution results are ``tool`` turns (so assistant-only loss never trains on them), and a
``tools`` column holding the tool's JSON schema. ``mathcoder`` rows hold one whole conversation in a
``text`` column, written with the MathCoder block markers (see :mod:`mathagent.training.tokens`).
Both keep provenance columns (problem id, source, model, verification state, seed...). Files are
JSONL and load with ``datasets.load_dataset("json", data_files=...)``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mathagent.agent.formats.tools import PYTHON_TOOL
from mathagent.agent.prompts import load_prompt
from mathagent.agent.trace import StepKind, Trace
from mathagent.training import tokens as T

log = logging.getLogger(__name__)

FORMATS = ("chat", "mathcoder")

AUTO_SYSTEM = "auto"
"""Use the agent's own system prompt for the format (``agent/prompts/<format>.md``), so a trained model
sees at inference exactly the system message it was trained with."""

_PROMPT_NAME = {"chat": "tools", "mathcoder": "mathcoder"}


def resolve_system(system: str | None, fmt: str) -> str | None:
    """``AUTO_SYSTEM`` → the agent's prompt for ``fmt``; else as given."""
    if system != AUTO_SYSTEM:
        return system
    return load_prompt(_PROMPT_NAME[fmt]).text


def provenance(trace: Trace) -> dict[str, Any]:
    """Columns that say where a row came from; identical for both formats."""
    state = trace.verification_state
    return {
        "problem_id": trace.problem_id,
        "source": str(trace.meta.get("source") or trace.meta.get("dataset") or ""),
        "model": trace.model,
        "trace_format": trace.format,
        "verification": state.value if state is not None else None,
        "final_answer": trace.final_answer,
        "stop_reason": trace.stop_reason.value,
        "sample_index": trace.sample_index,
        "seed": trace.seed,
    }


def trace_to_chat(trace: Trace, system: str | None = AUTO_SYSTEM) -> dict[str, Any]:
    """One TRL conversational row with a python tool: text and code as assistant turns, output as tool turns."""
    messages: list[dict[str, Any]] = []
    system = resolve_system(system, "chat")
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": trace.problem})
    pending_text: list[str] = []
    last_call_id: str | None = None
    n_calls = 0
    for step in trace.steps:
        if step.kind is StepKind.USER:  # a harness turn (e.g. the verification request)
            if pending_text:
                messages.append({"role": "assistant", "content": "\n\n".join(pending_text)})
                pending_text = []
            messages.append({"role": "user", "content": step.content})
        elif step.kind is StepKind.TEXT:
            pending_text.append(step.content)
        elif step.kind is StepKind.CODE:
            last_call_id = f"call_{n_calls}"
            n_calls += 1
            call = {
                "id": last_call_id,
                "type": "function",
                "function": {"name": "python", "arguments": {"code": step.content}},
            }
            messages.append({"role": "assistant", "content": "\n\n".join(pending_text), "tool_calls": [call]})
            pending_text = []
        else:  # EXECUTION
            if pending_text:  # text between code and its output cannot happen in a loop trace; keep it anyway
                messages.append({"role": "assistant", "content": "\n\n".join(pending_text)})
                pending_text = []
            messages.append(
                {
                    "role": "tool",
                    "name": "python",
                    "tool_call_id": last_call_id or "",
                    "content": step.content,
                }
            )
    if pending_text:
        messages.append({"role": "assistant", "content": "\n\n".join(pending_text)})
    return {"messages": messages, "tools": [PYTHON_TOOL], **provenance(trace)}


def render_mathcoder(trace: Trace, system: str | None = AUTO_SYSTEM) -> str:
    """The whole conversation as MathCoder text, ending with ``<|endofmessage|>``."""
    parts: list[str] = []
    system = resolve_system(system, "mathcoder")
    if system:
        parts.append(f"{T.SYSTEM}{T.TEXT}{system}{T.END_BLOCK}{T.END_MESSAGE}")
    parts.append(f"{T.USER}{T.TEXT}{trace.problem}{T.END_BLOCK}{T.END_MESSAGE}")
    parts.append(T.ASSISTANT)
    opener = {StepKind.TEXT: T.TEXT, StepKind.CODE: T.CODE, StepKind.EXECUTION: T.EXECUTION}
    for step in trace.steps:
        if step.kind is StepKind.USER:  # a harness turn mid-conversation: close and reopen the assistant
            parts.append(
                f"{T.END_MESSAGE}{T.USER}{T.TEXT}{step.content}{T.END_BLOCK}{T.END_MESSAGE}{T.ASSISTANT}"
            )
        else:
            parts.append(f"{opener[step.kind]}{step.content}{T.END_BLOCK}")
    parts.append(T.END_MESSAGE)
    return "".join(parts)


def trace_to_mathcoder(trace: Trace, system: str | None = AUTO_SYSTEM) -> dict[str, Any]:
    """One row with the conversation in a ``text`` column."""
    return {"text": render_mathcoder(trace, system), **provenance(trace)}


def trace_to_row(trace: Trace, fmt: str, system: str | None = AUTO_SYSTEM) -> dict[str, Any]:
    if fmt == "chat":
        return trace_to_chat(trace, system)
    if fmt == "mathcoder":
        return trace_to_mathcoder(trace, system)
    raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}")


def row_problem(record: dict[str, Any]) -> str | None:
    """The problem text of an SFT record, found where the converters above put it: a raw trace's
    ``problem``, the first ``user`` message of a ``chat`` row (after the system prompt), the first user
    text block of a ``mathcoder`` row. ``None`` when the record holds none of these."""
    if isinstance(record.get("problem"), str) and "steps" in record:
        return str(record["problem"])
    messages = record.get("messages")
    if isinstance(messages, list):
        user = next((m for m in messages if isinstance(m, dict) and m.get("role") == "user"), None)
        content = user.get("content") if user else None
        if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else None
    text = record.get("text")
    if isinstance(text, str):
        opener = f"{T.USER}{T.TEXT}"
        start = text.find(opener)
        if start < 0:
            return None
        start += len(opener)
        end = text.find(T.END_BLOCK, start)
        return text[start:] if end < 0 else text[start:end]
    return None


def read_traces(path: str | os.PathLike[str]) -> Iterator[Trace]:
    """Traces from a JSONL file (one ``Trace.to_dict()`` a line) or every ``*.jsonl`` in a folder.

    Lines that are not traces (a run header, a torn last line) are skipped with a warning.
    """
    p = Path(path)
    files = sorted(p.rglob("*.jsonl")) if p.is_dir() else [p]
    for f in files:
        with f.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("%s:%d: not JSON (torn line?), skipped", f, lineno)
                    continue
                if not isinstance(d, dict) or "steps" not in d or "problem" not in d:
                    continue
                yield Trace.from_dict(d)


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> int:
    """Write rows as JSONL (flushed and fsynced); returns how many were written."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with p.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
        fh.flush()
        os.fsync(fh.fileno())
    return n


def export_traces(
    traces: Iterable[Trace],
    path: str | os.PathLike[str],
    fmt: str,
    system: str | None = AUTO_SYSTEM,
) -> int:
    """Export traces to a JSONL file in ``fmt`` (``chat`` or ``mathcoder``)."""
    return write_jsonl((trace_to_row(t, fmt, system) for t in traces), path)
