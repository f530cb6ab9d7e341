"""Stop MathCoder training once the model writes the format: a ``transformers`` ``TrainerCallback``.

A model learning MathCoder's blocks must learn new special tokens (``<|code|>``, ``<|endofblock|>`` ...)
from scratch; how many steps that takes depends on the data, the learning rate and the machine's float
sums, so a fixed step count is either wasteful or, on another machine, too short. :class:`FormatProbe`
checks every ``every`` optimizer steps: for each probe problem it renders the prompt exactly as the agent
does (system prompt, user turn, ``<|assistant|>``), generates greedily, and asks whether the text holds
a code block that is opened with ``<|code|>``, closed with ``<|endofblock|>`` before any execution
block, and compiles. When every probe problem passes, training stops (``learned_at`` records the step);
``max_steps`` in the run config stays the bound.

Use it as ``sft.train(cfg, callbacks=[FormatProbe(["What is 6 + 7?"])])``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from mathagent.training import tokens as T
from mathagent.training.export import AUTO_SYSTEM, resolve_system
from transformers import TrainerCallback

log = logging.getLogger(__name__)

_CODE_BLOCK = re.compile(re.escape(T.CODE) + r"(.*?)" + re.escape(T.END_BLOCK), re.S)


def writes_code_block(generated: str) -> bool:
    """True when ``generated`` opens a code block before any execution block, closes it, and it compiles."""
    m = _CODE_BLOCK.search(generated)
    if m is None or T.EXECUTION in generated[: m.start()]:
        return False
    body = m.group(1).strip("\n")
    if not body.strip() or "<|" in body:
        return False
    try:
        compile(body, "<probe>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def mathcoder_prompt(problem: str, system: str | None) -> str:
    """The prompt the agent sends a MathCoder model for a fresh problem."""
    head = f"{T.SYSTEM}{T.TEXT}{system}{T.END_BLOCK}{T.END_MESSAGE}" if system else ""
    return f"{head}{T.USER}{T.TEXT}{problem}{T.END_BLOCK}{T.END_MESSAGE}{T.ASSISTANT}"


class FormatProbe(TrainerCallback):  # type: ignore[misc]
    """Stops training at the first check where every probe problem gets a well-formed code block."""

    def __init__(
        self,
        problems: Sequence[str],
        *,
        every: int = 5,
        start: int = 5,
        max_new_tokens: int = 48,
        system: str | None = AUTO_SYSTEM,
    ) -> None:
        """
        Args:
            problems: held-out problems (not in the training data, so the probe measures the format).
            every: optimizer steps between checks; start: first step checked.
            max_new_tokens: greedy tokens generated per problem (the text block before the code counts).
            system: the system prompt the agent will use (``auto``: the agent's MathCoder prompt).
        """
        if not problems:
            raise ValueError("FormatProbe needs at least one probe problem")
        self.problems = tuple(problems)
        self.every = max(1, every)
        self.start = max(1, start)
        self.max_new_tokens = max_new_tokens
        self.system = resolve_system(system, "mathcoder")
        self.learned_at: int | None = None
        """The optimizer step at which every probe passed (None: not within the run)."""
        self.history: list[tuple[int, int]] = []
        """(step, probes passed) per check."""

    def generations(self, model: Any, tokenizer: Any) -> list[str]:
        """Greedy generations for the probe problems, special tokens kept."""
        import torch

        was_training = model.training
        model.eval()
        out = []
        try:
            with torch.no_grad():
                for problem in self.problems:
                    enc = tokenizer(
                        mathcoder_prompt(problem, self.system), return_tensors="pt", add_special_tokens=False
                    ).to(model.device)
                    ids = model.generate(
                        **enc,
                        max_new_tokens=self.max_new_tokens,
                        do_sample=False,
                        temperature=None,
                        top_p=None,
                        top_k=None,
                        pad_token_id=tokenizer.pad_token_id,
                    )[0, enc["input_ids"].shape[1] :]
                    out.append(tokenizer.decode(ids, skip_special_tokens=False))
        finally:
            model.train(was_training)
        return out

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
        step = int(state.global_step)
        if step < self.start or (step - self.start) % self.every:
            return control
        model, tok = kw.get("model"), kw.get("processing_class") or kw.get("tokenizer")
        if model is None or tok is None:
            return control
        texts = self.generations(model, tok)
        passed = sum(writes_code_block(t) for t in texts)
        self.history.append((step, passed))
        log.info(
            "format probe at step %d: %d/%d problems write a closed code block", step, passed, len(texts)
        )
        if passed == len(texts):
            self.learned_at = step
            control.should_training_stop = True
        return control
