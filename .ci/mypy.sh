#!/usr/bin/env bash
# mypy over the whole package. The top-level folders install as `mathagent.agent`, `mathagent.evals`...
# (setup.py); an editable install maps them with an import hook mypy does not follow, so mypy reads
# them through a temporary `mathagent/` folder of symlinks to this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/mathagent"
for top in sandbox agent evals training; do
    ln -s "$PWD/$top" "$tmp/mathagent/$top"
done
MYPYPATH="$tmp" python3 -m mypy --namespace-packages --explicit-package-bases -p mathagent
