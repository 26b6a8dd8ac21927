#!/usr/bin/env bash
# One stage of the second study (issue 26): continue `rolekd run` in run/ for at most MINUTES (default 110), then
# stop it; run it again (next session, fresh machine) to continue. The run folder is committed between stages
# (.gitignore: no checkpoints but the stage-α teachers', no search states), so a stage resumes from the last
# finished training and search; a training or search cut off by the time limit starts again.
#
#   bash docs/results/study2_cifar10/stage.sh [MINUTES]      # from the repository root
#
# It runs the code of the checkout it is started from, with the data made by ../shared/data/make_cifar10.py.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
minutes="${1:-110}"
data="${ROLEKD_DATA:-$HOME/.cache/rolekd}"
[ -d "$data/cifar-10-batches-py" ] || python3 "$here/../../../../shared/data/make_cifar10.py" "$data"
resume=()
[ -f "$here/run/config.yaml" ] && resume=(--resume)
echo "=== stage started $(date -u +%FT%TZ), commit $(git -C "$here" rev-parse --short HEAD), limit ${minutes} min" \
  | tee -a "$here/run.log"
timeout --signal=INT --kill-after=60 "${minutes}m" \
  rolekd run cpu/study2_cifar10_resnet8_w4a4 --data-dir "$data" --out "$here/run" "${resume[@]}" 2>&1 \
  | tee -a "$here/run.log"
rc=${PIPESTATUS[0]}
echo "=== stage ended $(date -u +%FT%TZ), exit $rc$([ "$rc" = 124 ] && echo ' (time limit: continue with the next stage)')" \
  | tee -a "$here/run.log"
