"""Optional libraries that pc3d uses when they are installed and replaces when they are not."""

from __future__ import annotations

import os
from types import ModuleType


def open3d_or_none() -> ModuleType | None:
    """open3d if it imports and PC3D_NO_OPEN3D is unset (or 0), else None.

    The switch lets tests and users exercise the open3d-free paths on a machine that has open3d; an
    OSError counts as missing too, since open3d's wheel fails that way when a system library (libusb,
    libGL) is absent."""
    if os.environ.get("PC3D_NO_OPEN3D", "0") not in ("", "0"):
        return None
    try:
        import open3d
    except (ImportError, OSError):
        return None
    return open3d
