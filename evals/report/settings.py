"""A run's settings (its header) as readable rows, and its mode."""

from __future__ import annotations

import shlex
from typing import Any

MODES = ("cot", "pot", "loop", "loop+verify")

_RUN_KEYS = (
    ("mode", "mode"),
    ("dataset", "data set"),
    ("limit", "problems (limit)"),
    ("k", "samples per problem (k)"),
    ("seed", "seed"),
    ("temperature", "temperature"),
    ("verify", "self-verification"),
    ("weights", "vote weights T,U,F"),
    ("prune", "pruning"),
    ("model", "model"),
    ("backend", "backend"),
    ("base_url", "server"),
    ("format", "code format"),
    ("max_rounds", "max rounds"),
)


def config_of(header: dict[str, Any]) -> dict[str, Any]:
    return dict(header.get("identity", {}).get("config", {}) or {})


def run_mode(header: dict[str, Any]) -> str:
    """The run's ablation mode (``cot``, ``pot``, ``loop``, ``loop+verify``).

    Looked up in order: the header's top-level ``mode``, ``config.mode``, the agent settings (agent
    ``mode`` ``loop`` with verification on is ``loop+verify``); older runs have none of these and
    count as ``loop+verify`` when verification was on, else ``loop``."""
    cfg = config_of(header)
    for src in (header, cfg):
        if src.get("mode"):
            return str(src["mode"])
    agent = (cfg.get("extra") or {}).get("agent")
    if isinstance(agent, dict) and agent.get("mode"):
        mode = str(agent["mode"])
        return "loop+verify" if mode == "loop" and agent.get("verify", True) else mode
    return "loop+verify" if cfg.get("verify", True) else "loop"


def fmt_value(v: Any) -> str:
    """One setting as text: yes/no, "—" for unset, lists and dicts spelled out."""
    if v is None or v == "" or v == {} or v == []:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt_value(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt_value(x)}" for k, x in v.items())
    return str(v)


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def settings_rows(header: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(section, name, value)`` rows: the run's settings, then the agent's, then provenance.
    Every field of the header appears once; nothing is dropped."""
    cfg = config_of(header)
    ident = header.get("identity", {}) or {}
    extra = dict(cfg.pop("extra", None) or {})
    agent = extra.pop("agent", None) or {}
    rows: list[tuple[str, str, str]] = [("run", "mode", run_mode(header))]
    cfg.pop("mode", None)
    for key, label in _RUN_KEYS[1:]:
        if key in cfg:
            rows.append(("run", label, fmt_value(cfg.pop(key))))
    ds = ident.get("dataset") or {}
    if isinstance(ds, dict):
        for k, v in ds.items():
            v = v[:12] if k == "sha256" and isinstance(v, str) else v
            rows.append(("run", f"data set {k}", fmt_value(v)))
    if ident.get("grading_dataset"):
        rows.append(("run", "graded as", fmt_value(ident["grading_dataset"])))
    rows += [("run", k, fmt_value(v)) for k, v in _flatten(cfg)]
    rows += [("run", k, fmt_value(v)) for k, v in _flatten(extra)]
    rows += [("agent", k, fmt_value(v)) for k, v in _flatten(agent)]
    vw = header.get("vote_weights")
    if isinstance(vw, dict):  # the weights the run's votes used, and where they came from
        rows.append(
            ("run", "vote weights used", f"{fmt_value(vw.get('weights'))} ({fmt_value(vw.get('source'))})")
        )
        if vw.get("calibration"):
            rows.append(("run", "calibration file", fmt_value(vw["calibration"])))
    skip = ("identity", "schema_version", "mode", "vote_weights" if isinstance(vw, dict) else "")
    prov = {k: v for k, v in header.items() if k not in skip}
    if prov.get("argv") is not None and isinstance(prov["argv"], list):
        prov["argv"] = "mathagent eval " + shlex.join(str(a) for a in prov["argv"])
    if isinstance(prov.get("resumed"), list):
        r = prov["resumed"]
        prov["resumed"] = f"{len(r)} time(s), last {r[-1]}" if r else None
    if isinstance(prov.get("package_versions"), dict):
        prov["package_versions"] = " · ".join(f"{k} {v or '—'}" for k, v in prov["package_versions"].items())
    if isinstance(prov.get("prompt_hashes"), dict):
        prov["prompt_hashes"] = {k: str(v)[:12] for k, v in prov["prompt_hashes"].items()}
    for k, v in prov.items():
        if isinstance(v, dict) and k != "prompt_hashes":
            rows += [("provenance", f"{k}.{kk}", fmt_value(vv)) for kk, vv in _flatten(v)]
        else:
            rows.append(("provenance", k.replace("_", " "), fmt_value(v)))
    return rows
