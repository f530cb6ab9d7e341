#!/usr/bin/env bash
# Install llama-cpp-python (the bundled models' server) built from its sdist with the CPU flags of
# .ci/ggml_cpu_flags.sh: this machine's instruction sets, without AMX (see there why a native build can
# crash). pip would otherwise build it with -march=native and then reuse that wheel from its cache, so
# the build here bypasses the cache and records what it built in a stamp beside the Python scripts;
# skipped while the installed version and the stamp match. Set LLAMA_CPP_FORCE=1 to rebuild and
# LLAMA_CPP_PYTHON_VERSION to pick another version. ~6.5 min on 2 idle cores.
set -euo pipefail
cd "$(dirname "$0")/.."
ver=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
flags=$(bash .ci/ggml_cpu_flags.sh)
dest=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
stamp="$dest/llama-cpp-python.build"
want="llama-cpp-python==$ver $flags"
have=$(python3 -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))" 2>/dev/null || true)
if [ -z "${LLAMA_CPP_FORCE:-}" ] && [ "$have" = "$ver" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "llama-cpp-python up to date ($want)"
    exit 0
fi
for tool in cmake c++ make; do
    command -v "$tool" >/dev/null 2>&1 || { echo "build_llama_cpp: $tool is missing" >&2; exit 1; }
done
echo "building llama-cpp-python $ver with $flags (a few minutes) ..."
rm -f "$stamp"
# --no-deps: its dependencies (and the [server] extra's) come with `pip install -e .[all]` next
CMAKE_ARGS="$flags" python3 -m pip --disable-pip-version-check -q install --no-cache-dir --force-reinstall \
    --no-deps "llama-cpp-python==$ver"
echo "$want" >"$stamp"
echo "installed llama-cpp-python $ver"
