"""One save path for every trainer (SFT, GRPO): the final model folder, its card, and the hub upload.

:func:`save_model` unwraps the trained model, merges LoRA adapters (unless asked not to), makes
``<|endofmessage|>`` an end of sequence for a MathCoder-format model, and writes the model, the tokenizer
and ``mathagent.json``. :func:`write_train_result` writes ``train_result.json``; :func:`write_card` a
model card (``README.md``); :func:`push_to_hub` uploads the folder (without ``checkpoints/`` and logs) to
a hub model repo. Every process calls :func:`save_model` (it gathers sharded weights, then the main
process writes); the others are called by the main process only.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from mathagent.agent.manifest import ModelManifest
from mathagent.training import tokens as T

log = logging.getLogger(__name__)

PUSH_IGNORE = ("checkpoints/*", "checkpoints/**", "logs/*", "logs/**", "rollouts*.jsonl", "steps.jsonl")
"""Left out of the upload: trainer checkpoints, tracking logs and per-rollout logs (the model, tokenizer,
``mathagent.json``, ``README.md`` and ``train_result.json`` go up)."""


def mathcoder_eos(model: Any, tok: Any) -> None:
    """Add ``<|endofmessage|>`` to the model's ``generation_config.eos_token_id`` (a MathCoder message ends
    there: ``generate`` must stop at it, in training rollouts and when served)."""
    gen = getattr(model, "generation_config", None)
    if gen is None:
        return
    ids = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    eos = {i for i in ids if i is not None}
    eos.add(tok.convert_tokens_to_ids(T.END_MESSAGE))
    gen.eos_token_id = sorted(eos)


def _sharded(accelerator: Any) -> bool:
    """Whether the weights are split across processes (FSDP, DeepSpeed): saving needs a gather then."""
    kind = str(getattr(accelerator, "distributed_type", ""))
    return "FSDP" in kind or "DEEPSPEED" in kind


def save_model(
    trainer: Any, tok: Any, out: str | os.PathLike[str], manifest: ModelManifest, *, merge_lora: bool = True
) -> bool:
    """The trained model (LoRA merged when ``merge_lora``), its tokenizer and ``mathagent.json`` in ``out``.

    Call it on every process: with FSDP or DeepSpeed the full weights are first gathered (a collective),
    then only the main process writes. Returns whether this process wrote. With sharded training a LoRA
    adapter is saved unmerged (merging needs the whole base model on one process)."""
    out = Path(out)
    acc = trainer.accelerator
    model = acc.unwrap_model(trainer.model)
    state_dict = None
    if _sharded(acc):
        state_dict = acc.get_state_dict(trainer.model)  # every rank takes part
        if merge_lora and hasattr(model, "merge_and_unload"):
            log.warning(
                "sharded training: the LoRA adapter is saved unmerged in %s (merge it afterwards)", out
            )
            merge_lora = False
    if not acc.is_main_process:
        return False
    if merge_lora and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if manifest.format == "mathcoder":
        mathcoder_eos(model, tok)
    model.save_pretrained(out, state_dict=state_dict)
    tok.padding_side = "right"  # GRPO pads prompts on the left; the saved tokenizer is the ordinary one
    tok.save_pretrained(out)
    manifest.write(out)
    return True


def write_train_result(out: str | os.PathLike[str], config: dict[str, Any], result: dict[str, Any]) -> Path:
    path = Path(out) / "train_result.json"
    path.write_text(json.dumps({"config": config, "result": result}, indent=2), encoding="utf-8")
    return path


def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()


def write_card(
    out: str | os.PathLike[str], manifest: ModelManifest, config: dict[str, Any], result: dict[str, Any]
) -> Path:
    """``README.md``: a hub model card (YAML header, how it was trained, how to run it)."""
    out = Path(out)
    kind = "GRPO" if manifest.training_format == "grpo" else "SFT"
    tags = ["mathagent", "trl", kind.lower(), "math", "code-interpreter"]
    head = ["---", "library_name: transformers", "pipeline_tag: text-generation", "tags:"]
    head += [f"- {t}" for t in tags]
    if _looks_like_hub_id(manifest.base_model):
        head.append(f"base_model: {manifest.base_model}")
    head.append("---")
    shown = {k: v for k, v in config.items() if k not in ("extra",) and v not in (None, "", {}, [])}
    figures = {k: v for k, v in result.items() if isinstance(v, int | float | str) and k != "out_dir"}
    body = [
        "",
        f"# {out.name}",
        "",
        f"A math reasoning model trained with mathagent ({kind} through TRL) to write Python that a code "
        f"interpreter runs; trace format `{manifest.format}`, stop strings "
        + ", ".join(f"`{s}`" for s in manifest.stop)
        + f". Base model: `{manifest.base_model}`.",
        "",
        "`mathagent.json` tells mathagent the trace format and stop strings, so it runs as is:",
        "",
        "```bash",
        "mathagent solve --model PATH_OR_REPO 'What is 17 * 23?'",
        "```",
        "",
        "## Training",
        "",
        "```json",
        json.dumps(shown, indent=1, default=str),
        "```",
        "",
        "## Result",
        "",
        "```json",
        json.dumps(figures, indent=1, default=str),
        "```",
        "",
    ]
    path = out / "README.md"
    path.write_text("\n".join(head + body), encoding="utf-8")
    return path


class PushError(RuntimeError):
    """The upload to the hub failed (the saved folder is left as it is)."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def check_push(repo_id: str | None) -> None:
    """Fail before training, not after it, when ``--push-to-hub`` cannot work: a malformed repo id, or
    ``HF_HUB_OFFLINE`` set. Raises ``ValueError``."""
    if repo_id is None:
        return
    owner, sep, name = repo_id.partition("/")
    if not sep or not owner or not name or "/" in name or repo_id.startswith((".", "~")) or " " in repo_id:
        raise ValueError(f"--push-to-hub {repo_id!r}: expected a hub repo id 'owner/name'")
    if _offline():
        raise ValueError(
            f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set, nothing can be uploaded (unset it)"
        )


def push_to_hub(
    out: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload the model folder ``out`` (model, tokenizer, ``mathagent.json``, ``README.md``,
    ``train_result.json``; not checkpoints or logs) to the hub model repo ``repo_id``, created when
    missing. The endpoint is ``HF_ENDPOINT``'s; the token ``token`` or the usual ``HF_TOKEN`` / login.
    Returns the commit URL. A failure raises :class:`PushError` naming the repo and the cause; the local
    folder is left as it is."""
    try:
        check_push(repo_id)
    except ValueError as e:
        raise PushError(f"{e} (the model is saved in {out})") from None
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=str(out),
            commit_message=commit_message or f"mathagent: upload {Path(out).name}",
            ignore_patterns=list(PUSH_IGNORE),
        )
    except Exception as e:  # network, auth, server: one clear error, the saved folder stays
        msg = str(e).splitlines()[0] if str(e) else ""
        raise PushError(
            f"push to {repo_id} failed: {type(e).__name__}: {msg} (the model is saved in {out})"
        ) from e
    return str(getattr(info, "commit_url", info))
