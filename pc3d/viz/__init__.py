"""Visualisation: label palettes and PNG previews of point clouds (numpy splatting, no display needed)."""
