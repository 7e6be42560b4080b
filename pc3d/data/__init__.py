"""Datasets: label tables of the public formats, layout writers, readers and the embedded synthetic data."""
