#!/bin/bash
# The edge install against the full one, as README "The edge install" reports them: each into a
# fresh virtual environment in /tmp from the local package cache (size on disk, install time),
# then the cold start of each (`shadowline worker --until-empty` with one phone queued), 3 rounds
# alternating.   scripts/measure_edge_install.sh [PYTHON]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${1:-python3.11}"
work="$(mktemp -d /tmp/shadowline-install-XXXXXX)"
trap 'rm -rf "$work"' EXIT
git clone -q "$here" "$work/src"
seconds() { local start end; start=$(date +%s.%N); "$@" >/dev/null 2>&1; end=$(date +%s.%N); echo "$end - $start" | bc; }
"$python" -m venv "$work/runtime"
echo "runtime only (pip install .): $(seconds "$work/runtime/bin/pip" install -q "$work/src") s, $(du -sh "$work/runtime" | cut -f1)"
"$python" -m venv "$work/full"
full() { "$work/full/bin/pip" install -q torch==2.14.1 torchvision==0.29.1 && "$work/full/bin/pip" install -q "$work/src[train]"; }
echo "full (torch, then .[train]): $(seconds full) s, $(du -sh "$work/full" | cut -f1)"
for round in 1 2 3; do
  for install in runtime full; do
    data="$work/data-$install-$round"
    export SHADOWLINE_DATA_DIR="$data" SHADOWLINE_MODELS_DIR="$work/src/models" SHADOWLINE_ADMIN_PASSWORD=cold-start-pass
    "$work/$install/bin/shadowline" init >/dev/null
    "$work/$install/bin/shadowline" simulate --line line-1 --count 1 --inspector none >/dev/null
    echo "cold start, $install, round $round: $(seconds "$work/$install/bin/shadowline" worker --until-empty --threads 1) s"
  done
done
