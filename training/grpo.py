"""GRPO with the interpreter in the loop, through TRL's ``GRPOTrainer`` and its ``rollout_func`` hook.

:func:`make_rollout_func` gives TRL a rollout function that runs real mathagent trajectories
(:mod:`mathagent.training.rollout`): the policy generates with the trainer's live weights, code blocks
run in the sandbox (one fresh kernel per rollout from a :class:`~mathagent.sandbox.KernelPool`), and
outputs are appended in the trace format. It returns ``env_mask`` (0 on execution tokens), which TRL
multiplies into the completion mask, so interpreter output counts neither in the policy loss nor in the
KL term. Rewards come from :mod:`mathagent.training.rewards` (the grader against the gold answer plus
optional terms), weighted by TRL's ``reward_weights`` and logged per step.

The output directory holds the model (LoRA merged by default), its tokenizer, ``mathagent.json`` (trace
format and stop strings, as SFT writes it) so ``mathagent solve --model OUT`` runs it, ``checkpoints/``
(``resume=True`` continues from the newest), ``steps.jsonl`` (per step: reward and its parts, time split
into generation / execution / the rest) and ``rollouts.jsonl`` (each rollout's summary and text).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mathagent.agent.manifest import ModelManifest
from mathagent.evals.datafiles import sha256_file
from mathagent.evals.datasets import GRADING_KIND, load_problems
from mathagent.evals.testsets import refuse_test_data
from mathagent.sandbox import KernelPool
from mathagent.training import masking, publish
from mathagent.training import tokens as T
from mathagent.training.convert import resolve_model_dir
from mathagent.training.rewards import REWARD_NAMES, ROLLOUT_COLUMN, RewardWeights, reward_functions
from mathagent.training.rollout import FORMATS, HFGenerator, RolloutConfig, VLLMGenerator, run_rollouts
from mathagent.training.sft import latest_checkpoint, load_causal_lm, lora_config, trainer_args

log = logging.getLogger(__name__)

STOP = {"markdown": ["```output"], "mathcoder": list(T.MATHCODER_STOP)}
"""Stop strings written into ``mathagent.json`` (the agent's own for the format)."""


@dataclass(frozen=True)
class GRPORunConfig:
    """One GRPO run; the CLI flags (and a ``--config`` JSON file) map one to one onto these fields."""

    data: str
    """Training problems: a JSONL path (GSM8K rows, or ``question``/``problem`` + ``answer``/``gold``) or a
    standard data set name."""
    model: str
    """A model directory, a ``.gguf`` file, a bundled name, or a hub id present in the local cache."""
    out: str
    format: str = "markdown"
    """Trace format of the rollouts: ``markdown`` or ``mathcoder``."""
    grading: str | None = None
    """Grading policy (``gsm8k``, ``math``, ...); None: from the data set (``gsm8k*`` files: gsm8k)."""
    limit: int | None = None
    """Use only the first N problems (after the seeded shuffle when ``shuffle``)."""
    allow_test: bool = False
    """Train on problems of an evaluation test set (refused by default, as ``generate`` refuses them:
    training on test problems leaks them into every later evaluation; see :mod:`mathagent.evals.testsets`)."""
    shuffle: bool = False
    num_generations: int = 4
    """Group size: rollouts per problem."""
    batch_size: int = 4
    """Completions per device per micro-batch (a multiple of ``num_generations`` keeps groups whole)."""
    grad_accum: int = 1
    max_steps: int = -1
    epochs: float = 1.0
    lr: float = 1e-6
    beta: float = 0.0
    """KL coefficient (0: no reference model)."""
    epsilon: float = 0.2
    """PPO-style clip range."""
    loss_type: str = "dapo"
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_completion_length: int = 512
    max_rounds: int = 4
    cell_timeout: float = 10.0
    view_chars: int = 800
    system_prompt: str | None = None
    reward_weights: RewardWeights = field(default_factory=RewardWeights)
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    merge_lora: bool = True
    precision: str = "auto"
    gradient_checkpointing: bool = False
    """TRL turns it on by default; off here (small models on CPU only lose time with it)."""
    torch_threads: int | None = None
    """``torch.set_num_threads`` for this process (None: torch's default)."""
    seed: int = 0
    save_steps: int = 100
    save_total_limit: int | None = 2
    logging_steps: int = 1
    warmup_ratio: float = 0.0
    resume: bool = False
    report_to: str = "none"
    """``none``, ``tensorboard``, ``wandb``, ``trackio`` (comma-separated for several)."""
    pool_size: int = 4
    """Kernels kept warm for the rollouts."""
    vllm: str | None = None
    """Generate the rollouts with vLLM through TRL: ``colocate`` (a vLLM engine inside every training
    process, sharing its GPU) or ``server`` (a ``trl vllm-serve`` process on other GPUs); None:
    transformers ``generate``."""
    vllm_server_host: str = "0.0.0.0"
    vllm_server_port: int = 8000
    vllm_server_base_url: str | None = None
    """Server mode: the server's URL (overrides host and port)."""
    vllm_server_timeout: float = 240.0
    """Server mode: seconds to wait for the server to come up."""
    vllm_gpu_memory_utilization: float = 0.3
    """Colocate mode: share of each GPU's memory vLLM may take."""
    vllm_tensor_parallel_size: int = 1
    """Colocate mode: GPUs one vLLM engine spans."""
    vllm_max_model_length: int | None = None
    """Colocate mode: the engine's context length (None: the model's)."""
    push_to_hub: str | None = None
    """Hub repo id (``owner/name``) to upload the finished model folder to (main process, after saving)."""
    hub_private: bool = False
    """Create the hub repo private (when it does not exist yet)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further ``GRPOConfig`` fields, passed as they are."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reward_weights"] = self.reward_weights.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GRPORunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown GRPO config keys: {', '.join(unknown)}")
        d = dict(d)
        if isinstance(d.get("reward_weights"), dict):
            d["reward_weights"] = RewardWeights(**d["reward_weights"])
        return cls(**d)

    def rollout_config(self, grading: str) -> RolloutConfig:
        return RolloutConfig(
            format=self.format,
            system_prompt=self.system_prompt,
            max_rounds=self.max_rounds,
            max_completion_length=self.max_completion_length,
            cell_timeout=self.cell_timeout,
            view_chars=self.view_chars,
            grading=grading,
        )


@dataclass(frozen=True)
class GRPOResult:
    out_dir: str
    steps: int
    seconds: float
    problems: int
    mean_reward_first: float | None
    mean_reward_last: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    process_index: int = 0
    """This process's rank (``accelerate launch`` runs one per device)."""
    saved: bool = False
    """Whether this process wrote the model and ``mathagent.json`` (the main process only)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


VLLM_MODES = ("colocate", "server")


def vllm_config(cfg: GRPORunConfig, check_installed: bool = True) -> dict[str, Any]:
    """The ``GRPOConfig`` fields for ``cfg.vllm`` (empty without vLLM). Raises ``ValueError`` for an
    unknown mode and, when ``check_installed``, when the ``vllm`` package is missing (it needs a GPU)."""
    if cfg.vllm is None:
        return {}
    if cfg.vllm not in VLLM_MODES:
        raise ValueError(f"--vllm {cfg.vllm!r}: expected one of {', '.join(VLLM_MODES)}")
    if check_installed:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ValueError(
                f"--vllm {cfg.vllm}: the vllm package is not installed (`pip install 'trl[vllm]'`, on a machine "
                "with a CUDA GPU); without --vllm the rollouts generate with transformers"
            )
    if cfg.vllm == "colocate" and cfg.vllm_tensor_parallel_size > 1:
        raise ValueError(
            "--vllm colocate with --vllm-tensor-parallel-size > 1 is not supported: the ranks of a tensor-parallel "
            "group must call vLLM together with the same prompts, while each rank's multi-round rollouts make their "
            "own number of calls; use --vllm server for models that need several GPUs"
        )
    # The rollout returns no sampling log-probabilities (execution tokens have none), so TRL's vLLM
    # importance-sampling correction, which needs them, is off: the old log-probabilities come from the policy.
    args: dict[str, Any] = {
        "use_vllm": True,
        "vllm_mode": cfg.vllm,
        "vllm_importance_sampling_correction": False,
    }
    if cfg.vllm == "server":
        args.update(
            vllm_server_host=cfg.vllm_server_host,
            vllm_server_port=cfg.vllm_server_port,
            vllm_server_timeout=cfg.vllm_server_timeout,
        )
        if cfg.vllm_server_base_url:
            args["vllm_server_base_url"] = cfg.vllm_server_base_url
    else:
        args.update(
            vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
            vllm_tensor_parallel_size=cfg.vllm_tensor_parallel_size,
        )
        if cfg.vllm_max_model_length:
            args["vllm_max_model_length"] = cfg.vllm_max_model_length
    return args


def guess_grading(name: str) -> str:
    """The grading policy for a data set name or file stem (``gsm8k_train`` -> ``gsm8k``)."""
    stem = Path(name).stem.lower().replace("_", "-")
    for key, kind in GRADING_KIND.items():
        if stem == key or stem.startswith(key + "-"):
            return kind
    return "math"


def load_rows(cfg: GRPORunConfig) -> tuple[list[dict[str, Any]], str]:
    """Dataset rows ``prompt`` / ``gold`` / ``grading`` / ``problem_id``, and the grading policy."""
    problems = load_problems(cfg.data, limit=cfg.limit, seed=cfg.seed, shuffle=cfg.shuffle)
    if not problems:
        raise ValueError(f"no problems in {cfg.data}")
    if not cfg.allow_test:  # TestDataError (a ValueError) names the test set and the way round it
        path = Path(cfg.data)
        sha = sha256_file(path) if path.is_file() else None
        refuse_test_data(cfg.data, (p.question for p in problems), flag="--data", file_sha256=sha)
    grading = cfg.grading or guess_grading(problems[0].dataset or cfg.data)
    rows = [{"prompt": p.question, "gold": p.gold, "grading": grading, "problem_id": p.id} for p in problems]
    return rows, grading


class RolloutLog:
    """Collects per-step rollout timings and writes ``rollouts.jsonl`` (main process, or one file a rank)."""

    def __init__(self, out: Path, rank: int, world: int, tokenizer: Any):
        name = "rollouts.jsonl" if world == 1 else f"rollouts.rank{rank}.jsonl"
        self.path = out / name
        self.tokenizer = tokenizer
        self.gen_s = 0.0
        self.exec_s = 0.0
        self.rollout_s = 0.0
        self.rollouts = 0

    def add(self, step: int, rollouts: list[Any], gen_s: float, exec_s: float, wall_s: float) -> None:
        self.gen_s += gen_s
        self.exec_s += exec_s
        self.rollout_s += wall_s
        self.rollouts += len(rollouts)
        with self.path.open("a", encoding="utf-8") as f:
            for r in rollouts:
                text = self.tokenizer.decode(r.completion_ids, skip_special_tokens=False)
                f.write(
                    json.dumps({"step": step, "problem": r.problem, **r.record(), "completion": text}) + "\n"
                )

    def take(self) -> dict[str, float]:
        out = {
            "gen_s": self.gen_s,
            "exec_s": self.exec_s,
            "rollout_s": self.rollout_s,
            "rollouts": self.rollouts,
        }
        self.gen_s = self.exec_s = self.rollout_s = 0.0
        self.rollouts = 0
        return out


def vllm_generator(trainer: Any, tokenizer: Any, rollout_cfg: RolloutConfig) -> VLLMGenerator:
    """The rollout's generator on TRL's vLLM backend (``trainer.vllm_generation``, weights already synced).

    ``colocate``: this process's engine. ``server``: the main process has TRL's client (which also
    pushes the weights); the other ranks open their own client to the same server for generation only,
    after a barrier so that no rank samples before the main process has pushed this step's weights.
    """
    backend = trainer.vllm_generation
    sampling = {"temperature": trainer.temperature, "top_p": trainer.top_p, "top_k": trainer.top_k}
    if backend.mode == "colocate":
        engine = backend.llm
    else:
        trainer.accelerator.wait_for_everyone()
        engine = getattr(backend, "vllm_client", None)
        if engine is None:  # a non-main rank
            from trl.generation.vllm_client import VLLMClient

            engine = backend._rank_client = getattr(backend, "_rank_client", None) or VLLMClient(
                base_url=backend.server_base_url or f"http://{backend.server_host}:{backend.server_port}",
                connection_timeout=backend.server_timeout,
            )
    return VLLMGenerator(engine, backend.mode, tokenizer, trainer.eos_token_ids, rollout_cfg.format, sampling)


def make_rollout_func(
    provider: Any, rollout_cfg: RolloutConfig, tokenizer: Any, rollout_log: RolloutLog | None = None
) -> Any:
    """A TRL ``rollout_func``: one real mathagent rollout per prompt it is given."""

    def rollout_func(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        from trl.models import unwrap_model_for_generation

        problems = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
        t0 = time.perf_counter()
        args = trainer.args
        if getattr(trainer, "use_vllm", False):  # TRL synced vLLM's weights with the policy just before
            rollouts = run_rollouts(
                problems, vllm_generator(trainer, tokenizer, rollout_cfg), tokenizer, provider, rollout_cfg
            )
        else:
            with unwrap_model_for_generation(
                trainer.model_wrapped,
                trainer.accelerator,
                gather_deepspeed3_params=args.ds3_gather_for_generation,
                generation_kwargs=trainer.generation_kwargs,
                gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs,
            ) as model:
                gen = HFGenerator(model, tokenizer, trainer.generation_config, trainer.eos_token_ids)
                rollouts = run_rollouts(problems, gen, tokenizer, provider, rollout_cfg)
        wall = time.perf_counter() - t0
        if rollout_log is not None:
            gen_s = sum(r.gen_s for r in rollouts)
            exec_s = max((r.exec_s for r in rollouts), default=0.0)  # executions of a round run concurrently
            rollout_log.add(int(trainer.state.global_step) + 1, rollouts, gen_s, min(exec_s, wall), wall)
        return {
            "prompt_ids": [r.prompt_ids for r in rollouts],
            "completion_ids": [r.completion_ids for r in rollouts],
            "logprobs": None,
            "env_mask": [r.env_mask for r in rollouts],
            ROLLOUT_COLUMN: [r.record() for r in rollouts],
        }

    return rollout_func


def _step_callback(out: Path, rollout_log: RolloutLog, is_main: bool) -> Any:
    from transformers import TrainerCallback

    class StepLog(TrainerCallback):
        """``steps.jsonl``: per optimizer step, the time split and the rewards TRL logged for it.

        ``generation_s``: the policy generating (summed over the round batches); ``execution_s``: code
        running in the sandboxes (concurrent within a round); ``train_s``: the rest of the step (rewards,
        log-probabilities, forward/backward and the optimizer update).
        """

        def __init__(self) -> None:
            self.t0 = 0.0
            self.pending: dict[str, Any] | None = None

        def _write(self, rec: dict[str, Any]) -> None:
            if is_main:
                with (out / "steps.jsonl").open("a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if not self.t0:
                self.t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.pending is not None:  # no log arrived for the previous step (logging_steps > 1)
                self._write(self.pending)
            now = time.perf_counter()
            step_s, self.t0 = now - self.t0, now
            r = rollout_log.take()
            rec: dict[str, Any] = {
                "step": state.global_step,
                "step_s": round(step_s, 4),
                "generation_s": round(r["gen_s"], 4),
                "execution_s": round(r["exec_s"], 4),
                "train_s": round(max(0.0, step_s - r["rollout_s"]), 4),
                "rollouts": r["rollouts"],
            }
            if r["rollout_s"] and r["rollouts"]:
                rec["rollouts_per_s"] = round(r["rollouts"] / r["rollout_s"], 4)
            self.pending = rec

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if self.pending is None or not logs:
                return
            keys = ["reward", "reward_std", "loss", "kl", "learning_rate"]
            keys += [f"rewards/{n}/mean" for n in REWARD_NAMES]
            keys += [k for k in logs if k.startswith("rollout/")]
            self._write({**self.pending, **{k: logs[k] for k in keys if k in logs}})
            self.pending = None

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.pending is not None:
                self._write(self.pending)
                self.pending = None

    return [StepLog()]


def build_trainer(
    cfg: GRPORunConfig, provider: Any, callbacks: list[Any] | None = None
) -> tuple[Any, Any, int]:
    """Model, tokenizer, data and ``GRPOTrainer``; returns (trainer, tokenizer, number of problems)."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, set_seed
    from trl import GRPOConfig, GRPOTrainer

    if cfg.format not in FORMATS:
        raise ValueError(f"unknown format {cfg.format!r}; expected one of {', '.join(FORMATS)}")
    vllm_args = vllm_config(cfg)  # before any model is loaded: a missing vllm fails at once
    if cfg.num_generations < 2:
        raise ValueError("GRPO needs at least 2 generations per problem (--num-generations)")
    set_seed(cfg.seed)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    rows, grading = load_rows(cfg)
    model_dir = resolve_model_dir(cfg.model)
    tok = AutoTokenizer.from_pretrained(model_dir)
    if cfg.format == "mathcoder":
        masking.add_mathcoder_tokens(tok)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    model, dtype = load_causal_lm(model_dir, tok, cfg.precision)
    if cfg.format == "mathcoder":  # the message ends at <|endofmessage|>: an end of sequence for TRL too
        publish.mathcoder_eos(model, tok)
    peft_config = lora_config(cfg)
    out = Path(cfg.out)
    extra = {**vllm_args, **cfg.extra}
    args = GRPOConfig(
        **trainer_args(cfg, out, dtype),
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        loss_type=cfg.loss_type,
        reward_weights=cfg.reward_weights.as_list(),
        **extra,
    )
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rollout_log = RolloutLog(out, rank, world, tok)
    rollout_func = make_rollout_func(provider, cfg.rollout_config(grading), tok, rollout_log)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_functions(grading),  # type: ignore[arg-type]
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=peft_config,
        rollout_func=rollout_func,
        callbacks=[*_step_callback(out, rollout_log, rank == 0), *(callbacks or [])],
    )
    return trainer, tok, len(rows)


def train(cfg: GRPORunConfig, callbacks: list[Any] | None = None) -> GRPOResult:
    """Run GRPO and save a ready-to-serve model in ``cfg.out``."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    t0 = time.perf_counter()
    publish.check_push(cfg.push_to_hub)  # fail now, not after training
    vllm_config(cfg)  # a bad --vllm fails before kernels start or models load
    load_rows(cfg)  # so do bad or test data (nothing written yet)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    resume_from = latest_checkpoint(out) if cfg.resume else None
    if cfg.resume and resume_from is None:
        log.warning("--resume: no checkpoint in %s/checkpoints, starting from scratch", out)
    if not cfg.resume:
        for name in ("steps.jsonl", "rollouts.jsonl"):
            (out / name).unlink(missing_ok=True)
    pool = KernelPool(size=max(1, cfg.pool_size))
    try:
        trainer, tok, n_problems = build_trainer(cfg, pool, callbacks)
        trainer.train(resume_from_checkpoint=resume_from)
    finally:
        pool.close()
    steps = (
        [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
        if (out / "steps.jsonl").is_file()
        else []
    )
    rewards = [s["reward"] for s in steps if "reward" in s]
    n = max(1, min(5, len(rewards) // 2))
    result = GRPOResult(
        out_dir=str(out),
        steps=int(trainer.state.global_step),
        seconds=time.perf_counter() - t0,
        problems=n_problems,
        mean_reward_first=sum(rewards[:n]) / n if rewards else None,
        mean_reward_last=sum(rewards[-n:]) / n if rewards else None,
        metrics={k: float(v) for k, v in (trainer.state.log_history[-1] if trainer.state.log_history else {}).items()
                 if isinstance(v, int | float)},
    )  # fmt: skip
    main = trainer.is_world_process_zero()
    result = GRPOResult(
        **{**result.to_dict(), "process_index": trainer.accelerator.process_index, "saved": main}
    )
    # every process: a collective under FSDP / DeepSpeed; only the main one writes
    save_model(trainer, tok, cfg)
    if main:
        publish.write_train_result(out, cfg.to_dict(), result.to_dict())
        publish.write_card(out, manifest(cfg), cfg.to_dict(), result.to_dict())
    trainer.accelerator.wait_for_everyone()
    if main and cfg.push_to_hub:
        publish.push_to_hub(out, cfg.push_to_hub, private=cfg.hub_private)
    return result


def manifest(cfg: GRPORunConfig) -> ModelManifest:
    """``mathagent.json`` of a GRPO model: the rollout format and the agent's stop strings for it."""
    return ModelManifest(cfg.format, tuple(STOP[cfg.format]), base_model=cfg.model, training_format="grpo")


def save_model(trainer: Any, tok: Any, cfg: GRPORunConfig) -> None:
    """Final model (LoRA merged unless ``merge_lora`` is off), tokenizer and ``mathagent.json``."""
    publish.save_model(trainer, tok, cfg.out, manifest(cfg), merge_lora=cfg.lora and cfg.merge_lora)
