"""``--config FILE``: a command's flags from a YAML, TOML or JSON file, or from a run's ``header.json``.

Keys are the flags' destinations (``max_rounds``; ``max-rounds`` is accepted too), so every flag a
command has, including one added to :data:`mathagent.agent.flags.FLAGS` later, works in a file with no
further edit. The file's values become the parser's defaults before the command line is parsed, so
flags given on the command line override the file. A key the command has no flag for is an error that
names the file and the key (with the nearest flag names); a value of the wrong type is an error too.

A run folder's ``header.json`` (``mathagent eval``, ``mathagent generate``) is read as the settings
that run was made with: its ``settings`` (every flag's value, recorded since this module exists), or,
for older headers, its ``identity`` mapped onto flag names (:func:`header_settings`). What a header
holds besides settings is ignored: see :data:`HEADER_NOT_SETTINGS` and :data:`NOT_REPRODUCED`.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mathagent.agent.config import AgentConfig

log = logging.getLogger(__name__)

NOT_REPRODUCED = frozenset({"config", "run_dir", "out", "force", "json", "retry_failed", "help"})
"""Flags a header's recorded settings leave out: where a run writes and how it prints are not how it
runs (give ``--run-dir`` / ``--out`` on the command line; reusing the old folder would only resume it)."""

HEADER_NOT_SETTINGS = (
    "schema_version",
    "created",
    "cwd",
    "resumed",
    "git_revision",
    "package_versions",
    "prompt_hashes",
    "argv",
    "sandbox_level",
    "mode",
    "vote_weights",
    "models",
    "identity.dataset",
    "identity.grading_dataset",
    "identity.kind",
)
"""Header fields that are records, not settings, and are ignored: times, code and package versions,
prompt hashes (the prompts are the installed package's), the data file's hash, and values derived from
the settings (``mode``, the vote weights resolved for the model)."""

AGENT_FIELD_FLAGS = {"cell_timeout": "timeout"}
""":class:`AgentConfig` fields whose flag has another name (old headers only)."""


class ConfigError(ValueError):
    """A config file cannot be used; the message names the file and the key."""


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` (shown in ``--help``; read by :func:`parse_args`)."""
    action = parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="read flags from a YAML/TOML/JSON file or a run's header.json; command-line flags win",
    )
    action.config_layer = True  # type: ignore[attr-defined]  # marks the parsers parse_args fills


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with the ``--config`` file's values as defaults.

    A parser with subcommands (``train sft``) applies the file to the subcommand named in ``argv``.
    Errors (unreadable file, unknown key, wrong type) exit with status 2 like any bad flag.
    """
    argv = list(argv)
    target, offset = _target(parser, argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv[offset:])
    if known.config and any(getattr(a, "config_layer", False) for a in target._actions):
        try:
            apply_config(target, load_config(known.config, target), known.config)
        except ConfigError as e:
            target.error(str(e))
    return parser.parse_args(argv)


def _target(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.ArgumentParser, int]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for i, tok in enumerate(argv):
                if tok in action.choices:
                    return action.choices[tok], i + 1
    return parser, 0


def _dests(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        a.dest: a
        for a in parser._actions
        if a.dest not in ("help", argparse.SUPPRESS) and not isinstance(a, argparse._SubParsersAction)
    }


def read_file(path: str | Path) -> dict[str, Any]:
    """The mapping a config file holds (by suffix: ``.toml``, ``.yaml``/``.yml``, ``.json``)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"--config {p}: cannot read it ({e.strerror or e})") from None
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            data = _toml().loads(raw.decode("utf-8"))
        elif suffix in (".yaml", ".yml"):
            import yaml  # lazy: only YAML config files need it

            data = yaml.safe_load(raw.decode("utf-8"))
        elif suffix == ".json":
            data = json.loads(raw.decode("utf-8"))
        else:
            raise ConfigError(f"--config {p}: unknown file type {suffix!r} (use .toml, .yaml, .yml or .json)")
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - every parser's own error type, reported the same way
        raise ConfigError(f"--config {p}: not valid {suffix[1:].upper()}: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {p}: the file must hold a mapping of flag names to values")
    return data


def _toml() -> Any:
    try:
        import tomllib  # lazy: Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]  # lazy: the backport (a dependency on 3.10)
        except ModuleNotFoundError:
            raise ConfigError("TOML config files need Python 3.11+ or `pip install tomli`") from None
    return tomllib


def is_run_header(data: Mapping[str, Any]) -> bool:
    return isinstance(data.get("identity"), dict) and "schema_version" in data


def load_config(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The file's settings keyed by ``parser``'s destinations (a run header is mapped first)."""
    data = read_file(path)
    if not is_run_header(data):
        return data
    summary = Path(path).with_name("summary.json")
    settings = header_settings(data, _read_json(summary) if summary.is_file() else None)
    dests = _dests(parser)
    keep = {k: v for k, v in settings.items() if k in dests and k not in NOT_REPRODUCED}
    other = sorted(set(settings) - set(keep) - NOT_REPRODUCED)
    if other:
        log.info("--config %s: settings this command has no flag for, ignored: %s", path, ", ".join(other))
    return keep


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def header_settings(header: Mapping[str, Any], summary: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The settings a run header records, keyed by flag destination.

    New headers carry ``settings`` (the parsed flags). Older ones are mapped from ``identity.config``
    (and its ``extra``, ``extra.agent``) and ``filters``, and ``--prune`` from the run's ``summary``
    when given (it is not part of the identity); an agent setting that differs from the default and
    has no flag is logged as a warning (the reproduced run may differ there).
    """
    cwd = header.get("cwd")
    if isinstance(header.get("settings"), dict):
        out = dict(header["settings"])
    else:
        out = _identity_settings(header)
        prune = ((summary or {}).get("prune") or {}).get("on")
        if isinstance(prune, bool):
            out["prune"] = prune
    return {k: _rebase(v, cwd) for k, v in out.items()}


def _identity_settings(header: Mapping[str, Any]) -> dict[str, Any]:
    ident = header.get("identity") or {}
    config = dict(ident.get("config") or {})
    extra = dict(config.pop("extra", None) or {})
    agent = dict(extra.pop("agent", None) or {})
    out: dict[str, Any] = {}
    defaults = AgentConfig().to_dict()
    for name, value in agent.items():  # lowest priority: the resolved agent config
        dest = str(AGENT_FIELD_FLAGS.get(str(name)) or name)
        out[dest] = value
        if name not in ("format", "temperature", "seed", "verify", "max_rounds", "mode", "verify_prompt"):
            if name in defaults and value != defaults[name]:
                log.warning(
                    "run header: agent setting %s=%r was recorded; pass it if this command can", name, value
                )
    for key in ("filters",):
        for name, value in (header.get(key) or {}).items():
            out[name] = value
    out.update(extra)
    out.update(config)
    dataset = ident.get("dataset") or {}
    if ident.get("kind") == "mathagent-generate":  # generate records the file's name; its path is the setting
        path = dataset.get("path")
        out["problems"] = path if path and config.get("dataset") == Path(path).stem else config.get("dataset")
    return out


def _rebase(value: Any, cwd: str | None) -> Any:
    """A relative file path recorded in a header, made absolute against the run's working directory
    when it does not exist here but does there."""
    if not (isinstance(value, str) and cwd) or not value or Path(value).is_absolute():
        return value
    if not ("/" in value or Path(value).suffix):
        return value
    there = Path(cwd) / value
    return str(there) if not Path(value).exists() and there.exists() else value


def apply_config(parser: argparse.ArgumentParser, values: Mapping[str, Any], source: str | Path) -> None:
    """Validate ``values`` against ``parser``'s flags and make them its defaults (a flag given by the
    file is no longer required on the command line)."""
    dests = _dests(parser)
    for key, value in values.items():
        dest = str(key).replace("-", "_").lstrip("_")
        if dest == "config":
            raise ConfigError(f"{source}: key 'config': a config file cannot name another config file")
        action = dests.get(dest)
        if action is None:
            near = difflib.get_close_matches(dest, [d for d in dests if d != "config"], n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""
            raise ConfigError(f"{source}: unknown key {key!r} for `{parser.prog}`{hint}")
        action.default = _convert(action, value, f"{source}: key {key!r}")
        action.required = False


def _convert(action: argparse.Action, value: Any, where: str) -> Any:
    if value is None:  # "not given": every flag's own default may be None
        return None
    if isinstance(action, argparse._StoreConstAction) or isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        if isinstance(action, argparse._StoreConstAction) and not isinstance(action.const, bool):
            raise ConfigError(f"{where}: this flag takes no value in a file")
        return value
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        items = value if isinstance(value, list) else None
        if items is None:
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_scalar(action, v, where) for v in items]
    return _scalar(action, value, where)


def _scalar(action: argparse.Action, value: Any, where: str) -> Any:
    kind = action.type
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{where}: expected a single value, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        value = float(value)
    elif callable(kind):
        try:
            value = kind(value if isinstance(value, str) else str(value))
        except (argparse.ArgumentTypeError, TypeError, ValueError) as e:
            raise ConfigError(f"{where}: {e}") from None
    elif not isinstance(value, str) or isinstance(value, bool):
        raise ConfigError(f"{where}: expected text, got {value!r}")
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def recorded_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed flags as a run header records them (``settings``), for ``--config header.json``."""
    out = {}
    for k, v in sorted(vars(args).items()):
        if k in NOT_REPRODUCED:
            continue
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[k] = v
    return out


# -- flags derived from a config dataclass -------------------------------------------------------
def field_docs(cls: type) -> dict[str, str]:
    """The docstrings written under a dataclass's fields (the string right after ``name: type = ...``)."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    out: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            out[node.target.id] = " ".join(nxt.value.value.split())
    return out


def add_dataclass_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    exclude: Sequence[str] = (),
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """One ``--field-name`` flag per field of the dataclass ``cls``: type, default and help from the
    field (its annotation, default and docstring), so a new field is one edit. Fields without a default
    are required; a bool field is ``--x`` (default false) or ``--x/--no-x`` (default true).
    ``overrides`` adds or replaces ``add_argument`` keywords per field. Returns the field names added."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    names = []
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        kind = hints.get(f.name)
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        base = args[0] if len(args) == 1 else kind
        kwargs: dict[str, Any] = {"help": re_backticks(docs.get(f.name, "")) or None}
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if has_default:
            factory: Any = f.default_factory
            kwargs["default"] = f.default if f.default is not dataclasses.MISSING else factory()
        else:
            kwargs["required"] = True
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if kwargs.get("default") else "store_true"
        elif base in (int, float):
            kwargs["type"] = base
        kwargs.update((overrides or {}).get(f.name, {}))
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kwargs)
        names.append(f.name)
    return names


def re_backticks(doc: str) -> str:
    """reStructuredText double backticks as single ones, and ``%`` escaped, for ``--help``."""
    return doc.replace("``", "`").replace("%", "%%")


def check_dataclass_values(cls: type, data: Mapping[str, Any], source: str | Path) -> None:
    """Raise :class:`ConfigError` for a key that is not a field of ``cls`` (with the nearest names) or
    a value whose type does not fit the field's annotation (bool, int, float, str, and ``X | None``)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key, value in data.items():
        if key not in hints or key not in names:
            near = difflib.get_close_matches(str(key), names, n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""
            raise ConfigError(f"{source}: unknown key {key!r}{hint}")
        kind = hints[key]
        options = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
        if value is None and type(None) in typing.get_args(kind):
            continue
        base: Any = options[0] if len(options) == 1 else None
        ok = {
            bool: lambda v: isinstance(v, bool),
            int: lambda v: isinstance(v, int) and not isinstance(v, bool),
            float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            str: lambda v: isinstance(v, str),
        }.get(base)
        if ok is not None and not ok(value):
            raise ConfigError(f"{source}: key {key!r}: expected {base.__name__}, got {value!r}")
