"""Benchmarks of t5edu against HF Transformers and the hardware limit (chapter 12).

Run `python -m t5edu.bench {model,generate,attention,norm,all} [--device] [--dtype] [--quick]
[--out FILE.json]`. Submodules: `timing` (alternating medians, peak memory), `machine` (the
machine record), `flops` (model FLOPs, measured and vendor peaks, MFU), one module per
benchmark, and `report` (tables).
"""
