"""Readers of the public dataset layouts (torch Datasets yielding dicts of tensors).

Every reader validates its folder first and raises `InputError` naming the first missing file.
"""

from pc3d.data.readers.modelnet40 import ModelNet40
from pc3d.data.readers.scanobjectnn import SCAN_VARIANTS, ScanObjectNN
from pc3d.data.readers.shapenet55 import ShapeNet55
from pc3d.data.readers.shapenetpart import ShapeNetPart

__all__ = ["SCAN_VARIANTS", "ModelNet40", "ScanObjectNN", "ShapeNet55", "ShapeNetPart"]
