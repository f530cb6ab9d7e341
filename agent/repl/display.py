"""Live display of a running problem: streamed text, highlighted code, execution panels, badges, k table.

Both views take the loop's events (:mod:`mathagent.agent.events`, dispatched on their types) through
:meth:`handle`, from the event-loop thread. :class:`StreamView` (k = 1) prints finished pieces
permanently and keeps only the text being written in a small ``rich.live`` region;
:class:`TableView` (k > 1) keeps a live table of samples.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from mathagent.agent.events import (
    AnswerEvent,
    CodeEvent,
    Event,
    ExecutionEvent,
    TextDelta,
    VerificationEvent,
)
from mathagent.sandbox.output import safe_text
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

CLOSE_FENCE = re.compile(r"(?:^|\n)[ \t]*```.*\Z", re.DOTALL)
CODE_OPENER = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n|<\|code\|>", re.IGNORECASE)
FORMAT_MARKUP = re.compile(r"<\|(?:text|endofblock|endofmessage|execution|assistant|code)\|>")
BADGES = {
    "T": ("[T] verified", "bold white on green"),
    "U": ("[U] uncertain", "bold black on yellow"),
    "F": ("[F] refuted", "bold white on red"),
}
MAX_PANEL_LINES = 40


def _state(value: Any) -> str | None:
    """'T' / 'U' / 'F' from a VerificationState, a string, or None."""
    if value is None:
        return None
    return str(getattr(value, "value", value))


def badge(state: Any) -> Text:
    """The verification state as a coloured badge; ``[-] not verified`` for None."""
    s = _state(state)
    label, style = BADGES.get(s or "", ("[-] not verified", "dim"))
    return Text(f" {label} ", style=style)


def clean_prose(text: str) -> str:
    """Model prose without format markup (MathCoder block tokens) or terminal control sequences."""
    return safe_text(FORMAT_MARKUP.sub("", text)).strip("\n")


def split_code(buffer: str) -> tuple[str, str | None]:
    """(prose, code being written) of a streamed buffer; code is None until a code block opens."""
    m = CODE_OPENER.search(buffer)
    if m is None:
        return buffer, None
    return buffer[: m.start()], buffer[m.end() :]


def _clip(text: str, lines: int = MAX_PANEL_LINES) -> str:
    rows = safe_text(text).splitlines()
    if len(rows) <= lines:
        return "\n".join(rows)
    half = lines // 2
    return "\n".join(rows[:half] + [f"... ({len(rows) - lines} lines not shown) ..."] + rows[-half:])


def exec_panel(result: Any, round_no: int = 0) -> Panel:
    """An execution result in its own panel; errors, timeouts and kernel restarts are marked."""
    parts = [result.stdout.rstrip("\n"), result.stderr.rstrip("\n"), result.result or ""]
    style, title = "green", f"output · round {round_no + 1} · {result.wall_s:.2f} s"
    if result.error is not None:
        tb = result.error.traceback.strip() or f"{result.error.ename}: {result.error.evalue}"
        parts.append(tb)
        style, title = "red", f"ERROR {result.error.ename} · round {round_no + 1}"
    if result.timed_out:
        style, title = "yellow", f"TIMEOUT after {result.wall_s:.1f} s · round {round_no + 1}"
    if result.kernel_restarted:
        style, title = "magenta", f"KERNEL RESTARTED (state lost) · round {round_no + 1}"
    if result.truncated:
        parts.append("[output truncated]")
    body = "\n".join(p for p in parts if p) or "(no output)"
    return Panel(Text(_clip(body)), title=title, title_align="left", border_style=style)


def code_panel(code: str, round_no: int = 0, *, partial: bool = False) -> Panel:
    title = f"code · round {round_no + 1}" + (" (writing...)" if partial else "")
    syntax = Syntax(code.rstrip() or " ", "python", theme="monokai", line_numbers=False, word_wrap=True)
    return Panel(syntax, title=title, title_align="left", border_style="cyan")


class StreamView:
    """k = 1: the model's text as it arrives, each code block and result printed as it completes."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.buffer = ""
        self.rounds = 0
        self.live: Live | None = None

    def __enter__(self) -> StreamView:
        self.live = Live(
            self._render(), console=self.console, refresh_per_second=12, transient=True, auto_refresh=True
        )
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _print(self, *items: RenderableType) -> None:
        (self.live.console if self.live else self.console).print(*items)

    def _render(self) -> RenderableType:
        prose, code = split_code(self.buffer)
        height = max(4, self.console.size.height - 4)
        prose_rows = clean_prose(prose).splitlines()[-height:]
        items: list[RenderableType] = [Text("\n".join(prose_rows))] if prose_rows else []
        if code is not None:
            code = CLOSE_FENCE.sub("", FORMAT_MARKUP.sub("", code))
            code_rows = code.splitlines()[-max(2, height - len(prose_rows)) :]
            items.append(code_panel("\n".join(code_rows), self.rounds, partial=True))
        if not items:
            items.append(Text("thinking...", style="dim"))
        return Group(*items)

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._render())

    def flush(self) -> None:
        """Print the prose written so far permanently."""
        prose = clean_prose(split_code(self.buffer)[0]).strip()
        self.buffer = ""
        if prose:
            self._print(Text(prose))
        self._refresh()

    def handle(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            self.buffer += event.text
            self._refresh()
        elif isinstance(event, CodeEvent):
            self.flush()
            self.rounds = event.round
            self._print(code_panel(event.code, event.round))
        elif isinstance(event, ExecutionEvent):
            self.flush()
            self._print(exec_panel(event.result, event.round))
        elif isinstance(event, VerificationEvent):
            self.flush()
            r = event.round
            line = Text("verification round ", style="bold")
            line.append(str(r.round + 1 if isinstance(r.round, int) else r.round))
            line.append(": ")
            line.append_text(badge(r.state))
            if r.reason:
                line.append(f"  {r.reason}", style="dim")
            self._print(line)
        elif isinstance(event, AnswerEvent):
            self.flush()


class TableView:
    """k > 1: one live row per sample (status, rounds, answer, state) and the vote so far."""

    def __init__(self, console: Console, k: int, vote_fn: Any = None) -> None:
        self.console = console
        self.k = k
        self.vote_fn = vote_fn
        self.rows: list[dict[str, Any]] = [
            {"status": "waiting", "rounds": 0, "answer": None, "state": None, "last": ""} for _ in range(k)
        ]
        self.t0 = time.monotonic()
        self.live: Live | None = None

    def __enter__(self) -> TableView:
        self.live = Live(self.render(), console=self.console, refresh_per_second=8, transient=False)
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self.render())
            self.live.stop()
            self.live = None

    def mark(self, status: str) -> None:
        """Set the status of every sample still running (``cancelled``)."""
        for row in self.rows:
            if row["status"] in ("waiting", "writing") or row["status"].startswith("running"):
                row["status"] = status
        if self.live is not None:
            self.live.update(self.render())

    def vote_line(self) -> Text:
        answered = [
            (r["answer"], r["state"]) for r in self.rows if r["status"].startswith(("answered", "stopped"))
        ]
        if not answered or self.vote_fn is None:
            return Text("vote: waiting for answers", style="dim")
        try:
            result = self.vote_fn(answered)
        except Exception as e:  # noqa: BLE001 - a grading failure must not kill the display
            return Text(f"vote failed: {e}", style="red")
        text = Text("vote: ", style="bold")
        text.append(str(result.winner), style="bold green" if result.winner is not None else "dim")
        if result.clusters:
            best = result.clusters[0]
            text.append(f"  ({best.count}/{len(answered)} samples, score {best.score:.2f}, {result.method})")
        return text

    def render(self) -> RenderableType:
        table = Table(title=f"{self.k} samples · {time.monotonic() - self.t0:.0f} s", title_justify="left")
        for col in ("#", "status", "code", "answer", "state", "latest"):
            table.add_column(col, overflow="fold" if col != "latest" else "ellipsis", no_wrap=col == "latest")
        for i, row in enumerate(self.rows):
            table.add_row(
                str(i),
                row["status"],
                str(row["rounds"]),
                "" if row["answer"] is None else str(row["answer"]),
                badge(row["state"]) if row["state"] else Text("-", style="dim"),
                Text(row["last"][-40:], style="dim"),
            )
        return Group(table, self.vote_line())

    def handle(self, event: Event) -> None:
        i = event.sample_index
        if not 0 <= i < self.k:
            return
        row = self.rows[i]
        if isinstance(event, TextDelta):
            if row["status"] == "waiting" or row["status"].startswith("running"):
                row["status"] = "writing"
            row["last"] = (row["last"] + event.text).replace("\n", " ")[-80:]
        elif isinstance(event, CodeEvent):
            row["status"] = f"running code ({event.round + 1})"
        elif isinstance(event, ExecutionEvent):
            row["rounds"] = event.round + 1
            r = event.result
            row["status"] = "timeout" if r.timed_out else ("code error" if r.error else "writing")
        elif isinstance(event, AnswerEvent):
            row["answer"] = event.answer
            reason = event.stop_reason.value
            row["status"] = "answered" if reason == "answered" else f"stopped: {reason}"
        elif isinstance(event, VerificationEvent):
            row["state"] = _state(event.round.state)
            row["answer"] = event.round.answer if event.round.answer is not None else row["answer"]
            row["status"] = f"verifying ({event.round.round + 1})"
        if self.live is not None:
            self.live.update(self.render())

    def finish(self, traces: Sequence[Any]) -> None:
        """Fill the table from the finished traces (the authoritative answers and states)."""
        for i, t in enumerate(traces[: self.k]):
            row = self.rows[i]
            row["answer"] = t.final_answer
            row["state"] = _state(t.verification_state)
            reason = t.stop_reason.value
            row["status"] = "answered" if reason == "answered" else f"stopped: {reason}"
            row["rounds"] = sum(1 for s in t.steps if s.kind.value == "execution")
        if self.live is not None:
            self.live.update(self.render())
