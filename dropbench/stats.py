"""Kept for train.py's import of expected_calibration_error: the statistics live in dropbench.report.stats."""

from .report.stats import expected_calibration_error

__all__ = ["expected_calibration_error"]
