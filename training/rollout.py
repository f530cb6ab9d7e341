"""Token-level multi-turn rollouts: the policy writes, its code runs in the sandbox, the output is appended.

One rollout is one mathagent trajectory kept as token ids, so that GRPO trains on exactly the tokens the
policy sampled:

* the prompt is the agent's own (``TraceFormat.build_prompt`` with the shipped system prompt of the
  format; for ``markdown`` the chat template opens the assistant turn);
* each round the policy generates until the format's stop rule fires (``markdown``: a closed
  ```python block, or the ```output opener; ``mathcoder``: ``<|endofblock|>`` / ``<|endofmessage|>``),
  its end of sequence, or the token budget;
* the generation is read with the format's ``parse_generation`` (what the agent does), a code block runs
  in this rollout's own sandbox (one fresh kernel per rollout, from the provider), and the execution is
  appended as the format renders it (```output block / ``<|execution|>…<|endofblock|>``);
* ``env_mask`` is 1 on the policy's tokens and 0 on the appended execution tokens, which TRL removes
  from the policy loss and the KL term.

Generation is a seam (:class:`Generator`): :class:`HFGenerator` (transformers ``generate``, batched over
the live rollouts of a round) and :class:`ScriptedGenerator` (given texts, for deterministic tests).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mathagent.agent.backends.base import Completion
from mathagent.agent.backends.transformers_backend import cut_at_stop
from mathagent.agent.formats import TraceFormat, get_format
from mathagent.agent.formats import markdown as md
from mathagent.agent.formats import mathcoder as mc
from mathagent.agent.grading import extract_answer
from mathagent.agent.loop import last_output, model_view
from mathagent.agent.prompts import load_prompt
from mathagent.agent.trace import Step, StepKind, StopReason
from mathagent.sandbox.base import ExecResult, Sandbox, SandboxProvider

log = logging.getLogger(__name__)

FORMATS = ("markdown", "mathcoder")
"""Trace formats a rollout can be written in (``tools`` needs a tool-call parser per model family)."""

StopRule = Callable[[str], bool]
"""True once the text generated so far in this call ends the call."""


@dataclass(frozen=True)
class RolloutConfig:
    """How rollouts are run; the ``train grpo`` flags map onto these fields."""

    format: str = "markdown"
    """``markdown`` (```python / ```output in a chat turn) or ``mathcoder`` (special-token blocks)."""
    system_prompt: str | None = None
    """Shipped prompt name (``agent/prompts/<name>.md``); None: the format's own, as the agent uses."""
    max_rounds: int = 4
    """Most code executions per rollout; code written after that ends the rollout (``max_rounds``)."""
    max_completion_length: int = 512
    """Token budget of the whole completion: policy tokens and appended execution tokens."""
    cell_timeout: float = 10.0
    """Seconds one code block may run."""
    view_chars: int = 800
    """Most characters of an execution result shown to the policy."""
    max_text_blocks: int = 4
    """``mathcoder``: most consecutive text blocks before the message counts as ended."""
    grading: str = "math"
    """Grading policy for answer extraction (``gsm8k``, ``math``, ...)."""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(
                f"rollout format {self.format!r} is not supported; use one of {', '.join(FORMATS)}"
            )
        if self.max_completion_length < 1 or self.max_rounds < 0:
            raise ValueError("max_completion_length must be >= 1 and max_rounds >= 0")


@dataclass
class Rollout:
    """One finished rollout: token ids, the loss mask, the trajectory as steps, and what it scored on."""

    problem: str
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    """1: a token the policy sampled (trained); 0: an appended execution token (masked)."""
    steps: list[Step] = field(default_factory=list)
    stop_reason: StopReason = StopReason.NO_ANSWER
    error: str | None = None
    answer: str | None = None
    fabricated: bool = False
    """The policy wrote an execution block itself (output no execution produced)."""
    executions: int = 0
    exec_errors: int = 0
    """Executions that raised, timed out or crashed the kernel."""
    gen_s: float = 0.0
    exec_s: float = 0.0
    truncated: bool = False
    """The token budget ran out before the message ended."""

    def record(self) -> dict[str, Any]:
        """A JSON-able summary (handed to the reward functions and written to the rollout log)."""
        return {
            "answer": self.answer,
            "fabricated": self.fabricated,
            "executions": self.executions,
            "exec_errors": self.exec_errors,
            "code_blocks": sum(1 for s in self.steps if s.kind is StepKind.CODE),
            "stop_reason": self.stop_reason.value,
            "error": self.error,
            "truncated": self.truncated,
            "policy_tokens": sum(self.env_mask),
            "execution_tokens": len(self.env_mask) - sum(self.env_mask),
            "gen_s": round(self.gen_s, 4),
            "exec_s": round(self.exec_s, 4),
        }

    def spans(self, tokenizer: Any) -> list[tuple[str, bool]]:
        """The completion as (text, trained) runs, decoded from the ids: what the loss sees."""
        out: list[tuple[str, bool]] = []
        start = 0
        for i in range(1, len(self.completion_ids) + 1):
            if i == len(self.completion_ids) or self.env_mask[i] != self.env_mask[start]:
                text = tokenizer.decode(self.completion_ids[start:i], skip_special_tokens=False)
                out.append((text, bool(self.env_mask[start])))
                start = i
        return out


@dataclass(frozen=True)
class Generated:
    """One generation call for one context."""

    ids: list[int]
    finish: str
    """``eos`` (end of sequence), ``stop`` (the stop rule fired) or ``length`` (budget)."""


class Generator(Protocol):
    """Continues a batch of token contexts; one :class:`Generated` per context."""

    def generate(
        self, contexts: Sequence[list[int]], max_new: Sequence[int], stop: StopRule, rows: Sequence[int]
    ) -> list[Generated]:
        """``rows``: which rollout each context belongs to (its index in the batch of rollouts)."""
        ...


# -- stop rules and cutting ----------------------------------------------------------------------------


def stop_rule(fmt: str) -> StopRule:
    """The call-ending rule of a format (the agent's stop strings, plus a closed code fence for markdown)."""
    if fmt == "mathcoder":
        return lambda text: mc.END_BLOCK in text or mc.END_MESSAGE in text

    def markdown(text: str) -> bool:
        if "```output" in text:
            return True
        opener = md.OPEN_CODE.search(text)
        return opener is not None and md.CLOSE_FENCE.search(text[opener.end() :]) is not None

    return markdown


def cut(ids: list[int], decode: Callable[[list[int]], str], stop: StopRule, eos: set[int]) -> Generated:
    """The shortest prefix of ``ids`` that ends the call (end of sequence or the stop rule)."""
    for i, t in enumerate(ids):
        if t in eos:
            ids = ids[: i + 1]
            if not stop(decode(ids[:-1])):
                return Generated(ids, "eos")
            break
    if not stop(decode(ids)):
        return Generated(ids, "length")
    lo, hi = 1, len(ids)  # the rule is monotone in the prefix: binary search the first prefix it accepts
    while lo < hi:
        mid = (lo + hi) // 2
        if stop(decode(ids[:mid])):
            hi = mid
        else:
            lo = mid + 1
    return Generated(ids[:lo], "stop")


# -- generators ----------------------------------------------------------------------------------------


class HFGenerator:
    """Batched ``generate`` with a transformers model (the policy being trained, or any causal LM)."""

    def __init__(
        self, model: Any, tokenizer: Any, generation_config: Any = None, eos_ids: Sequence[int] = ()
    ):
        self.model, self.tokenizer = model, tokenizer
        self.generation_config = generation_config
        self.eos = set(eos_ids) or {tokenizer.eos_token_id}

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([t for t in ids if t not in self.eos], skip_special_tokens=False)

    def generate(
        self, contexts: Sequence[list[int]], max_new: Sequence[int], stop: StopRule, rows: Sequence[int] = ()
    ) -> list[Generated]:
        import copy

        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        if not contexts:
            return []
        pad = self.tokenizer.pad_token_id
        width = max(len(c) for c in contexts)
        input_ids = torch.tensor([[pad] * (width - len(c)) + list(c) for c in contexts])
        attention = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts])
        decode = self.decode

        class _Stop(StoppingCriteria):
            def __call__(self, ids: Any, scores: Any, **kw: Any) -> Any:
                new = ids[:, width:].tolist()
                return torch.tensor([stop(decode(row)) for row in new], dtype=torch.bool, device=ids.device)

        cfg = copy.deepcopy(self.generation_config) if self.generation_config is not None else None
        kw: dict[str, Any] = {
            "max_new_tokens": max(max_new),
            "pad_token_id": pad,
            "eos_token_id": sorted(self.eos),
        }
        device = next(self.model.parameters()).device
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                generation_config=cfg,
                stopping_criteria=StoppingCriteriaList([_Stop()]),
                **kw,
            )
        results = []
        for row, limit in zip(out[:, width:].tolist(), max_new, strict=True):
            results.append(cut(row[:limit], decode, stop, self.eos))
        return results


def vllm_stop_strings(fmt: str) -> list[str]:
    """Stop strings handed to vLLM: never earlier than the format's stop rule (the result is cut by the
    rule afterwards). ``mathcoder``: the rule's own markers; ``markdown``: the ```output opener only, since
    "a closed ```python block" is no plain string (vLLM may then write past the fence, up to the budget)."""
    return [mc.END_BLOCK, mc.END_MESSAGE] if fmt == "mathcoder" else ["```output"]


class VLLMGenerator:
    """A round of rollouts through vLLM, as TRL runs it (``GRPOTrainer.vllm_generation``).

    TRL pushes the policy's current weights into vLLM before it calls the rollout function, so the
    rollouts sample from the policy being trained. ``colocate``: ``engine`` is the process's own
    ``vllm.LLM``; every context is one request with its own token budget. ``server``: ``engine`` is a
    ``trl`` ``VLLMClient`` talking to ``trl vllm-serve`` (each rank sends its own requests). Either way the
    tokens vLLM sampled are kept as they are and cut by the format's stop rule, like :class:`HFGenerator`'s.
    """

    def __init__(
        self,
        engine: Any,
        mode: str,
        tokenizer: Any,
        eos_ids: Sequence[int],
        fmt: str,
        sampling: dict[str, Any] | None = None,
        sampling_params: Callable[..., Any] | None = None,
    ):
        if mode not in ("colocate", "server"):
            raise ValueError(f"vLLM mode {mode!r}: expected colocate or server")
        self.engine, self.mode, self.tokenizer = engine, mode, tokenizer
        self.eos = set(eos_ids) or {tokenizer.eos_token_id}
        self.stop_strings = vllm_stop_strings(fmt)
        self.sampling = dict(sampling or {})
        self._params = sampling_params  # vllm.SamplingParams (passed in: tests run without vllm)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([t for t in ids if t not in self.eos], skip_special_tokens=False)

    def generate(
        self, contexts: Sequence[list[int]], max_new: Sequence[int], stop: StopRule, rows: Sequence[int] = ()
    ) -> list[Generated]:
        if not contexts:
            return []
        if self.mode == "colocate":
            make = self._params
            if make is None:
                from vllm import SamplingParams  # lazy: vllm exists only on GPU machines

                make = SamplingParams
            params = [
                make(
                    n=1,
                    max_tokens=m,
                    stop=self.stop_strings,
                    include_stop_str_in_output=True,
                    **self.sampling,
                )
                for m in max_new
            ]
            outs = self.engine.generate(
                [{"prompt_token_ids": list(c)} for c in contexts], sampling_params=params, use_tqdm=False
            )
            sampled = [list(o.outputs[0].token_ids) for o in outs]
        else:
            out = self.engine.generate(
                prompts=[list(c) for c in contexts],
                n=1,
                max_tokens=max(max_new),
                generation_kwargs={"stop": self.stop_strings, "include_stop_str_in_output": True},
                **self.sampling,
            )
            sampled = [list(ids) for ids in out["completion_ids"]]
        return [cut(ids[:m], self.decode, stop, self.eos) for ids, m in zip(sampled, max_new, strict=True)]


class ScriptedGenerator:
    """Replays given texts as the policy's output (one list of call texts per context, in order).

    Texts are tokenized without special tokens added; the end of sequence is appended when a text ends
    with the tokenizer's ``eos_token``. The stop rule still cuts each text, as it cuts sampled tokens.
    """

    def __init__(self, tokenizer: Any, scripts: Sequence[Sequence[str]]):
        self.tokenizer = tokenizer
        self.queues = [list(s) for s in scripts]
        self.eos = {tokenizer.eos_token_id}

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([t for t in ids if t not in self.eos], skip_special_tokens=False)

    def generate(
        self, contexts: Sequence[list[int]], max_new: Sequence[int], stop: StopRule, rows: Sequence[int] = ()
    ) -> list[Generated]:
        out = []
        for row, limit in zip(rows, max_new, strict=True):
            q = self.queues[row]
            text = q.pop(0) if q else self.tokenizer.eos_token
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][:limit]
            out.append(cut(ids, self.decode, stop, self.eos))
        return out


# -- the rollout loop -------------------------------------------------------------------------------


def build_prompt(problem: str, fmt: TraceFormat, tokenizer: Any, system_prompt: str | None) -> str:
    """The agent's prompt for ``problem`` (raw text, the assistant turn opened)."""
    prompt = load_prompt(system_prompt or fmt.name).text

    def render_chat(messages: Sequence[dict[str, Any]]) -> str:
        msgs = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
        return str(tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))

    out = fmt.build_prompt(problem, [], prompt, render_chat=render_chat)
    if not isinstance(out, str):  # pragma: no cover - both supported formats give raw text
        raise ValueError(f"format {fmt.name!r} did not give a raw prompt")
    return out


def execution_text(fmt: str, policy_text: str, view: str) -> str:
    """What is appended after a code block: the format's execution block, joined to the policy's text."""
    if fmt == "mathcoder":
        return f"{mc.EXECUTION}{view}{mc.END_BLOCK}"
    body = view.strip("\n")
    if policy_text.rstrip().endswith("```output"):  # the policy opened the output block itself (ToRA style)
        return f"\n{body}\n```\n"
    return ("" if policy_text.endswith("\n") else "\n") + f"```output\n{body}\n```\n"


def _fabricated(fmt: str, text: str, code: str | None) -> bool:
    if fmt == "mathcoder":
        return mc.EXECUTION in text
    return "```output" in text and code is None


class _State:
    def __init__(self, rollout: Rollout, prompt_len: int):
        self.r = rollout
        self.prompt_len = prompt_len
        self.rounds = 0
        self.text_streak = 0
        self.done = False
        self.sandbox: Sandbox | None = None
        self.pending: str | None = None
        self.policy_text = ""


def run_rollouts(
    problems: Sequence[str],
    generator: Generator,
    tokenizer: Any,
    provider: SandboxProvider | None,
    config: RolloutConfig,
    *,
    workers: int = 8,
) -> list[Rollout]:
    """One rollout per entry of ``problems`` (repeat a problem for a group), run round by round.

    Each round generates for every live rollout in one batch, then runs their code blocks concurrently,
    each in its rollout's own sandbox (acquired from ``provider`` on first use, closed at the end).
    """
    fmt = get_format(config.format)
    rule = stop_rule(config.format)
    states = []
    for p in problems:
        ids = tokenizer(build_prompt(p, fmt, tokenizer, config.system_prompt), add_special_tokens=False)[
            "input_ids"
        ]
        states.append(_State(Rollout(problem=p, prompt_ids=list(ids)), len(ids)))
    pool = cf.ThreadPoolExecutor(max_workers=max(1, min(workers, len(states) or 1)))
    try:
        while live := [s for s in states if not s.done]:
            contexts = [s.r.prompt_ids + s.r.completion_ids for s in live]
            budgets = [config.max_completion_length - len(s.r.completion_ids) for s in live]
            t0 = time.perf_counter()
            outs = generator.generate(contexts, budgets, rule, [states.index(s) for s in live])
            dt = time.perf_counter() - t0
            for s, g in zip(live, outs, strict=True):
                s.r.gen_s += dt / len(live)
                _take_generation(s, g, generator, fmt, config)
            jobs = [s for s in live if s.pending is not None]
            for s, (result, secs) in zip(
                jobs, pool.map(lambda s: _execute(s, provider, config), jobs), strict=True
            ):
                s.r.exec_s += secs
                _take_execution(s, result, tokenizer, config)
    finally:
        closing = [s.sandbox for s in states if s.sandbox is not None]
        for s in states:
            s.sandbox = None
        list(pool.map(_close_quietly, closing))
        pool.shutdown(wait=True)
    for s in states:
        _finish(s.r, config)
    return [s.r for s in states]


def _take_generation(
    s: _State, g: Generated, generator: Any, fmt: TraceFormat, config: RolloutConfig
) -> None:
    r = s.r
    r.completion_ids += g.ids
    r.env_mask += [1] * len(g.ids)
    text = generator.decode(g.ids)
    s.policy_text = text
    finish = "length" if g.finish == "length" else "stop"
    # what the agent's backends hand the format: the text cut before the first stop string
    shown, stop_string = cut_at_stop(text, fmt.stop_strings)
    parsed = fmt.parse_generation(Completion(text=shown, finish_reason=finish, stop_string=stop_string))
    if _fabricated(config.format, s.policy_text, parsed.code):
        r.fabricated = True
    if parsed.text.strip():
        r.steps.append(Step(StepKind.TEXT, parsed.text))
    budget_left = config.max_completion_length - len(r.completion_ids)
    if parsed.code is not None and not r.fabricated:
        r.steps.append(Step(StepKind.CODE, parsed.code))
        if s.rounds >= config.max_rounds:
            s.done, r.stop_reason = True, StopReason.MAX_ROUNDS
        elif budget_left <= 0:
            s.done, r.truncated = True, True
        else:
            s.pending = parsed.code
        return
    if parsed.unclosed_code or g.finish == "length" or budget_left <= 0:
        s.done, r.truncated = True, g.finish == "length" or budget_left <= 0
        if parsed.unclosed_code:
            r.error = "the code block was not closed within the token budget"
        return
    if r.fabricated or g.finish == "eos" or parsed.finished:
        s.done = True
        return
    s.text_streak += 1  # a mathcoder text block: the message goes on
    if s.text_streak >= config.max_text_blocks:
        s.done = True


def _execute(
    s: _State, provider: SandboxProvider | None, config: RolloutConfig
) -> tuple[ExecResult | str, float]:
    t0 = time.perf_counter()
    try:
        if s.sandbox is None:
            if provider is None:
                return "no sandbox provider: code cannot be executed", 0.0
            s.sandbox = provider.acquire()
        return s.sandbox.run(s.pending or "", config.cell_timeout), time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 - a sandbox failure ends this rollout, not the batch
        log.exception("sandbox failed")
        return f"sandbox error: {type(e).__name__}: {e}", time.perf_counter() - t0


def _take_execution(s: _State, result: ExecResult | str, tokenizer: Any, config: RolloutConfig) -> None:
    r = s.r
    s.pending = None
    if isinstance(result, str):
        s.done, r.stop_reason, r.error = True, StopReason.ERROR, result
        return
    view = model_view(result, config.view_chars, config.cell_timeout)
    r.steps.append(Step(StepKind.EXECUTION, view, execution=result))
    r.executions += 1
    s.rounds += 1
    s.text_streak = 0
    if not result.ok or result.timed_out or result.kernel_restarted:
        r.exec_errors += 1
    ids = tokenizer(execution_text(config.format, s.policy_text, view), add_special_tokens=False)["input_ids"]
    room = config.max_completion_length - len(r.completion_ids)
    if len(ids) >= room:
        ids = ids[:room]
        s.done, r.truncated = True, True
    r.completion_ids += ids
    r.env_mask += [0] * len(ids)


def _finish(r: Rollout, config: RolloutConfig) -> None:
    text = "\n".join(s.content for s in r.steps if s.kind is StepKind.TEXT)
    if r.fabricated:
        r.answer = None
        r.stop_reason, r.error = StopReason.ERROR, r.error or "the policy wrote an execution block itself"
        return
    try:
        r.answer = extract_answer(text, config.grading, last_output=last_output(r.steps))
    except Exception:  # noqa: BLE001 - a grader bug scores 0, it does not stop training
        log.exception("answer extraction failed")
        r.answer = None
    if r.stop_reason is StopReason.NO_ANSWER and r.answer is not None:
        r.stop_reason = StopReason.ANSWERED


def _close_quietly(sb: Sandbox) -> None:
    try:
        sb.close()
    except Exception:  # noqa: BLE001
        log.exception("closing a sandbox failed")
