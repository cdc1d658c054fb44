"""The classical (training-free) engine: world grids, femoral heads, femur per side.

``engine.ClassicalEngine`` is the entry point; the others are its steps.
"""
