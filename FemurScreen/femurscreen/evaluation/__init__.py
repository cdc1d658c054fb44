"""Measuring the pipeline: the paper's classification statistics and segmentation metrics."""
