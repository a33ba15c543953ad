"""Triton kernels for FlashAttention with an additive, learnable bias (chapter 9).

Importing `t5edu.kernels` does not import Triton: the kernels load on first use, so the rest of
`t5edu` works where Triton is missing. On a CPU the kernels run only under Triton's interpreter:
set `TRITON_INTERPRET=1` before the first use (Triton decides when a kernel is defined).
"""

from __future__ import annotations

import importlib.util


def triton_available() -> bool:
    """True when the `triton` package can be imported (it does not say a GPU is present)."""
    return importlib.util.find_spec("triton") is not None


def triton_flash_attention(q, k, v, **kwargs):
    """Lazy entry point to `t5edu.kernels.triton_attention.triton_flash_attention` (see there).

    Raises:
        ImportError: when Triton is not installed (with the install command).
    """
    if not triton_available():
        raise ImportError(
            "the Triton kernels need the `triton` package (pip install 't5edu[triton]'); "
            "use backend='flash' for the same algorithm in plain PyTorch"
        )
    from t5edu.kernels.triton_attention import triton_flash_attention as fn

    return fn(q, k, v, **kwargs)


def triton_t5_flash_attention(q, k, v, bias_table, **kwargs):
    """Lazy entry point to `t5edu.kernels.t5_bias_flash.triton_t5_flash_attention` (see there):
    FlashAttention with T5's bias gathered from its `(num_buckets, heads)` table in-kernel.

    Raises:
        ImportError: when Triton is not installed (with the install command).
    """
    if not triton_available():
        raise ImportError(
            "the Triton kernels need the `triton` package (pip install 't5edu[triton]'); "
            "use t5edu.t5_flash_attention for the same algorithm in plain PyTorch"
        )
    from t5edu.kernels.t5_bias_flash import triton_t5_flash_attention as fn

    return fn(q, k, v, bias_table, **kwargs)


__all__ = ["triton_available", "triton_flash_attention", "triton_t5_flash_attention"]
