#!/bin/bash
# Side by side: `shadowline bench worker` of an earlier commit against this tree, alternating rounds.
#   scripts/bench_worker_ab.sh COMMIT [ROUNDS] [IMAGES] [THREADS]
# The earlier commit is checked out in a temporary git worktree and run with this tree's .venv.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
before="${1:?usage: scripts/bench_worker_ab.sh COMMIT [ROUNDS] [IMAGES] [THREADS]}"
rounds="${2:-3}"; images="${3:-200}"; threads="${4:-2}"
tree="$(mktemp -d /tmp/shadowline-ab-XXXXXX)"
trap 'git -C "$here" worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"' EXIT
git -C "$here" worktree add --detach -f "$tree" "$before" >/dev/null
python="$here/.venv/bin/python"
run() {  # run TREE: one round of that tree's bench worker
  (cd /tmp && PYTHONPATH="$1" "$python" -c "import sys; from core.cli import main; sys.exit(main())" \
    bench worker --images "$images" --rounds 1 --threads "$threads" --model "$1/models/scratch-v2" 2>&1 | grep -v '^path')
}
for round in $(seq "$rounds"); do
  echo "== round $round: $before"; run "$tree"
  echo "== round $round: this tree"; run "$here"
done
