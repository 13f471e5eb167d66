"""The multi-task Stacked Hourglass."""

from mtha_tf.model.hourglass import build_model, build_model_for, output_name

__all__ = ["build_model", "build_model_for", "output_name"]
