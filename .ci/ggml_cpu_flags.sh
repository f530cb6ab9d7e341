#!/usr/bin/env bash
# CMake flags for the CPU code of llama.cpp (ggml) on this machine: the instruction sets /proc/cpuinfo
# lists, named one by one (GGML_NATIVE=OFF), and never AMX. A native build (-march=native) turns on
# AMX wherever the CPU lists it, and on virtual machines that list AMX without running it (a Xeon
# guest here: amx_tile in /proc/cpuinfo, the kernel grants the tile permission) the first matrix
# product of a Q4_K model dies with a general protection fault on `ldtilecfg`: the llama.cpp server
# exits and every request after it fails. AMX speeds up only batched int8 products on many threads;
# on a few cores the AVX-512 / AVX2 kernels do the work either way.
set -euo pipefail
if [ "$(uname -m)" != "x86_64" ]; then echo "-DGGML_NATIVE=ON"; exit 0; fi  # AMX is x86 only
# GGML_CPUINFO: another cpuinfo file to read (tests)
flags=" $(grep -m1 '^flags' "${GGML_CPUINFO:-/proc/cpuinfo}" 2>/dev/null | cut -d: -f2) "
has() { [[ "$flags" == *" $1 "* ]]; }
on() { if has "$1"; then echo "-D$2=ON"; else echo "-D$2=OFF"; fi; }
args=(-DGGML_NATIVE=OFF)
args+=("$(on sse4_2 GGML_SSE42)" "$(on avx GGML_AVX)" "$(on avx2 GGML_AVX2)" "$(on fma GGML_FMA)")
args+=("$(on f16c GGML_F16C)" "$(on bmi2 GGML_BMI2)" "$(on avx_vnni GGML_AVX_VNNI)")
if has avx512f && has avx512cd && has avx512vl && has avx512dq && has avx512bw; then
    args+=(-DGGML_AVX512=ON "$(on avx512vbmi GGML_AVX512_VBMI)" "$(on avx512_vnni GGML_AVX512_VNNI)")
    args+=("$(on avx512_bf16 GGML_AVX512_BF16)")
else
    args+=(-DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF)
fi
args+=(-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
echo "${args[*]}"
