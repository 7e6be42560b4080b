"""Backbones and heads (Point-MAE encoder family, ...)."""
