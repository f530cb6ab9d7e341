"""The interactive ``mathagent solve`` REPL: prompt, commands, live solving, Ctrl-C, clean exit.

Keys: Enter submits; Alt-Enter (or Esc then Enter) inserts a newline, and so does a line ending in a
backslash; Up/Down walk the history (kept in ``repl_history`` under the cache folder); Tab completes
commands. Ctrl-C while a problem runs stops it (the running cell is interrupted) and returns to the
prompt; Ctrl-C at the prompt clears the line; Ctrl-D (or ``/quit``) leaves, stopping the model
server and the kernels the session started.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from mathagent.agent.backends.base import ServerGone
from mathagent.agent.backends.openai_backend import REQUEST_TIMEOUT_ENV
from mathagent.agent.choose import resolve_weights, vote_traces
from mathagent.agent.cli_solve import build_parser
from mathagent.agent.config import AgentConfig
from mathagent.agent.configfile import parse_args
from mathagent.agent.events import Event
from mathagent.agent.flags import given
from mathagent.agent.loop import solve, solve_k
from mathagent.agent.modes import split_mode
from mathagent.agent.presets import apply_preset
from mathagent.agent.render import answer_renderable, footer, skipped_note
from mathagent.agent.repl.commands import CommandError, completions, help_rows, is_command, run_command
from mathagent.agent.repl.display import StreamView, TableView, badge
from mathagent.agent.repl.recorder import EventRecorder
from mathagent.agent.repl.runtime import CallSeparated, Runtime
from mathagent.agent.repl.settings import ReplSettings, history_path
from mathagent.agent.trace import Trace
from rich.console import Console
from rich.table import Table
from rich.text import Text

log = logging.getLogger(__name__)

PROMPT = "math> "


def settings_from_args(args: argparse.Namespace) -> ReplSettings:
    preset = _preset_config(args)
    return ReplSettings(
        k=max(1, args.k),
        model=args.model,
        backend=args.backend,
        base_url=args.base_url,
        temperature=args.temperature if args.temperature is not None else 0.0,
        format=preset.format,
        verify=_verify_setting(args),
        rounds=preset.max_rounds,
        vote=args.vote,
        seed=args.seed,
        continue_mode=getattr(args, "continue_mode", None) or "auto",
        script=args.script or os.environ.get("MATHAGENT_SCRIPT") or None,
    )


def _split_mode(args: argparse.Namespace) -> tuple[str, bool]:
    return split_mode(getattr(args, "mode", None), bool(args.verify))


def _verify_setting(args: argparse.Namespace) -> bool | None:
    """``--mode`` decides verification when given; else ``--verify``/``--no-verify``; else ``--verify-all``
    (on); else None (auto)."""
    if getattr(args, "mode", None) is not None:
        return _split_mode(args)[1]
    if args.verify is None and getattr(args, "verify_all", False):
        return True
    return args.verify


def _preset_config(args: argparse.Namespace) -> AgentConfig:
    """Format, tokens per call and code calls from ``--preset`` and the explicit flags."""
    return apply_preset(
        AgentConfig(),
        getattr(args, "preset", None),
        format=args.format,
        max_tokens=given(getattr(args, "max_tokens", None)),
        max_rounds=given(args.max_rounds),
    )


def base_config(args: argparse.Namespace) -> AgentConfig:
    """AgentConfig fields the REPL has no command for, taken from the flags once."""
    preset = _preset_config(args)
    changes = {
        "max_tokens": preset.max_tokens,
        "cell_timeout": args.timeout,
        "system_prompt": args.system_prompt,
        "mode": _split_mode(args)[0],
        "verify_prompt": args.verify_prompt,
        "preset": preset.preset,
    }
    return AgentConfig().with_(**{k: v for k, v in changes.items() if v is not None})


def _key_bindings() -> Any:
    from prompt_toolkit.key_binding import KeyBindings

    kb = KeyBindings()

    @kb.add("enter")
    def _submit(event: Any) -> None:
        buf = event.current_buffer
        if buf.text.endswith("\\") and buf.cursor_position == len(buf.text):
            buf.delete_before_cursor(1)
            buf.insert_text("\n")
        else:
            buf.validate_and_handle()

    @kb.add("escape", "enter")
    def _newline(event: Any) -> None:
        event.current_buffer.insert_text("\n")

    return kb


class Repl:
    """One interactive session."""

    def __init__(
        self,
        settings: ReplSettings,
        console: Console,
        *,
        pool_size: int = 2,
        base_config: AgentConfig | None = None,
    ) -> None:
        self.settings = settings
        self.base_config = base_config
        self.vote_weights: Any = None
        """``--weights`` (None: calibrated for the model if saved, else the defaults)."""
        self.prune = False
        """``--prune``: drop samples without an answer, code or with invented outputs before the vote."""
        self.verify_all = False
        """``--verify-all``: with k > 1 verify every sample, not only when the samples disagree."""
        self.console = console
        self.runtime = Runtime(pool_size=pool_size)
        self.traces: list[Trace] = []
        self.last: list[Trace] = []
        self.task: asyncio.Task[Any] | None = None
        self.sigint_pending = False
        self.provider: Any = None

    # -- prompt -----------------------------------------------------------------------------------

    def _session(self) -> Any:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.completion import WordCompleter
        from prompt_toolkit.history import FileHistory, InMemoryHistory

        path = history_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            history: Any = FileHistory(str(path))
        except OSError:
            history = InMemoryHistory()
        return PromptSession(
            history=history,
            multiline=True,
            key_bindings=_key_bindings(),
            completer=WordCompleter(completions(), sentence=True),
            complete_while_typing=False,
            prompt_continuation=lambda width, line, wrap: "." * (width - 1) + " ",
        )

    def banner(self, warming: list[str]) -> None:
        self.console.print(Text("mathagent", style="bold") + Text(" interactive solver", style="dim"))
        if warming:
            self.console.print(Text("warming up: " + "; ".join(warming), style="dim"))
        why = self.settings.verify_default()[1]
        if why:
            self.console.print(Text(f"{why}; /verify on turns it on", style="dim"))
        self.console.print(
            Text(
                "Type a problem and press Enter (Alt-Enter or a trailing \\ for a new line). "
                "/help for commands, Ctrl-C stops a run, Ctrl-D quits.",
                style="dim",
            )
        )

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread
            pass
        session = self._session()
        self.banner(self.runtime.warm(self.settings))
        try:
            while True:
                self.sigint_pending = False
                try:
                    line = await session.prompt_async(PROMPT, handle_sigint=False)
                except KeyboardInterrupt:
                    continue  # Ctrl-C at the prompt: the line is cleared
                except EOFError:
                    break
                line = line.strip()
                if not line:
                    continue
                if is_command(line):
                    if await self.command(line) == "quit":
                        break
                    continue
                await self.solve(line)
        finally:
            self.console.print(Text("stopping the model server and kernels...", style="dim"))
            try:
                loop.remove_signal_handler(signal.SIGINT)
            except (NotImplementedError, RuntimeError):  # pragma: no cover
                pass
            await self.runtime.aclose()
            self.console.print("bye")
        return 0

    def _on_sigint(self) -> None:
        task = self.task
        if task is None or task.done():
            self.sigint_pending = True  # between Enter and the task's start: cancel it when it starts
            return
        if self.provider is not None:
            self.provider.interrupt_all()  # stop the running cell now, so the loop can close its kernel
        task.cancel()

    # -- commands ---------------------------------------------------------------------------------

    async def command(self, line: str) -> str | None:
        try:
            res = run_command(line, self.settings)
        except CommandError as e:
            self.console.print(Text(str(e), style="red"))
            return None
        self.settings = res.settings
        if res.message:
            self.console.print(Text(res.message, style="cyan"))
        warming = self.runtime.warm(self.settings)
        if warming:
            self.console.print(Text("warming up: " + "; ".join(warming), style="dim"))
            self.runtime.close_retired()
        action = res.action
        if action == "help":
            table = Table(show_header=False, box=None)
            for usage, text in help_rows():
                table.add_row(Text(usage, style="bold"), text)
            self.console.print(table)
            self.console.print(
                Text(
                    "Enter submits; Alt-Enter or a trailing \\ adds a line; Ctrl-C stops a run.", style="dim"
                )
            )
        elif action == "settings":
            self.show_settings()
        elif action == "trace":
            if not self.last:
                self.console.print(Text("no trace yet", style="yellow"))
            for t in self.last:
                self.console.print_json(t.to_json())
        elif action == "save":
            self.save(res.arg or "")
        elif action == "clear":
            self.console.clear()
        return action

    def show_settings(self) -> None:
        table = Table(show_header=False, box=None)
        for name, value in self.settings.to_dict().items():
            if name == "script" and value is None:
                continue
            shown = (
                self.settings.verify_shown()
                if name == "verify"
                else "default"
                if value is None
                else ("on" if value is True else "off" if value is False else value)
            )
            table.add_row(Text(name, style="bold"), str(shown))
        table.add_row(Text("source", style="bold"), self.settings.describe_backend())
        for what, state in self.runtime.status().items():
            table.add_row(Text(what, style="bold"), state)
        table.add_row(Text("history", style="bold"), str(history_path()))
        table.add_row(Text("traces", style="bold"), f"{len(self.traces)} this session")
        self.console.print(table)

    def save(self, file: str) -> None:
        if not self.traces:
            self.console.print(Text("no traces to save yet", style="yellow"))
            return
        path = Path(file).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as fh:
                for t in self.traces:
                    fh.write(t.to_json() + "\n")
        except OSError as e:
            self.console.print(Text(f"could not write {path}: {e}", style="red"))
            return
        self.console.print(Text(f"saved {len(self.traces)} traces to {path}", style="green"))

    # -- solving ----------------------------------------------------------------------------------

    async def _ready(self) -> tuple[Any, Any] | None:
        waiting = [k for k, v in self.runtime.status().items() if v == "warming up"]
        if waiting:
            self.console.print(Text("waiting for " + " and ".join(waiting) + " to warm up...", style="dim"))
        try:
            backend = await self.runtime.backend()
        except Exception as e:  # noqa: BLE001 - show it and keep the REPL
            self.console.print(Text(f"backend unavailable: {e}", style="red"))
            self.console.print(Text("change /model, /backend or /base-url, or try again", style="dim"))
            return None
        try:
            provider = await self.runtime.provider()
        except Exception as e:  # noqa: BLE001
            self.console.print(Text(f"sandbox unavailable: {e} (see `mathagent sandbox check`)", style="red"))
            return None
        return backend, provider

    async def solve(self, problem: str) -> None:
        """Run one problem as a task that Ctrl-C cancels; the REPL, backend and pool survive it."""
        self.runtime.warm(self.settings)  # retries a backend or pool that failed to start
        self.task = asyncio.ensure_future(self._solve(problem, self.settings))
        if self.sigint_pending:
            self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:  # cancelled before or after the part that reports it
            self.console.print(Text("cancelled", style="yellow"))
        finally:
            self.task = None

    async def _solve(self, problem: str, s: ReplSettings) -> None:
        try:
            ready = await self._ready()
        except asyncio.CancelledError:
            self.console.print(Text("cancelled", style="yellow"))
            return
        if ready is None:
            return
        backend, provider = ready
        self.provider = provider
        backend = CallSeparated(backend)
        config = s.agent_config(self.base_config)
        recorder = EventRecorder(s.k)
        view: Any = (
            StreamView(self.console)
            if s.k == 1
            else TableView(self.console, s.k, self._vote_fn(getattr(backend, "model", None)))
        )

        def on_event(event: Event) -> None:
            recorder.handle(event)
            view.handle(event)

        cancelled = False
        gone: ServerGone | None = None
        traces: list[Trace] = []
        with view:
            try:
                if s.k == 1:
                    traces = [await solve(problem, backend, provider, config, on_event=on_event)]
                else:
                    traces = await solve_k(
                        problem,
                        backend,
                        provider,
                        config,
                        k=s.k,
                        on_event=on_event,
                        verify_contested=not self.verify_all,
                    )
                if isinstance(view, TableView):
                    view.finish(traces)
            except asyncio.CancelledError:
                cancelled = True
                if isinstance(view, TableView):
                    view.mark("cancelled")
            except ServerGone as e:
                gone = e
                if isinstance(view, TableView):
                    view.mark("server gone")
        await asyncio.to_thread(provider.close_handed_out)
        if gone is not None:  # nothing to show; the next question starts the server again
            self.runtime.drop_backend()
            self.runtime.close_retired()
            self.console.print(Text(f"the model server stopped: {gone}", style="red"))
            again = "starts it again" if gone.restarts else "tries it again (start it first)"
            self.console.print(Text(f"the next question {again}", style="dim"))
            return
        if cancelled:
            level = getattr(getattr(provider, "level", None), "value", "")
            traces = recorder.cancelled_traces(problem, backend, s, level)
            self.console.print(Text("stopped (Ctrl-C); the partial trace is kept", style="yellow"))
        else:
            self.show_result(traces)
        self.traces.extend(traces)
        self.last = traces

    def _vote_fn(self, model: str | None = None) -> Any:
        """The shared voting path (mathagent.agent.choose): calibrated weights when saved, pruning on request."""
        s = self.settings
        vw = resolve_weights(
            self.vote_weights, model=model or s.model, config=s.agent_config(self.base_config), method=s.vote
        )
        return lambda traces: vote_traces(traces, vw, prune=self.prune)

    def show_result(self, traces: list[Trace]) -> None:
        if len(traces) == 1:
            t = traces[0]
            line = Text("answer: ", style="bold")
            line.append(str(t.final_answer) if t.final_answer is not None else "(none)", style="bold green")
            line.append("  ")
            line.append_text(badge(t.verification_state))
            self.console.print(answer_renderable(t))
            self.console.print(line)
            self.console.print(Text(footer(t), style="dim"))
            return
        try:
            result = self._vote_fn(traces[0].model or None)(traces)
        except Exception as e:  # noqa: BLE001
            self.console.print(Text(f"vote failed: {e}", style="red"))
            return
        line = Text(f"answer ({result.method} vote of {len(traces)}): ", style="bold")
        line.append(str(result.winner) if result.winner is not None else "(none)", style="bold green")
        if result.clusters:
            c = result.clusters[0]
            line.append(f"  {c.count}/{len(traces)} samples, score {c.score:.2f}", style="dim")
        self.console.print(line)
        note = skipped_note(traces)
        if note:
            self.console.print(Text(note, style="dim"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), list(sys.argv[1:] if argv is None else argv))
    if args.request_timeout is not None:  # every backend this REPL builds reads it
        os.environ[REQUEST_TIMEOUT_ENV] = str(args.request_timeout)
    if os.environ.get("MATHAGENT_REPL_DEBUG"):  # `kill -USR1 PID` dumps every thread's stack
        import faulthandler

        faulthandler.register(signal.SIGUSR1, all_threads=True)
    console = Console(highlight=False)
    try:
        settings, base = settings_from_args(args), base_config(args)
    except ValueError as e:  # an unknown preset, or --format conflicting with it
        print(f"mathagent: {e}", file=sys.stderr)
        return 2
    repl = Repl(settings, console, pool_size=max(1, args.pool_size), base_config=base)
    repl.vote_weights, repl.prune, repl.verify_all = args.weights, args.prune, args.verify_all
    return asyncio.run(repl.run())
