#!/usr/bin/env bash
# The model v3 schedule screen: 3-fold CV of the patch + EMA recipe at 10, 30 and 60 epochs,
# each scored with its final weights and with their moving average. Resumable: a killed run
# continues at its last finished epoch, finished folds are skipped.
#   nice -n 19 bench/schedule_screen.sh   (after `bratseg cache` of the 27 cases into cache/brats27
#   and their folders linked under outputs/data27)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for epochs in 10 30 60; do
    for weights in ema last; do
        python bench/cross_validation.py --cache cache/brats27 --data outputs/data27 \
            --config "training/screen3_e${epochs}.json" --runs "runs/screen3_e${epochs}" \
            --out "outputs/screen3_e${epochs}_${weights}" --folds 3 --checkpoint "$weights"
    done
done
