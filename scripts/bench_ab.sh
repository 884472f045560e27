#!/bin/bash
# Side by side: one of `shadowline bench`'s benchmarks on an earlier commit and on this tree, alternating.
#   scripts/bench_ab.sh COMMIT ROUNDS BENCH-ARGUMENTS...
#   e.g. scripts/bench_ab.sh 3c7845f 3 worker --images 200 --threads 2
#        scripts/bench_ab.sh 6aa357d 3 detector --images 100 --threads 1
# The earlier commit is checked out in a temporary git worktree and run with this tree's .venv;
# each run is one round (--rounds 1) in fresh processes, so the two trees take turns.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -lt 3 ]; then sed -n 2,6p "$0" >&2; exit 2; fi
before="$1"; rounds="$2"; shift 2
tree="$(mktemp -d /tmp/shadowline-ab-XXXXXX)"
trap 'git -C "$here" worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"' EXIT
git -C "$here" worktree add --detach -f "$tree" "$before" >/dev/null
run() {  # run TREE: one round of that tree's benchmark
  (cd /tmp && PYTHONPATH="$1" "$here/.venv/bin/python" -c "import sys; from core.cli import main; sys.exit(main())" \
    bench "${@:2}" --rounds 1 2>&1 | grep -v '^path')
}
for round in $(seq "$rounds"); do
  echo "== round $round: $before"; run "$tree" "$@"
  echo "== round $round: this tree"; run "$here" "$@"
done
