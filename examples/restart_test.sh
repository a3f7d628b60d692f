#!/usr/bin/env bash
# The flagship killed mid-training and restarted (ctest fashion_mnist_restart): 3 ranks over
# TCP; rank 1 kills itself with SIGKILL after step 45 (mid-epoch, one step into a local-SGD
# period; the last checkpoint is step 40), distopt-launch --restarts 1 starts every rank again
# with the same command line, and they continue from the checkpoints. The run must complete
# with the uninterrupted run's final parameters (their CRC32C), test accuracy, loss and bytes.
#   examples/restart_test.sh LAUNCHER FASHION_MNIST WORK_DIR
set -euo pipefail
launch=$1 flagship=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work"
args=(--transport tcp --configs local4,ef-topk --epochs 2 --train-samples 3000 --hidden 16 --batch 32)
"$launch" -n 3 -- "$flagship" "${args[@]}" --csv reference.csv >reference.log 2>&1
DISTOPT_KILL_AT_STEP=45:1 "$launch" -n 3 --restarts 1 -- "$flagship" "${args[@]}" --csv resumed.csv \
  --checkpoint-every 10 --resume checkpoints >resumed.log 2>&1
final() { grep -o '[a-z0-9-]* *final parameters: CRC32C [0-9a-f]*' "$1" || true; }
echo "uninterrupted:"; final reference.log
echo "restarted:"; final resumed.log
grep -q 'restarting every rank (restart 1 of 1)' resumed.log || { echo "no restart happened"; exit 1; }
[ "$(final resumed.log | grep -c local4)" = 1 ] || { echo "local4 did not finish exactly once"; exit 1; }
[ -n "$(final reference.log)" ] && [ "$(final reference.log)" = "$(final resumed.log)" ] || exit 1
# configuration, epoch, test accuracy, test loss, bytes sent per worker (not the times)
diff <(cut -d, -f1-5 reference.csv) <(cut -d, -f1-5 resumed.csv)
echo "the restarted run equals the uninterrupted run"
