"""Triton GPU kernels for pc3d's hot ops (installed as `pc3d_kernels`).

Each kernel has a plain-torch twin in `pc3d.ops`; the ops dispatch here for CUDA tensors
when Triton is importable, and tests run every kernel under TRITON_INTERPRET=1 on the CPU.
"""
