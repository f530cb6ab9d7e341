"""The llama.cpp build flags of .ci/ggml_cpu_flags.sh: this CPU's instruction sets, and never AMX (a
native build with AMX dies on its first Q4_K product on guests that list AMX without running it)."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "ggml_cpu_flags.sh"

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="the flags are named on x86-64 only")

SAPPHIRE = (
    "fpu sse4_2 avx avx2 fma f16c bmi2 avx_vnni avx512f avx512cd avx512vl avx512dq avx512bw avx512vbmi "
    "avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"
)


def flags(tmp_path: Path, cpu_flags: str) -> dict[str, str]:
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {cpu_flags}\n\nprocessor\t: 1\nflags\t\t: {cpu_flags}\n")
    out = subprocess.run(
        ["bash", str(SCRIPT)], env={"GGML_CPUINFO": str(info), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return dict(arg.removeprefix("-D").split("=") for arg in out)


def test_an_amx_cpu_gets_its_avx512_and_no_amx(tmp_path):
    got = flags(tmp_path, SAPPHIRE)
    assert got["GGML_NATIVE"] == "OFF"  # -march=native would turn AMX back on
    assert {got[k] for k in ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")} == {"OFF"}
    for k in ("GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_AVX512", "GGML_AVX512_VNNI", "GGML_AVX512_BF16"):
        assert got[k] == "ON", k


def test_an_avx2_cpu_gets_no_avx512(tmp_path):
    got = flags(tmp_path, "fpu sse4_2 avx avx2 fma f16c bmi2")
    assert got["GGML_AVX2"] == "ON" and got["GGML_AVX512"] == "OFF" and got["GGML_AVX512_VNNI"] == "OFF"
    # AVX-512 needs all five of F, CD, VL, DQ, BW: one missing turns it off
    partial = flags(tmp_path, "avx avx2 fma f16c avx512f avx512cd avx512vl avx512dq")
    assert partial["GGML_AVX512"] == "OFF" and partial["GGML_AVX2"] == "ON"


def test_this_machine_gets_no_amx():
    out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, check=True).stdout
    assert "-DGGML_AMX_INT8=OFF" in out and "-DGGML_NATIVE=OFF" in out
