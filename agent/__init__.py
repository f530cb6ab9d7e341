"""mathagent.agent: the reasoning loop, traces and their formats, model backends, and the CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mathagent")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0+unknown"
