"""The training engine: one loop for every method (DDP, AMP, schedules, EMA, checkpoints, hub).

Methods subclass `Method` and call `fit(request, build)`; import from the submodules
(`pc3d.engine.method`, `.ema`, `.trainer`, `.checkpoint`, `.hub`) to keep imports light.
"""
