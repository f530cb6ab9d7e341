"""Supervised fine-tuning on exported traces with TRL's ``SFTTrainer``.

The rows are tokenized here (see :mod:`mathagent.training.masking`) and handed to ``SFTTrainer`` as
``input_ids`` + ``labels``, so the loss mask is exactly the one tested, whatever the format. No packing:
each row is its own sequence (padding per batch), so no attention crosses two conversations.

The output directory holds a plain model (LoRA adapters merged by default), its tokenizer with the
added special tokens and chat template, and ``mathagent.json`` naming the trace format and stop
strings, so ``mathagent solve --model OUT`` runs it with the transformers backend. Checkpoints go to
``OUT/checkpoints``; ``resume=True`` continues from the newest one.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mathagent.agent.manifest import ModelManifest
from mathagent.agent.trace import Trace
from mathagent.evals.testsets import refuse_test_data
from mathagent.training import masking, publish
from mathagent.training import tokens as T
from mathagent.training.convert import resolve_model_dir
from mathagent.training.export import AUTO_SYSTEM, row_problem, trace_to_row

log = logging.getLogger(__name__)

TRACE_FORMAT = {"mathcoder": "mathcoder", "chat": "tools"}
"""Training format → the agent's trace format for the trained model."""


@dataclass(frozen=True)
class SFTRunConfig:
    """One fine-tuning run; the CLI's flags map one to one onto these fields."""

    data: str
    """A JSONL file or a folder of them: exported rows (``text`` or ``messages``) or raw traces."""
    model: str
    """A model directory, a ``.gguf`` file, or a bundled model name (GGUF is converted once)."""
    out: str
    """Output directory: final model, tokenizer, ``mathagent.json``, ``checkpoints/``."""
    format: str = "mathcoder"
    """``mathcoder`` (special-token blocks) or ``chat`` (tool-calling conversations)."""
    max_steps: int = -1
    """Optimizer steps; -1 trains for ``epochs``."""
    epochs: float = 1.0
    lr: float = 2e-5
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 2048
    """Longer sequences are truncated (their tail is dropped)."""
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    merge_lora: bool = True
    """Save the merged model (True) or base + adapter (False)."""
    precision: str = "auto"
    """``auto`` (bf16 on a GPU that has it, else fp32), ``bf16`` or ``fp32``."""
    gradient_checkpointing: bool = False
    seed: int = 0
    threads: int | None = None
    """torch CPU threads (None: torch's default, one per core). Float sums depend on how the work is
    split across threads, so a fixed count (with ``seed``) makes a CPU run repeat exactly."""
    eval_fraction: float = 0.0
    """Share of rows held out for evaluation (0: no eval split)."""
    save_steps: int = 500
    save_total_limit: int | None = 2
    logging_steps: int = 10
    warmup_ratio: float = 0.0
    resume: bool = False
    """Continue from the newest checkpoint in ``OUT/checkpoints`` when there is one."""
    report_to: str = "none"
    """``none``, ``tensorboard`` (offline, into ``OUT/logs``), ``wandb``, ``trackio``; comma-separated."""
    system: str | None = AUTO_SYSTEM
    """System prompt used when raw traces are exported on the fly (``auto``: the agent's prompt for the format)."""
    chat_template: str | None = None
    """Path of a Jinja chat template with ``{% generation %}`` markers (``chat`` format)."""
    push_to_hub: str | None = None
    """Hub repo id (``owner/name``) to upload the finished model folder to (main process, after saving)."""
    hub_private: bool = False
    """Create the hub repo private (when it does not exist yet)."""
    allow_test: bool = False
    """Train on records whose problem is an evaluation test question (refused by default, see
    :func:`refuse_test_rows`)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SFTRunConfig:
        return cls(**d)


@dataclass(frozen=True)
class TrainResult:
    """What a run produced."""

    out_dir: str
    steps: int
    train_loss: float | None
    train_rows: int
    eval_rows: int
    train_tokens: int
    """Tokens in the training split (one epoch)."""
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_rows(data: str | Path, fmt: str, system: str | None = AUTO_SYSTEM) -> list[dict[str, Any]]:
    """Rows of ``fmt`` from JSONL: exported rows as they are, raw traces exported on the fly."""
    p = Path(data)
    files = sorted(p.rglob("*.jsonl")) if p.is_dir() else [p]
    key = "text" if fmt == "mathcoder" else "messages"
    rows: list[dict[str, Any]] = []
    for f in files:
        with f.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("%s: skipped a line that is not JSON", f)
                    continue
                if key in d:
                    rows.append(d)
                elif "steps" in d and "problem" in d:
                    rows.append(trace_to_row(Trace.from_dict(d), fmt, system))
    if not rows:
        raise ValueError(f"no {fmt} rows (column {key!r}) or traces found in {data}")
    return rows


def refuse_test_rows(data: str | Path, rows: list[dict[str, Any]]) -> None:
    """Raise :class:`~mathagent.evals.testsets.TestDataError` (a ``ValueError``) when the problem of any
    row (:func:`~mathagent.training.export.row_problem`) is a question of an evaluation test set, as
    ``train grpo --data`` and ``generate`` do; the message counts them per set and names ``--allow-test``."""
    questions = (q for q in map(row_problem, rows) if q is not None)
    refuse_test_data(str(data), questions, flag="--data")


def tokenize_rows(
    rows: list[dict[str, Any]], tokenizer: Any, fmt: str, max_length: int
) -> list[dict[str, Any]]:
    """``input_ids`` + ``labels`` per row; rows with nothing to train on are dropped."""
    out = []
    for row in rows:
        if fmt == "mathcoder":
            enc = masking.tokenize_mathcoder(row["text"], tokenizer, max_length)
        else:
            enc = masking.tokenize_chat(row["messages"], tokenizer, row.get("tools"), max_length)
        if any(label != masking.IGNORE for label in enc["labels"]):
            out.append(enc)
    if rows and not out:
        raise ValueError(
            f"all {len(rows)} rows have nothing left to train on after truncation to {max_length} tokens "
            "(the prompt alone fills it): raise --max-length or shorten the system prompt (--system)"
        )
    if len(out) < len(rows):
        log.warning("dropped %d rows with no trained tokens (after truncation)", len(rows) - len(out))
    return out


def prepare_tokenizer(model_dir: Path, fmt: str, chat_template: str | None = None) -> Any:
    """The base tokenizer, with MathCoder tokens added or a generation-marked chat template set."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if fmt == "mathcoder":
        masking.add_mathcoder_tokens(tok)
    elif chat_template:
        tok.chat_template = Path(chat_template).read_text(encoding="utf-8")
    else:
        masking.ensure_chat_template(tok)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _dtype(precision: str):
    import torch

    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32":
        return torch.float32
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


REPORTERS = ("none", "tensorboard", "wandb", "trackio")


def report_to(value: str, out: Path) -> list[str]:
    """``TrainingArguments.report_to`` from ``--report-to`` (comma-separated); tensorboard logs to OUT/logs."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in REPORTERS]
    if bad:
        raise ValueError(f"--report-to: unknown {', '.join(bad)}; use {', '.join(REPORTERS)}")
    names = [n for n in names if n != "none"]
    if "tensorboard" in names:  # transformers 5 has no logging_dir argument; its callback reads this
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(out / "logs")
    return names


def warmup_steps(ratio: float) -> float:
    """``TrainingArguments.warmup_steps`` for a warmup *ratio*: transformers 5 reads a value below 1 as a
    share of the total steps and a value of 1 or more as a step count, so only [0, 1) is a ratio."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"--warmup-ratio must be in [0, 1), got {ratio}")
    return float(ratio)


def latest_checkpoint(out: Path) -> str | None:
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda c: int(c.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


def load_causal_lm(model_dir: str | Path, tok: Any, precision: str) -> tuple[Any, Any]:
    """The model to train (SFT and GRPO) in ``precision``, with rows for the tokens the tokenizer added
    and its pad token; returns (model, dtype)."""
    from transformers import AutoModelForCausalLM

    dtype = _dtype(precision)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    if len(tok) > model.get_input_embeddings().weight.shape[0]:  # type: ignore[index]
        model.resize_token_embeddings(len(tok))
    model.config.pad_token_id = tok.pad_token_id
    return model, dtype


def lora_config(cfg: Any) -> Any:
    """PEFT's LoRA config for a run (``None`` without ``--lora``): adapters on every linear layer; with the
    mathcoder format, whose special tokens are new, the embeddings and the head train whole, because
    LoRA alone does not give new tokens trainable rows."""
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
        modules_to_save=["embed_tokens", "lm_head"] if cfg.format == "mathcoder" else None,
    )


def trainer_args(cfg: Any, out: Path, dtype: Any) -> dict[str, Any]:
    """The ``TrainingArguments`` fields SFT and GRPO runs set alike (their configs share these names)."""
    import torch

    return {
        "output_dir": str(out / "checkpoints"),
        "max_steps": cfg.max_steps,
        "num_train_epochs": cfg.epochs,
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "learning_rate": cfg.lr,
        "warmup_steps": warmup_steps(cfg.warmup_ratio),
        "logging_steps": cfg.logging_steps,
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "bf16": dtype == torch.bfloat16,
        "use_cpu": not torch.cuda.is_available(),  # with `accelerate launch` on CPU: DDP over gloo
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "report_to": report_to(cfg.report_to, out),
        "disable_tqdm": not sys.stderr.isatty(),  # a progress bar where a person is looking
    }


def build_trainer(cfg: SFTRunConfig, callbacks: list[Any] | None = None) -> tuple[Any, Any, dict[str, int]]:
    """Model, tokenizer, data and ``SFTTrainer``; returns (trainer, tokenizer, counts)."""
    import torch
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    if cfg.format not in TRACE_FORMAT:
        raise ValueError(f"unknown format {cfg.format!r}; expected mathcoder or chat")
    texts = load_rows(cfg.data, cfg.format, cfg.system)
    if not cfg.allow_test:  # before any model is looked at
        refuse_test_rows(cfg.data, texts)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    model_dir = resolve_model_dir(cfg.model)
    tok = prepare_tokenizer(model_dir, cfg.format, cfg.chat_template)
    rows = tokenize_rows(texts, tok, cfg.format, cfg.max_length)
    data = Dataset.from_list(rows)
    eval_data = None
    if cfg.eval_fraction > 0 and len(data) > 1:
        split = data.train_test_split(test_size=cfg.eval_fraction, seed=cfg.seed)
        data, eval_data = split["train"], split["test"]
    model, dtype = load_causal_lm(model_dir, tok, cfg.precision)
    peft_config = lora_config(cfg)
    out = Path(cfg.out)
    args = SFTConfig(
        **trainer_args(cfg, out, dtype),
        per_device_eval_batch_size=cfg.batch_size,
        eval_strategy="steps" if eval_data is not None else "no",
        eval_steps=cfg.save_steps if eval_data is not None else None,
        max_length=cfg.max_length,
        packing=False,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=data,
        eval_dataset=eval_data,
        processing_class=tok,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    counts = {
        "train_rows": len(data),
        "eval_rows": len(eval_data) if eval_data is not None else 0,
        "train_tokens": sum(len(r) for r in data["input_ids"]),
    }
    return trainer, tok, counts


def train(cfg: SFTRunConfig, callbacks: list[Any] | None = None) -> TrainResult:
    """Run SFT and save a ready-to-serve model in ``cfg.out``."""
    t0 = time.perf_counter()
    publish.check_push(cfg.push_to_hub)  # fail now, not after training
    out = Path(cfg.out)
    trainer, tok, counts = build_trainer(cfg, callbacks)  # checks the data (and refuses test data) first
    out.mkdir(parents=True, exist_ok=True)
    resume_from = latest_checkpoint(out) if cfg.resume else None
    if cfg.resume and resume_from is None:
        log.warning("--resume: no checkpoint in %s/checkpoints, starting from scratch", out)
    result = trainer.train(resume_from_checkpoint=resume_from)
    metrics = dict(result.metrics)
    if trainer.eval_dataset is not None:
        metrics.update(trainer.evaluate())
    # every process: a collective under FSDP / DeepSpeed; only the main one writes
    save_model(trainer, tok, cfg)
    res = TrainResult(
        out_dir=str(out),
        steps=int(trainer.state.global_step),
        train_loss=metrics.get("train_loss"),
        seconds=time.perf_counter() - t0,
        metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
        **counts,
    )
    if trainer.is_world_process_zero():
        publish.write_train_result(out, cfg.to_dict(), res.to_dict())
        publish.write_card(out, manifest(cfg, tok), cfg.to_dict(), res.to_dict())
    trainer.accelerator.wait_for_everyone()
    if cfg.push_to_hub and trainer.is_world_process_zero():
        publish.push_to_hub(out, cfg.push_to_hub, private=cfg.hub_private)
    return res


def manifest(cfg: SFTRunConfig, tok: Any) -> ModelManifest:
    """``mathagent.json`` of an SFT model: the agent's trace format for the training format, its stops."""
    fmt = TRACE_FORMAT[cfg.format]
    stop = list(T.MATHCODER_STOP) if fmt == "mathcoder" else [tok.eos_token]
    return ModelManifest(fmt, tuple(stop), base_model=cfg.model, training_format=cfg.format)


def save_model(trainer: Any, tok: Any, cfg: SFTRunConfig) -> None:
    """Final model (merged when LoRA), tokenizer and ``mathagent.json`` into ``cfg.out``."""
    publish.save_model(trainer, tok, cfg.out, manifest(cfg, tok), merge_lora=cfg.lora and cfg.merge_lora)
