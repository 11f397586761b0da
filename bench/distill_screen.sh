#!/usr/bin/env bash
# Distillation arm of the model v3 screen: 3-fold CV of a student trained with the 10-epoch
# recipe (training/screen3_e10.json) on half expert label, half teacher probabilities. The
# teachers of fold K's student never saw fold K's cases, so the CV figure is honest:
#   arms:   the fold-K models of the screen's finished arms (e10, e30, tc2, ds2), all trained
#           on the student's own 18 cases (an ensemble of recipes);
#   nested: three models per fold trained with the same recipe on two thirds of the student's
#           cases each (`bratseg train --fold K --inner-fold J`), as nnU-Net trains its folds.
# Resumable: finished models, soft targets and folds are skipped, a killed run resumes.
#   nice -n 19 bench/distill_screen.sh arms     (then: nested)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
kind="${1:?give the teachers: arms or nested}"
cache=cache/brats27
root="runs/screen3_distill_${kind}"
mkdir -p "$root"
for fold in 0 1 2; do
    teachers=()
    if [ "$kind" = arms ]; then
        for arm in screen3_e10 screen3_e30 screen3_e10_tc2 screen3_e10_ds2; do
            if [ -f "runs/$arm/fold_$fold/model_last/model.safetensors" ]; then
                teachers+=("runs/$arm/fold_$fold/model_last")
            fi
        done
    else
        for inner in 0 1 2; do
            run="$root/teachers/fold_$fold/inner_$inner"
            if [ ! -f "$run/model_last/model.safetensors" ]; then
                python -m bratseg train --cache "$cache" --out "$run" --config training/screen3_e10.json \
                    --fold "$fold" --num-folds 3 --inner-fold "$inner" --inner-num-folds 3 --resume
                python -m bratseg export "$run" --out "$run/model_last" --checkpoint last
            fi
            teachers+=("$run/model_last")
        done
    fi
    soft="$root/soft_targets_fold_$fold.npy"
    if [ ! -f "$soft" ]; then
        python -m bratseg soft-targets --cache "$cache" --models "${teachers[@]}" --out "$soft" \
            --fold "$fold" --num-folds 3 --quiet
    fi
    config="$root/student_fold_$fold.json"
    python - "$soft" "$config" <<'PY'
import json, sys
recipe = json.load(open("training/screen3_e10.json"))
recipe.update(soft_targets=sys.argv[1], soft_target_weight=0.5)
open(sys.argv[2], "w").write(json.dumps(recipe, indent=2) + "\n")
PY
    python bench/cross_validation.py --cache "$cache" --data outputs/data27 --config "$config" \
        --runs "$root/students" --out "outputs/screen3_e10_distill_${kind}_last" --folds 3 --checkpoint last \
        --only "$fold"
done
