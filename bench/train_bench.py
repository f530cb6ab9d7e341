"""Training throughput: mathagent's SFT pipeline against a plain TRL ``SFTTrainer`` run, same data and model.

    python bench/train_bench.py [--model smollm2-135m] [--steps 6] [--batch-size 4] [--rows-per-trace 1]

Both runs train the same MathCoder-format rows on the same model, batch size, sequence lengths and seed.
Ours feeds pre-tokenized ``input_ids`` + masked ``labels``; the baseline hands TRL the ``text`` column
and lets it tokenize (no masking). The first step (warm-up) is not timed. Prints tokens/s of each and
the ratio; the pipeline should be within 5% of the baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from mathagent.agent.trace import Step, StepKind, Trace
from mathagent.sandbox.base import ExecResult
from mathagent.training.export import export_traces
from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t = 0.0

    def on_step_begin(self, args, state, control, **kw):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self._t)


def make_traces(n: int) -> list[Trace]:
    out = []
    for i in range(n):
        a, b = 17 * i + 3, 29 * i + 5
        out.append(
            Trace(
                problem=f"A box holds {a} red and {b} blue marbles. How many marbles are in the box?",
                steps=(
                    Step(StepKind.TEXT, "Add the two counts; let me check the sum with Python."),
                    Step(StepKind.CODE, f"red = {a}\nblue = {b}\nprint(red + blue)"),
                    Step(StepKind.EXECUTION, str(a + b), ExecResult(stdout=f"{a + b}\n")),
                    Step(StepKind.TEXT, f"So the box holds \\boxed{{{a + b}}} marbles."),
                ),
                final_answer=str(a + b),
                problem_id=f"bench-{i}",
            )
        )
    return out


def run_ours(data: Path, model: str, out: Path, steps: int, batch: int) -> tuple[StepTimer, int]:
    from mathagent.training.sft import SFTRunConfig, build_trainer

    cfg = SFTRunConfig(
        data=str(data), model=model, out=str(out), format="mathcoder", max_steps=steps,
        batch_size=batch, lr=1e-4, save_steps=10_000, logging_steps=10_000, max_length=512, seed=0,
    )  # fmt: skip
    timer = StepTimer()
    trainer, _tok, counts = build_trainer(cfg, callbacks=[timer])
    trainer.train()
    return timer, counts["train_tokens"]


def run_plain(data: Path, model: str, out: Path, steps: int, batch: int) -> tuple[StepTimer, int]:
    """TRL on its own: text column, TRL's tokenization, no custom labels."""
    import torch
    from datasets import load_dataset
    from mathagent.training.convert import resolve_model_dir
    from mathagent.training.masking import add_mathcoder_tokens
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    set_seed(0)
    model_dir = resolve_model_dir(model)
    tok = AutoTokenizer.from_pretrained(model_dir)
    add_mathcoder_tokens(tok)
    lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lm.resize_token_embeddings(len(tok))
    ds = load_dataset("json", data_files=str(data), split="train").select_columns(["text"])
    args = SFTConfig(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch, learning_rate=1e-4,
        save_steps=10_000, logging_steps=10_000, max_length=512, packing=False, report_to=[],
        disable_tqdm=True, seed=0, data_seed=0, bf16=False,
    )  # fmt: skip
    timer = StepTimer()
    trainer = SFTTrainer(model=lm, args=args, train_dataset=ds, processing_class=tok, callbacks=[timer])
    tokens = sum(len(r) for r in trainer.train_dataset["input_ids"])
    trainer.train()
    return timer, tokens


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    rows = a.steps * a.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "mc.jsonl"
        export_traces(make_traces(rows), data, "mathcoder")
        results = {}
        for name, fn in (("plain_trl", run_plain), ("mathagent", run_ours)):
            timer, tokens = fn(data, a.model, Path(tmp) / name, a.steps, a.batch_size)
            timed = timer.times[1:]  # step 1 is warm-up
            per_step_tokens = tokens / rows * a.batch_size
            tps = per_step_tokens * len(timed) / sum(timed)
            results[name] = {"tokens_per_s": round(tps, 1), "s_per_step": round(sum(timed) / len(timed), 3),
                             "tokens": tokens, "timed_steps": len(timed)}  # fmt: skip
    ratio = results["mathagent"]["tokens_per_s"] / results["plain_trl"]["tokens_per_s"]
    results["ratio_mathagent_over_plain"] = round(ratio, 3)
    if a.json:
        print(json.dumps(results))
    else:
        for name in ("plain_trl", "mathagent"):
            r = results[name]
            print(
                f"{name:10s} {r['tokens_per_s']:8.1f} tok/s  {r['s_per_step']:.3f} s/step  ({r['tokens']} tokens)"
            )
        print(f"ratio mathagent / plain TRL: {ratio:.3f} (must be >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
