"""``mathagent train``: fine-tune a model on exported traces.

    mathagent train sft --data traces.jsonl --model smollm2-135m --format mathcoder --out runs/sft1
    mathagent train export --traces RUN_DIR_OR_JSONL --format chat --out data/chat.jsonl
    mathagent train grpo --data gsm8k_train.jsonl --model smollm2-135m --out runs/g1

Multi-GPU: ``accelerate launch --config_file training/accelerate/ddp.yaml -m mathagent.training.cli_train sft ...``
(see docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import sys

from mathagent.agent.configfile import add_config_flag, add_dataclass_flags, parse_args
from mathagent.evals.testsets import ALLOW_TEST_HELP
from mathagent.training.cli_grpo import add_parser as _grpo_parser
from mathagent.training.cli_grpo import run as run_grpo
from mathagent.training.export import AUTO_SYSTEM, export_traces, read_traces
from mathagent.training.publish import PushError
from mathagent.training.sft import SFTRunConfig, train

SFT_EXCLUDE = ("merge_lora",)
""":class:`SFTRunConfig` fields without a flag of their own (``--no-merge`` sets ``merge_lora``)."""


def _sft_parser(sub: argparse._SubParsersAction) -> list[str]:
    """``train sft``: one flag per :class:`SFTRunConfig` field (a new field gets its flag by itself)."""
    p = sub.add_parser("sft", help="supervised fine-tuning with TRL's SFTTrainer")
    names = add_dataclass_flags(
        p,
        SFTRunConfig,
        exclude=SFT_EXCLUDE,
        overrides={
            "format": {"choices": ("mathcoder", "chat")},
            "precision": {"choices": ("auto", "bf16", "fp32")},
            "lora": {"help": "train LoRA adapters instead of all weights"},
            "system": {"help": "system prompt for raw traces (auto: the agent's prompt for the format)"},
            "allow_test": {"help": ALLOW_TEST_HELP},
        },
    )
    p.add_argument("--no-merge", action="store_true", help="save base + adapter instead of the merged model")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_config_flag(p)
    return names


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export traces as TRL conversational rows or MathCoder text")
    p.add_argument("--traces", required=True, help="JSONL of traces, or a folder of them (e.g. a run folder)")
    p.add_argument("--format", choices=("mathcoder", "chat"), required=True)
    p.add_argument("--out", required=True, help="output JSONL file")
    p.add_argument("--system", default=AUTO_SYSTEM)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="mathagent train", description="export traces and fine-tune with TRL"
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sft_fields = _sft_parser(sub)
    _export_parser(sub)
    _grpo_parser(sub)
    args = parse_args(parser, argv)
    if args.cmd == "grpo":
        return run_grpo(args)
    if args.cmd == "export":
        n = export_traces(read_traces(args.traces), args.out, args.format, args.system or None)
        print(f"wrote {n} {args.format} rows to {args.out}")
        return 0 if n else 1

    fields = {name: getattr(args, name) for name in sft_fields}
    cfg = SFTRunConfig(**{**fields, "system": args.system or None}, merge_lora=not args.no_merge)
    try:
        result = train(cfg)
    except (ValueError, FileNotFoundError, PushError) as e:
        print(f"mathagent train: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        loss = f"{result.train_loss:.4f}" if result.train_loss is not None else "n/a"
        print(
            f"trained {result.steps} steps on {result.train_rows} rows ({result.train_tokens} tokens), "
            f"loss {loss}, {result.seconds:.0f} s -> {result.out_dir}"
        )
        print(f"run it: mathagent solve --model {result.out_dir} 'What is 2+3?'")
    return 0


if __name__ == "__main__":  # pragma: no cover - for `accelerate launch -m`
    sys.exit(main(sys.argv[1:]))
