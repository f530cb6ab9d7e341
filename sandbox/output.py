"""Cell output: the capped collector, traceback cleaning and :func:`model_view` (what the model sees)."""

from __future__ import annotations

import re

from mathagent.sandbox.base import ExecError, ExecResult

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
_INTERNAL = ("/ipykernel/", "/IPython/", "/ipykernel_launcher", "/jupyter_client/", "/zmq/", "/tornado/")


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


def clean_traceback(frames: list[str]) -> str:
    """Join ipykernel's traceback entries without colours, separator rules or kernel-internal frames."""
    out = []
    for entry in frames:
        text = strip_ansi(entry)
        if set(text.strip()) <= {"-"}:
            continue
        head = text.lstrip().split("\n", 1)[0]
        if head.startswith("File ") and any(m in head for m in _INTERNAL):
            continue
        out.append(text.rstrip("\n"))
    return elide(_collapse_repeats("\n".join(out).splitlines()), 20_000)


def _collapse_repeats(lines: list[str]) -> str:
    """Fold runs of an identical one- or two-line frame (deep recursion) into one line saying how many."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        for width in (2, 1):
            block = lines[i : i + width]
            n = 1
            while len(block) == width and lines[i + n * width : i + (n + 1) * width] == block:
                n += 1
            if n >= 4:
                out += block + [f"  [previous {width}-line frame repeated {n - 1} more times]"]
                i += n * width
                break
        else:
            out.append(lines[i])
            i += 1
    return "\n".join(out)


class OutputCollector:
    """Accumulates one cell's output up to ``cap`` bytes (UTF-8), counting everything offered."""

    def __init__(self, cap: int):
        self.cap = cap
        self.kept = 0
        self.offered = 0
        self.truncated = False
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.result: str | None = None
        self.error: ExecError | None = None

    def add(self, stream: str, text: str) -> None:
        n = len(text.encode("utf-8", "surrogatepass"))
        self.offered += n
        room = self.cap - self.kept
        if room <= 0:
            self.truncated = True
            return
        if n > room:
            text = text.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
            self.truncated = True
            n = room
        self.kept += n
        (self.stderr if stream == "stderr" else self.stdout).append(text)

    def set_result(self, text: str) -> None:
        self.offered += len(text.encode("utf-8", "surrogatepass"))
        room = max(self.cap - self.kept, 0)
        if len(text) > room:
            text = text[:room]
            self.truncated = True
        self.kept += len(text)
        self.result = text

    def build(self, **kw: object) -> ExecResult:
        return ExecResult(
            stdout="".join(self.stdout),
            stderr="".join(self.stderr),
            result=self.result,
            error=self.error,
            truncated=self.truncated,
            output_bytes=self.offered,
            **kw,  # type: ignore[arg-type]
        )


def elide(text: str, max_chars: int) -> str:
    """Keep the head and tail of ``text``, replacing the middle with a marker naming its size."""
    if len(text) <= max_chars:
        return text
    keep = max(max_chars - 40, 20)
    head, tail = keep * 2 // 3, keep - keep * 2 // 3
    gone = len(text) - head - tail
    return f"{text[:head]}\n... [{gone} characters elided] ...\n{text[len(text) - tail :]}"


def _short_traceback(err: ExecError, lines: int = 12) -> str:
    tb = err.traceback.strip().splitlines()
    body = tb[-lines:] if tb else []
    last = f"{err.ename}: {err.evalue}" if err.evalue else err.ename
    if not body or body[-1].strip() != last.strip():
        body.append(last)
    return "\n".join(body)


def model_view(result: ExecResult, max_chars: int = 2000, timeout_s: float | None = None) -> str:
    """The text a model should see for one cell: output, value, error tail, and what went wrong.

    Pure function. Output longer than ``max_chars`` keeps its head and tail. A timeout reads e.g.
    ``TimeoutError: cell exceeded 10 s; kernel restarted, all variables lost``.
    """
    parts: list[str] = []
    if result.stdout:
        parts.append(result.stdout.rstrip("\n"))
    if result.stderr:
        parts.append(result.stderr.rstrip("\n"))
    if result.result is not None:
        parts.append(result.result)
    if result.truncated:
        parts.append(f"[output truncated: the cell emitted {result.output_bytes} bytes]")
    if result.timed_out:
        secs = f"{timeout_s:g} s" if timeout_s is not None else "its time limit"
        tail = "; kernel restarted, all variables lost" if result.kernel_restarted else "; interrupted"
        parts.append(f"TimeoutError: cell exceeded {secs}{tail}")
    elif result.error is not None:
        parts.append(_short_traceback(result.error))
        if result.kernel_restarted:
            parts.append("[kernel restarted, all variables lost]")
    elif result.kernel_restarted:
        parts.append("KernelDied: the kernel crashed; kernel restarted, all variables lost")
    text = "\n".join(p for p in parts if p)
    return elide(text, max_chars) if text else ""
