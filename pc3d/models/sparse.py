"""spconv, imported once and quietly.

Importing spconv 2.3 emits deprecation warnings about torch.cuda.amp decorators and a torch.fx
notice that users can do nothing about; they would otherwise precede every command's output.
"""

from __future__ import annotations

import logging
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    fx_log = logging.getLogger("torch.fx._symbolic_trace")
    level = fx_log.level
    fx_log.setLevel(logging.ERROR)
    try:
        import spconv.pytorch as spconv
        from spconv.core import ConvAlgo
    finally:
        fx_log.setLevel(level)

__all__ = ["ConvAlgo", "spconv"]
