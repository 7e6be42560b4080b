"""2D foundation models behind small interfaces (CLIP, open-vocabulary detectors, SAM).

Submodules are imported on demand (`from pc3d.foundation.clip import ClipEncoder`), so importing this package
never pulls in transformers.
"""
