#!/usr/bin/env bash
# One 10-epoch arm of the model v3 screen: training/screen3_e10_<NAME>.json (tc2: the core's
# loss term weighted 2; ds2: deep supervision on two decoder stages), 3-fold CV scored with
# its final weights, to set against outputs/screen3_e10_last. Resumable as
# bench/schedule_screen.sh (a killed fold continues at its last finished epoch).
#   nice -n 19 bench/screen_arm.sh tc2
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
name="${1:?give the arm: tc2 or ds2}"
python bench/cross_validation.py --cache cache/brats27 --data outputs/data27 \
    --config "training/screen3_e10_${name}.json" --runs "runs/screen3_e10_${name}" \
    --out "outputs/screen3_e10_${name}_last" --folds 3 --checkpoint last
