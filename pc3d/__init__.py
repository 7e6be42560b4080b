"""pc3d: a command-line toolkit for 3D point-cloud deep learning."""

__version__ = "0.1.0"
