#!/usr/bin/env bash
# The main job, as `make demo` runs it: screen the bundled sample data end to end.
#  1. make one synthetic hip CT on the spot (femurscreen phantom),
#  2. screen it and the real sample CT (TotalSegmentator, Apache-2.0) with femurscreen screen,
#  3. write the real CT as a DICOM series and screen it with --dicom (SEG, SR, report capture),
#  4. print where the reports are.
# Models are the shipped DEMO models (trained on synthetic phantoms): not for clinical use.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-output/demo}"
mkdir -p "$OUT"

echo "== 1/4  a synthetic hip CT (phantom, seed 7)" >&2
femurscreen phantom "$OUT/phantom" --cases 1 --seed 7
PHANTOM_CT="$OUT/phantom/case_0000/ct.nii.gz"
femurscreen info "$PHANTOM_CT"

echo "== 2/4  screening the phantom" >&2
femurscreen screen "$PHANTOM_CT" --out "$OUT/phantom-screen"

echo "== 3/4  screening the real sample CT (left femur holds a metal implant)" >&2
femurscreen screen FemurScreen/Resources/SampleData/totalseg_example_ct.nii.gz \
    --out "$OUT/real-screen"

echo "== 4/4  the real CT as a DICOM series, screened with DICOM SEG + SR out" >&2
python - "$OUT/real-dicom-series" <<'PY'
import sys
import SimpleITK as sitk
from femurscreen.dicom.series import write_ct_series

ct = sitk.ReadImage("FemurScreen/Resources/SampleData/totalseg_example_ct.nii.gz")
files = write_ct_series(ct, sys.argv[1])
print(f"{len(files)} DICOM slices written (a made-up demo patient)", file=sys.stderr)
PY
femurscreen screen "$OUT/real-dicom-series" --out "$OUT/real-dicom-screen" --dicom

echo
echo "Reports (open in a browser):"
echo "  phantom:   $OUT/phantom-screen/report.html"
echo "  real CT:   $OUT/real-screen/report.html"
echo "DICOM SEG, SR and report capture (send them to a PACS, or load them in Slicer's DICOM module):"
echo "  $OUT/real-dicom-screen/dicom/"
