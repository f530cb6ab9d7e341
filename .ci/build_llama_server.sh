#!/usr/bin/env bash
# Build llama.cpp's own server (llama-server: parallel slots, continuous batching) from the llama.cpp
# sources that the llama-cpp-python sdist vendors, for the llama-cpp-python version installed here,
# and install the binary beside the Python scripts (where mathagent looks for it first).
#
# Only the package registry is used (pip fetches the sdist; pip's cache keeps it). No prebuilt binary,
# no web UI download (LLAMA_USE_PREBUILT_UI=OFF). Skipped when the installed binary was built from the
# same version and still runs. ~5 min on 2 idle cores; set LLAMA_SERVER_DEST to install elsewhere and
# LLAMA_SERVER_FORCE=1 to rebuild.
set -euo pipefail

ver=$(python3 -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))")
dest=${LLAMA_SERVER_DEST:-$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')}
bin="$dest/llama-server"
stamp="$dest/llama-server.build"
flags=$(bash "$(dirname "$0")/ggml_cpu_flags.sh")  # this CPU's instruction sets, no AMX (see there)
want="llama-cpp-python==$ver vendor/llama.cpp llama-server $flags"
if [ -z "${LLAMA_SERVER_FORCE:-}" ] && [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] \
    && "$bin" --version >/dev/null 2>&1; then
    echo "llama-server up to date: $bin ($want)"
    exit 0
fi
for tool in cmake c++ make; do
    command -v "$tool" >/dev/null 2>&1 || { echo "build_llama_server: $tool is missing" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/llama-server-build-XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 -m pip --disable-pip-version-check -q download --no-deps --no-binary :all: \
    "llama-cpp-python==$ver" -d "$work"
tar xzf "$work"/llama_cpp_python-"$ver".tar.gz -C "$work"
src="$work/llama_cpp_python-$ver/vendor/llama.cpp"
[ -f "$src/tools/server/server.cpp" ] || { echo "build_llama_server: no tools/server in $src" >&2; exit 1; }
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_OPENSSL=OFF $flags >"$work/cmake.log" 2>&1 || { tail -30 "$work/cmake.log" >&2; exit 1; }
echo "building llama-server from llama-cpp-python $ver (a few minutes) ..."
cmake --build "$work/build" --target llama-server -j"$(nproc)" >"$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log" >&2; exit 1; }
mkdir -p "$dest"
install -m 755 "$work/build/bin/llama-server" "$bin.tmp"
mv -f "$bin.tmp" "$bin"
echo "$want" >"$stamp"
"$bin" --version 2>&1 | head -2
echo "installed $bin"
