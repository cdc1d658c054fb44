"""Synthetic CT phantom of the hips: the data every other part of FemurScreen trains and
tests on, since no clinical CT with DXA labels is available to the project.

Each case is a low-dose-like CT of the pelvis and proximal femurs built from randomised
analytic anatomy (signed-distance primitives in world millimetres, LPS), painted with tissue
HU, trabecular texture, partial volume, point-spread blur and correlated noise, together with
the exact label map of both proximal femurs. Bone density, cortical thickness and trabecular
texture follow the case's T-score, with noise and confounders so that no single number reads
the bone status.

Label definition ("proximal femur"):
    All femoral bone (cortex, trabecular bone and marrow cavity) from the top of the femoral
    head down to the axial plane (constant world z) lying
    PROXIMAL_FEMUR_CUT_BELOW_LESSER_TROCHANTER_MM = 30 mm below the lowest point of that
    femur's lesser trochanter. The acetabulum, the joint space and the metal of an implant
    outside the bone are not included (metal inside the bone is). Label 1 is the patient's
    LEFT femur (world +x in LPS), label 2 the patient's RIGHT femur, 0 background. A voxel
    belongs to a femur when its centre lies inside the femur's surface and on or above the
    cut plane.

Modules: anatomy (parameters per case from seed and T-score), shapes (distance primitives),
bones / soft (the structures), texture (trabecular network), grid (geometry and
orientations), render / bone_paint (voxelisation, blur, noise), case (one case), cohort
(writing a cohort).
"""

from __future__ import annotations

from femurscreen.phantom.anatomy import PROXIMAL_FEMUR_CUT_BELOW_LESSER_TROCHANTER_MM
from femurscreen.phantom.case import PhantomOptions, make_case, phantom_grid, prepare
from femurscreen.phantom.cohort_writer import (
    CSV_COLUMNS,
    case_seed,
    make_cohort,
    read_cohort,
    sample_t_score,
)
from femurscreen.phantom.grid import LPS, RAS, SIGNED_PERMUTATIONS, Grid

__all__ = [
    "CSV_COLUMNS",
    "LPS",
    "PROXIMAL_FEMUR_CUT_BELOW_LESSER_TROCHANTER_MM",
    "RAS",
    "SIGNED_PERMUTATIONS",
    "Grid",
    "PhantomOptions",
    "case_seed",
    "make_case",
    "make_cohort",
    "phantom_grid",
    "prepare",
    "read_cohort",
    "sample_t_score",
]
