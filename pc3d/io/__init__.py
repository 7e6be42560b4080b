"""Point clouds, labels, calibration and images: readers and writers validated at the edge.

Names are re-exported lazily so that `import pc3d.io.atomic` (used by the CLI) stays free of numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PointCloud": "pc3d.io.pointcloud",
    "read_point_cloud": "pc3d.io.pointcloud",
    "write_point_cloud": "pc3d.io.pointcloud",
    "read_mesh": "pc3d.io.mesh",
    "sample_mesh": "pc3d.io.mesh",
    "read_image": "pc3d.io.images",
    "write_image": "pc3d.io.images",
    "read_labels": "pc3d.io.labels",
    "write_labels": "pc3d.io.labels",
    "read_kitti_bin": "pc3d.io.kitti",
    "write_kitti_bin": "pc3d.io.kitti",
    "read_kitti_label": "pc3d.io.kitti",
    "write_kitti_label": "pc3d.io.kitti",
    "read_kitti_calib": "pc3d.io.kitti",
    "write_kitti_calib": "pc3d.io.kitti",
    "read_kitti_poses": "pc3d.io.kitti",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pc3d.io' has no attribute {name!r}")
