#!/usr/bin/env bash
# How the shipped DEMO classifier (FemurScreen/Resources/Models/classifier-demo) was made, and
# how its synthetic test table in the README was measured. Train and test seeds are disjoint;
# nothing of the test cohort is seen before the model is frozen.
#   bash scripts/train_demo_classifier.sh [WORK_DIR]     (about an hour on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-output/demo-classifier}"
MODEL=FemurScreen/Resources/Models/classifier-demo
mkdir -p "$WORK"

femurscreen phantom "$WORK/train" --cases 60 --seed 1000
femurscreen phantom "$WORK/test" --cases 40 --seed 2000

# Full extraction for training (feature selection needs every feature).
femurscreen extract-features "$WORK/train/cohort.csv" --out "$WORK/train_features.csv" \
    --workers 2 --cache "$WORK/cache"
rm -rf "$MODEL"
femurscreen train-classifier "$WORK/train/cohort.csv" --features "$WORK/train_features.csv" \
    --out "$MODEL" --seed 0 --demo

# The test cohort goes through the inference path: only the model's features (fast path).
femurscreen extract-features "$WORK/test/cohort.csv" --out "$WORK/test_features.csv" \
    --workers 2 --cache "$WORK/cache" --only-features "$MODEL/manifest.json"
femurscreen classify "$WORK/test_features.csv" --model "$MODEL" --truth "$WORK/test/cohort.csv" \
    --out "$WORK/test_predictions.csv"
femurscreen evaluate --predictions "$WORK/test_predictions.csv" \
    --json "$WORK/test_metrics.json" --plot "$WORK/test_roc.png"
