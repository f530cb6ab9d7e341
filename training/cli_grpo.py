"""``mathagent train grpo``: reinforcement learning with real rollouts (see :mod:`mathagent.training.grpo`).

    mathagent train grpo --data gsm8k_train.jsonl --limit 64 --model smollm2-135m --out runs/g1 \\
        --num-generations 4 --max-steps 50 --lr 1e-6

Flags map one to one onto :class:`~mathagent.training.grpo.GRPORunConfig`; ``--config FILE`` (JSON)
gives the same fields, flags given on the command line win. ``--grpo-arg KEY=VALUE`` passes any other
``GRPOConfig`` field (the value is read as JSON when it parses, else as a string).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mathagent.agent.configfile import check_dataclass_values, read_file
from mathagent.evals.testsets import ALLOW_TEST_HELP
from mathagent.training.grpo import GRPORunConfig, train
from mathagent.training.publish import PushError
from mathagent.training.rewards import RewardWeights


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grpo", help="GRPO with the interpreter in the loop (TRL's GRPOTrainer)")
    a = p.add_argument
    a("--config", help="JSON, YAML or TOML file of GRPORunConfig fields (flags given here override it)")
    a(
        "--data",
        help="training problems: JSONL (GSM8K rows, question/problem + answer/gold) or a data set name",
    )
    a("--model", help="model directory, .gguf file, bundled name (smollm2-135m) or cached hub id")
    a("--out", help="output directory (model, tokenizer, mathagent.json, checkpoints/, steps.jsonl)")
    a("--format", choices=("markdown", "mathcoder"), help="trace format of the rollouts (default markdown)")
    a("--grading", help="grading policy: gsm8k, math, ... (default: from the data set)")
    a("--limit", type=int, help="use only the first N problems")
    a("--shuffle", action="store_true", default=None, help="shuffle the problems (seeded) before --limit")
    a(
        "--allow-test",
        action="store_true",
        default=None,
        help=ALLOW_TEST_HELP,
    )
    a("--num-generations", type=int, help="group size: rollouts per problem (default 4)")
    a("--batch-size", type=int, help="completions per device per micro-batch (default 4)")
    a("--grad-accum", type=int)
    a("--max-steps", type=int)
    a("--epochs", type=float)
    a("--lr", type=float, help="learning rate (default 1e-6)")
    a("--beta", type=float, help="KL coefficient (default 0: no reference model)")
    a("--epsilon", type=float, help="clip range (default 0.2)")
    a("--loss-type", help="TRL loss type: dapo (default), grpo, dr_grpo, bnpo, ...")
    a("--temperature", type=float)
    a("--top-p", type=float)
    a("--top-k", type=int)
    a("--max-completion-length", type=int, help="tokens per rollout, execution output included (default 512)")
    a("--max-rounds", type=int, help="most code executions per rollout (default 4)")
    a("--cell-timeout", type=float)
    a("--view-chars", type=int, help="most characters of an execution result shown to the policy")
    a("--system-prompt", help="shipped prompt name (default: the format's own)")
    a("--reward-correct", type=float, help="weight of the grader's 0/1 (default 1)")
    a("--reward-format", type=float, help="weight of: a code block ran and an answer was given (default 0)")
    a("--reward-fabricated", type=float, help="weight of the -1 for fabricated output (default 0)")
    a("--reward-exec-error", type=float, help="weight of minus the failed share of executions (default 0)")
    a("--lora", action="store_true", default=None)
    a("--lora-r", type=int)
    a("--lora-alpha", type=int)
    a("--no-merge", action="store_true", default=None, help="save base + adapter instead of the merged model")
    a("--precision", choices=("auto", "bf16", "fp32"))
    a("--gradient-checkpointing", action="store_true", default=None)
    a("--torch-threads", type=int, help="torch.set_num_threads for the trainer process")
    a("--seed", type=int)
    a("--save-steps", type=int)
    a("--logging-steps", type=int)
    a("--warmup-ratio", type=float)
    a("--resume", action="store_true", default=None, help="continue from the newest checkpoint in OUT")
    a("--report-to", help="none, tensorboard, wandb, trackio (comma-separated)")
    a("--pool-size", type=int, help="kernels kept warm for the rollouts (default 4)")
    a(
        "--vllm",
        choices=("colocate", "server"),
        help="generate the rollouts with vLLM through TRL (GPU, `pip install trl[vllm]`; see docs/training.md)",
    )
    a("--vllm-server-host", help="server mode: host of `trl vllm-serve` (default 0.0.0.0)")
    a("--vllm-server-port", type=int, help="server mode: its port (default 8000)")
    a("--vllm-server-base-url", help="server mode: its URL (overrides host and port)")
    a("--vllm-server-timeout", type=float, help="server mode: seconds to wait for it (default 240)")
    a(
        "--vllm-gpu-memory-utilization",
        type=float,
        help="colocate mode: GPU memory share of vLLM (default 0.3)",
    )
    a("--vllm-tensor-parallel-size", type=int, help="colocate mode: GPUs per engine (only 1 is supported)")
    a("--vllm-max-model-length", type=int, help="colocate mode: the engine's context length")
    a("--push-to-hub", metavar="OWNER/NAME", help="upload the finished model folder to this hub model repo")
    a("--hub-private", action="store_true", default=None, help="create the hub repo private")
    a("--grpo-arg", action="append", default=[], metavar="KEY=VALUE", help="any other GRPOConfig field")
    a("--json", action="store_true", help="print the result as JSON")


_FIELDS = (
    "data model out format grading limit shuffle allow_test num_generations batch_size grad_accum max_steps epochs lr "
    "beta epsilon loss_type temperature top_p top_k max_completion_length max_rounds cell_timeout view_chars "
    "system_prompt lora lora_r lora_alpha precision gradient_checkpointing torch_threads seed save_steps logging_steps warmup_ratio resume "
    "report_to pool_size vllm vllm_server_host vllm_server_port vllm_server_base_url vllm_server_timeout "
    "vllm_gpu_memory_utilization vllm_tensor_parallel_size vllm_max_model_length push_to_hub hub_private"
).split()


def config_from_args(args: argparse.Namespace) -> Any:
    """A :class:`GRPORunConfig` from the config file (if any) and the flags."""
    base: dict[str, Any] = {}
    if args.config:  # GRPORunConfig fields, as JSON, YAML or TOML
        base = read_file(args.config)
        check_dataclass_values(GRPORunConfig, base, args.config)
    for name in _FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            base[name] = value
    if args.no_merge:
        base["merge_lora"] = False
    weights = dict(base.get("reward_weights") or {})
    for part in ("correct", "format", "fabricated", "exec_error"):
        value = getattr(args, f"reward_{part}")
        if value is not None:
            weights[part] = value
    base["reward_weights"] = RewardWeights(**weights)
    extra = dict(base.get("extra") or {})
    for item in args.grpo_arg:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--grpo-arg {item!r}: expected KEY=VALUE")
        try:
            extra[key] = json.loads(raw)
        except json.JSONDecodeError:
            extra[key] = raw
    base["extra"] = extra
    missing = [k for k in ("data", "model", "out") if not base.get(k)]
    if missing:
        raise ValueError("missing " + ", ".join(f"--{k}" for k in missing) + " (flag or --config)")
    return GRPORunConfig.from_dict(base)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except (ValueError, TypeError, OSError) as e:
        print(f"mathagent train grpo: {e}", file=sys.stderr)
        return 2
    try:
        result = train(cfg)
    except (ValueError, FileNotFoundError, PushError) as e:
        print(f"mathagent train grpo: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    first = "n/a" if result.mean_reward_first is None else f"{result.mean_reward_first:.3f}"
    last = "n/a" if result.mean_reward_last is None else f"{result.mean_reward_last:.3f}"
    print(
        f"trained {result.steps} GRPO steps on {result.problems} problems, mean reward first {first} "
        f"-> last {last}, {result.seconds:.0f} s -> {result.out_dir}"
    )
    print(f"run it: mathagent solve --model {result.out_dir} 'What is 2+3?'")
    return 0
