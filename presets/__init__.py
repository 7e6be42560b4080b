"""Shipped YAML presets (installed as `pc3d_presets`); one file per method x dataset."""
