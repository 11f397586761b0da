#!/usr/bin/env bash
# The tumour-core arm of the model v3 screen: the 10-epoch recipe with the core's loss term
# weighted 2 (region_loss_weights WT 1, TC 2, ET 1), 3-fold CV scored with its final weights,
# to set against outputs/screen3_e10_last. Resumable as bench/schedule_screen.sh.
#   nice -n 19 bench/tc_screen.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python bench/cross_validation.py --cache cache/brats27 --data outputs/data27 \
    --config training/screen3_e10_tc2.json --runs runs/screen3_e10_tc2 \
    --out outputs/screen3_e10_tc2_last --folds 3 --checkpoint last
