"""Ablation modes: the same loop, grader and run folder with less of the method switched on.

``--mode`` on ``solve``, ``eval`` and ``generate`` picks one of:

* ``cot``: natural-language reasoning only (prompt ``cot.md``); one model call, no stop string, no
  code executed even if the model writes some (MathCoder's "no execution" ablation).
* ``pot``: program of thought (prompt ``pot.md``): one model call that must write one Python block;
  it runs once and its last printed line is the answer; no feedback round.
* ``loop``: the multi-round loop (text, code, output, ...), no verification.
* ``loop+verify``: the loop plus code-based self-verification and revision (the default, except on a
  bundled model measured not to gain from it: :func:`default_verify`).

In :class:`~mathagent.agent.config.AgentConfig` a mode is two fields: ``mode`` (``loop``/``cot``/``pot``)
and ``verify``. ``AgentConfig.to_dict`` leaves ``mode`` out when it is ``loop``, so run folders written
before modes existed keep their identity and resume; :func:`run_mode` reads such a folder as ``loop+verify``
(verify on) or ``loop`` (verify off).
"""

from __future__ import annotations

import os
from typing import Any

from mathagent.agent import calibrate, models
from mathagent.agent.events import CodeEvent, ExecutionEvent
from mathagent.agent.grading import extract_answer
from mathagent.agent.trace import Step, StepKind, StopReason

MODES = ("cot", "pot", "loop", "loop+verify")
"""The modes ``--mode`` accepts."""
DEFAULT_MODE = "loop+verify"
SINGLE_CALL = ("cot", "pot")
"""Modes that make one model call and never feed an execution back."""


class ModeError(ValueError):
    """An unknown mode, or a mode that cannot run with the chosen trace format."""


def check_mode(mode: str, fmt: Any = None) -> str:
    """``mode`` if it exists (and can run with trace format ``fmt``), else :class:`ModeError`."""
    if mode not in MODES:
        raise ModeError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "pot" and fmt is not None and getattr(fmt, "needs_tools", False):
        raise ModeError("mode pot needs a text format (markdown or mathcoder), not native tool calls")
    return mode


def measured_model(
    model: str | None, *, base_url: str | None = None, backend: str | None = None, script: str | None = None
) -> models.BundledModel | None:
    """The bundled model a run uses, whose measured defaults apply: ``model`` when it names one; with no
    model, the bundled default unless a server (``base_url`` or env ``OPENAI_BASE_URL``), another
    backend or a script supplies the turns. None otherwise (a model the study has not measured)."""
    if script or backend in ("scripted", "transformers"):
        return None
    if model:
        return models.REGISTRY.get(model)
    if base_url or os.environ.get("OPENAI_BASE_URL"):
        return None
    return models.REGISTRY[models.DEFAULT_MODEL]


def default_verify(
    model: models.BundledModel | None,
    k: int,
    *,
    system_prompt: str | None = None,
    verify_prompt: str | None = None,
) -> tuple[bool, str | None]:
    """Verification when neither ``--verify``/``--no-verify`` nor ``--mode`` says: on, except on a
    bundled model measured not to gain from it, with one sample
    (:attr:`~mathagent.agent.models.BundledModel.verify_at_k1`) or with several
    (:attr:`~mathagent.agent.models.BundledModel.verify_at_k`, unless a calibration saved for the model
    and prompts weighs the states, so the vote has a use for them:
    :attr:`~mathagent.agent.calibrate.Calibration.weighs_states`).
    The calibration is looked up for ``system_prompt`` (a prompt or format name, None for markdown) and
    ``verify_prompt``, and only when the answer matters.
    Returns ``(verify, why)``; ``why`` is a line for the user when the measured default turned it off."""
    if model is None:
        return True, None
    if k == 1 and not model.verify_at_k1:
        return False, f"verification off by default for {model.name} at k = 1 ({model.evidence})"
    if k > 1 and not model.verify_at_k:
        cal = calibrate.find(model.name, system_prompt, verify_prompt)
        if cal is None or not cal.weighs_states:
            return False, (
                f"verification off by default for {model.name} at k > 1, the samples take a majority vote "
                f"({model.evidence_k})"
            )
    return True, None


def args_verify(args: Any) -> tuple[bool, str | None]:
    """``--verify`` as typed, else :func:`default_verify` for the flags' model, prompts and ``--k``."""
    if getattr(args, "verify", None) is not None:
        return bool(args.verify), None
    k = int(getattr(args, "k", 1) or 1)
    if k > 1 and (getattr(args, "verify_all", False) or getattr(args, "verify_contested", False)):
        return True, None  # asking how to verify the samples (every one, the contested ones) asks to verify
    model = measured_model(
        getattr(args, "model", None) or None,
        base_url=getattr(args, "base_url", None),
        backend=getattr(args, "backend", None),
        script=getattr(args, "script", None) or os.environ.get("MATHAGENT_SCRIPT"),
    )
    return default_verify(
        model,
        k,
        system_prompt=getattr(args, "system_prompt", None) or getattr(args, "format", None),
        verify_prompt=getattr(args, "verify_prompt", None),
    )


def args_mode(args: Any) -> tuple[str, bool, str | None]:
    """``--mode``, ``--verify`` and the defaults they leave to the model and ``--k`` ->
    (``AgentConfig.mode``, ``AgentConfig.verify``, a line for the user when a measured default applied)."""
    mode = getattr(args, "mode", None)
    if mode is not None:
        return (*split_mode(mode, False), None)
    verify, why = args_verify(args)
    return (*split_mode(None, verify), f"{why}; --verify turns it on" if why else None)


def split_mode(mode: str | None, verify: bool) -> tuple[str, bool]:
    """``--mode`` (None: not given) and ``--verify`` -> (``AgentConfig.mode``, ``AgentConfig.verify``).

    An explicit mode wins over ``--verify``; without one the verify flag keeps its old meaning.
    """
    if mode is None:
        return "loop", verify
    check_mode(mode)
    if mode == "loop+verify":
        return "loop", True
    return mode, False


def mode_name(agent_mode: str | None, verify: bool) -> str:
    """The user-facing mode of an ``AgentConfig`` (``mode``, ``verify``)."""
    agent_mode = agent_mode or "loop"
    if agent_mode == "loop":
        return "loop+verify" if verify else "loop"
    return agent_mode


def config_mode(config: Any) -> str:
    """The user-facing mode of an ``AgentConfig`` (or its dict)."""
    if isinstance(config, dict):
        return mode_name(config.get("mode"), bool(config.get("verify", True)))
    return mode_name(getattr(config, "mode", "loop"), bool(getattr(config, "verify", True)))


def run_mode(header: dict[str, Any]) -> str:
    """The mode of a run folder from its ``header.json`` (old folders: from the verify flag)."""
    if header.get("mode") in MODES:
        return str(header["mode"])
    cfg = (header.get("identity") or {}).get("config") or {}
    agent = (cfg.get("extra") or {}).get("agent")
    if isinstance(agent, dict):
        return config_mode(agent)
    return "loop+verify" if cfg.get("verify", True) else "loop"


def default_prompt(mode: str) -> str | None:
    """The shipped system prompt a single-call mode uses unless ``--system-prompt`` names another."""
    return mode if mode in SINGLE_CALL else None


def _last_line(text: str | None) -> str | None:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else None


async def run_single_call(traj: Any, mode: str) -> tuple[StopReason, str | None, str | None]:
    """Run ``cot`` or ``pot`` on a :class:`~mathagent.agent.loop.Trajectory`: (stop, error, answer)."""
    if mode == "cot":
        # No stop string: any code the model writes is only text, and nothing runs.
        traj.fmt = _NoStop(traj.fmt)
    c = await traj.call_model(traj.build_prompt())
    if isinstance(c, str):
        return (StopReason.CONTEXT_FULL if c.startswith("context full") else StopReason.ERROR), c, None
    if mode == "cot":
        text = c.text.strip()
        if not text:
            return StopReason.ERROR, "backend returned an empty completion", None
        traj.steps.append(Step(StepKind.TEXT, text))
        answer = traj._extract(text)
        if answer is not None:
            return StopReason.ANSWERED, None, answer
        why = (
            f"max_tokens ({traj.config.max_tokens}) reached without an answer"
            if c.finish_reason == "length"
            else None
        )
        return StopReason.NO_ANSWER, why, None
    g = traj.fmt.parse_generation(c)
    if g.text.strip():
        traj.steps.append(Step(StepKind.TEXT, g.text))
    if g.code is None:
        why = "the model wrote no program" if not g.unclosed_code else "the program was cut by max_tokens"
        return StopReason.NO_ANSWER, why, None
    traj.steps.append(Step(StepKind.CODE, g.code))
    traj.emit(CodeEvent(g.code, 0, traj.sample_index))
    result = await traj.execute(g.code)
    if isinstance(result, str):
        return StopReason.ERROR, result, None
    view = traj.view(result)
    traj.steps.append(Step(StepKind.EXECUTION, view, execution=result))
    traj.emit(ExecutionEvent(view, result, 0, traj.sample_index))
    traj.rounds += 1
    if not result.ok:
        return StopReason.NO_ANSWER, "the program failed", None
    line = _last_line(result.stdout) or _last_line(result.result)
    if line is None:
        return StopReason.NO_ANSWER, "the program printed nothing", None
    try:
        answer = extract_answer(line, last_output=line)
    except Exception:  # noqa: BLE001 - an extractor bug ends this sample without an answer
        answer = None
    return (StopReason.ANSWERED, None, answer) if answer is not None else (StopReason.NO_ANSWER, None, None)


class _NoStop:
    """A trace format with its stop strings removed (``cot``: the model writes to its end)."""

    stop_strings: tuple[str, ...] = ()
    needs_tools = False

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def add_mode_arg(parser: Any) -> Any:
    """Add ``--mode`` (default: not given, so ``--verify/--no-verify`` decide between the loop modes)."""
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help="cot: reasoning only, nothing runs; pot: one program, its output is the answer; loop: "
        "multi-round code loop; loop+verify: the loop with code-based self-verification (default "
        "unless --no-verify, and except on a bundled model measured not to gain from it)",
    )
    return parser
