#!/usr/bin/env bash
# The main job, as `make demo` runs it: screen the bundled sample data end to end.
#  1. make one synthetic hip CT on the spot (femurscreen phantom),
#  2. screen it and the real sample CT (TotalSegmentator, Apache-2.0) with femurscreen screen,
#  3. print where the reports are.
# Models are the shipped DEMO models (trained on synthetic phantoms): not for clinical use.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-output/demo}"
mkdir -p "$OUT"

echo "== 1/3  a synthetic hip CT (phantom, seed 7)" >&2
femurscreen phantom "$OUT/phantom" --cases 1 --seed 7
PHANTOM_CT="$OUT/phantom/case_0000/ct.nii.gz"
femurscreen info "$PHANTOM_CT"

echo "== 2/3  screening the phantom" >&2
femurscreen screen "$PHANTOM_CT" --out "$OUT/phantom-screen"

echo "== 3/3  screening the real sample CT (left femur holds a metal implant)" >&2
femurscreen screen FemurScreen/Resources/SampleData/totalseg_example_ct.nii.gz \
    --out "$OUT/real-screen"

echo
echo "Reports (open in a browser):"
echo "  phantom:   $OUT/phantom-screen/report.html"
echo "  real CT:   $OUT/real-screen/report.html"
