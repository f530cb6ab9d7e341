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

from mathagent.training.cli_grpo import add_parser as _grpo_parser
from mathagent.training.cli_grpo import run as run_grpo
from mathagent.training.export import AUTO_SYSTEM, export_traces, read_traces
from mathagent.training.publish import PushError
from mathagent.training.sft import SFTRunConfig, train


def _sft_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sft", help="supervised fine-tuning with TRL's SFTTrainer")
    p.add_argument("--data", required=True, help="JSONL file or folder: exported rows or raw traces")
    p.add_argument(
        "--model", required=True, help="model directory, .gguf file, or bundled name (smollm2-135m)"
    )
    p.add_argument("--format", choices=("mathcoder", "chat"), default="mathcoder")
    p.add_argument(
        "--out", required=True, help="output directory (model, tokenizer, mathagent.json, checkpoints/)"
    )
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--lora", action="store_true", help="train LoRA adapters instead of all weights")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--no-merge", action="store_true", help="save base + adapter instead of the merged model")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (fix it, with --seed, to repeat a CPU run)",
    )
    p.add_argument("--eval-fraction", type=float, default=0.0)
    p.add_argument("--save-steps", type=int, default=500)
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--warmup-ratio", type=float, default=0.0)
    p.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in OUT/checkpoints"
    )
    p.add_argument("--report-to", default="none", help="none, tensorboard (OUT/logs), wandb, trackio")
    p.add_argument("--system", default=AUTO_SYSTEM, help="system prompt for raw traces")
    p.add_argument("--chat-template", default=None, help="Jinja template with {%% generation %%} markers")
    p.add_argument(
        "--push-to-hub", metavar="OWNER/NAME", help="upload the finished model folder to this hub model repo"
    )
    p.add_argument("--hub-private", action="store_true", help="create the hub repo private")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


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
    _sft_parser(sub)
    _export_parser(sub)
    _grpo_parser(sub)
    args = parser.parse_args(argv)
    if args.cmd == "grpo":
        return run_grpo(args)
    if args.cmd == "export":
        n = export_traces(read_traces(args.traces), args.out, args.format, args.system or None)
        print(f"wrote {n} {args.format} rows to {args.out}")
        return 0 if n else 1

    cfg = SFTRunConfig(
        data=args.data,
        model=args.model,
        out=args.out,
        format=args.format,
        max_steps=args.max_steps,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_length=args.max_length,
        lora=args.lora,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        merge_lora=not args.no_merge,
        precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing,
        seed=args.seed,
        threads=args.threads,
        eval_fraction=args.eval_fraction,
        save_steps=args.save_steps,
        logging_steps=args.logging_steps,
        warmup_ratio=args.warmup_ratio,
        resume=args.resume,
        report_to=args.report_to,
        system=args.system or None,
        chat_template=args.chat_template,
        push_to_hub=args.push_to_hub,
        hub_private=args.hub_private,
    )
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
