"""Cell output: the capped collector, traceback cleaning and :func:`model_view` (what the model sees)."""

from __future__ import annotations

import re

from mathagent.sandbox.base import ExecError, ExecResult

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
#: Terminal control sequences: CSI (cursor movement, colours, erase), OSC (window title, OSC 52
#: clipboard, hyperlinks; ended by BEL or ST), DCS / SOS / PM / APC strings, two-byte escapes, and
#: their 8-bit C1 forms.
_CONTROL_SEQ = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
#: Remaining C0 / C1 controls and DEL; tab, newline and carriage return are kept.
_CONTROL_CHAR = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_INTERNAL = ("/ipykernel/", "/IPython/", "/ipykernel_launcher", "/jupyter_client/", "/zmq/", "/tornado/")


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


def safe_text(text: str) -> str:
    """Text fit to leave the sandbox: valid UTF-8 and nothing a terminal would act on.

    Lone surrogates (which ``str.encode('utf-8')`` refuses) become U+FFFD; terminal control sequences
    (cursor movement, colours, OSC 0 titles, OSC 52 clipboard writes, ...) and other control
    characters are removed; tab, newline and carriage return stay.
    """
    if not isinstance(text, str):
        text = str(text)
    if text.isascii() and text.isprintable():
        return text
    text = _SURROGATE.sub("\ufffd", text)
    text = _CONTROL_SEQ.sub("", text)
    return _CONTROL_CHAR.sub("", text)


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

    def _fit(self, text: str, extra: int = 0) -> str | None:
        """Count ``text`` (plus ``extra`` bytes the kernel already dropped) and cut it to the room left,
        in UTF-8 bytes, never splitting a character; None when no room is left."""
        if not isinstance(text, str):
            text = str(text)
        data = text.encode("utf-8", "surrogatepass")
        self.offered += len(data) + max(extra, 0)
        if extra > 0:
            self.truncated = True
        room = self.cap - self.kept
        if room <= 0:
            if data:
                self.truncated = True
            return None
        if len(data) > room:
            data = data[:room]
            self.truncated = True
            text = data.decode("utf-8", "ignore")  # a character cut in two is dropped whole
        self.kept += len(data)
        return safe_text(text)

    def add(self, stream: str, text: str) -> None:
        kept = self._fit(text)
        if kept:
            (self.stderr if stream == "stderr" else self.stdout).append(kept)

    def set_result(self, text: str, dropped: int = 0) -> None:
        """The cell's value; ``dropped``: bytes of it the kernel cut before sending (see boot.py)."""
        kept = self._fit(text, dropped)
        self.result = kept if kept is not None else ""

    def count_dropped(self, nbytes: int) -> None:
        """Count output the harness never received (a message the relay dropped as too large)."""
        self.offered += max(nbytes, 0)
        self.truncated = True

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
