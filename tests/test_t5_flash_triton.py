"""The Triton T5-bias FlashAttention kernels (`t5edu.kernels.t5_bias_flash`) against the PyTorch
version `t5edu.t5_flash.t5_flash_attention` (itself tested against the naive reference in
tests/test_t5_flash.py): outputs and the gradients of q, k, v and the table, fp32, atol 1e-5.

Without CUDA the kernels run on the CPU under Triton's interpreter; the `kernels` fixture sets
TRITON_INTERPRET=1 and imports the kernel modules fresh, as in tests/test_triton_kernels.py (see
its docstring for why), and drops them again at teardown. The interpreter is slow: tiny shapes.
"""

import importlib
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from t5edu.t5_flash import t5_flash_attention

pytest.importorskip("triton", reason="the Triton kernels need the triton package")

ATOL = 1e-5
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
KERNEL_MODULES = [
    "t5edu.kernels.t5_bias_flash",
    "t5edu.kernels.triton_attention",
    "t5edu.kernels.flash_bwd",
    "t5edu.kernels.flash_fwd",
]


def _drop_kernel_modules():
    for name in KERNEL_MODULES:
        sys.modules.pop(name, None)


def _interpret_triton_helpers(mp):
    """Interpreted twins of Triton's jit'd helpers if `triton` was imported before the variable."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    for name in ("max", "sum", "zeros"):
        fn = getattr(tl, name)
        if isinstance(fn, JITFunction):
            mp.setattr(tl, name, InterpretedFunction(fn.fn))


@pytest.fixture(scope="module")
def kernels():
    """The `t5edu.kernels.t5_bias_flash` module, interpreted on the CPU, compiled on CUDA."""
    mp = pytest.MonkeyPatch()
    if not CUDA:
        mp.setenv("TRITON_INTERPRET", "1")
        _interpret_triton_helpers(mp)
    _drop_kernel_modules()
    module = importlib.import_module("t5edu.kernels.t5_bias_flash")
    assert module.INTERPRETED == (not CUDA)
    yield module
    mp.undo()
    _drop_kernel_modules()


def make(b, h, tq, tk, d, num_buckets, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, t, d, generator=g) for t in (tq, tk, tk))
    table = torch.randn(num_buckets, h, generator=g)
    return [t.to(DEVICE) for t in (q, k, v, table)]


def out_and_grads(fn, q, k, v, table, **kw):
    leaves = [t.clone().requires_grad_() for t in (q, k, v, table)]
    out = fn(*leaves, **kw)
    w = torch.cos(torch.arange(out.numel(), device=out.device)).reshape(out.shape)
    (out.float() * w).sum().backward()
    return [out.detach()] + [t.grad for t in leaves]


def check(kernels, case, block=16, atol=ATOL, **kw):
    want = out_and_grads(t5_flash_attention, *case, block_q=5, block_k=7, **kw)
    got = out_and_grads(kernels.triton_t5_flash_attention, *case, block_m=block, block_n=block,
                        **kw)  # fmt: skip
    for name, g, w in zip(["out", "dq", "dk", "dv", "dtable"], got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype, name
        assert not torch.isnan(g).any(), f"{name} has NaN"
        torch.testing.assert_close(g, w, atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    return got


def test_encoder_with_left_padding_hiding_the_first_key_tile(kernels):
    """Bidirectional buckets, keys 0..16 padded (the first 16-wide key tile fully masked), one
    sequence with no visible key, lengths not multiples of 16."""
    case = make(2, 2, 19, 37, 16, 32)
    am = torch.ones(2, 37, dtype=torch.long, device=DEVICE)
    am[:, :17] = 0
    am[1] = 0
    out, dq, *_ = check(kernels, case, bidirectional=True, num_buckets=32, max_distance=20,
                        attention_mask=am)  # fmt: skip
    assert (out[1] == 0).all() and (dq[1] == 0).all()


def test_decoder_cached_step_and_q_len_above_k_len(kernels):
    """Causal buckets: one query after 30 cached keys (offset 30); then Tq > Tk (rows that see
    no key)."""
    kw = dict(bidirectional=False, num_buckets=16, max_distance=24, causal=True)
    check(kernels, make(2, 3, 1, 31, 16, 16, seed=1), offset=30, **kw)
    check(kernels, make(1, 2, 21, 9, 16, 16, seed=2), **kw)


@settings(max_examples=5, deadline=None, derandomize=True)
@given(
    tq=st.integers(1, 20),
    tk=st.integers(1, 20),
    d=st.sampled_from([16, 32]),
    bidirectional=st.booleans(),
    causal=st.booleans(),
    offset=st.integers(0, 30),
    masked=st.booleans(),
)
def test_hypothesis_shapes(kernels, tq, tk, d, bidirectional, causal, offset, masked):
    am = None
    if masked:
        am = torch.ones(2, tk, dtype=torch.bool, device=DEVICE)
        am[0, : tk // 2] = False
    check(kernels, make(2, 2, tq, tk, d, 8), bidirectional=bidirectional, num_buckets=8,
          max_distance=12, causal=causal, offset=offset, attention_mask=am)  # fmt: skip


def test_float16_inputs_with_a_float32_table(kernels):
    """fp16 q, k, v (fp16 tl.dot, fp32 accumulation), fp32 table: within 1e-2 of the fp32
    PyTorch version; the table's gradient stays fp32."""
    case = make(2, 2, 13, 21, 16, 8)
    kw = dict(bidirectional=False, num_buckets=8, max_distance=12, causal=True, offset=8)
    want = out_and_grads(t5_flash_attention, *case, **kw)
    half = [t.half() for t in case[:3]] + [case[3]]
    got = out_and_grads(kernels.triton_t5_flash_attention, *half, block_m=16, block_n=16, **kw)
    assert got[0].dtype == torch.float16 and got[4].dtype == torch.float32
    for name, g, w in zip(["out", "dq", "dk", "dv", "dtable"], got, want, strict=True):
        torch.testing.assert_close(g.float(), w, atol=2e-2, rtol=1e-2,
                                   msg=lambda m, n=name: f"{n}: {m}")  # fmt: skip


def test_frozen_table(kernels):
    q, k, v, table = make(1, 2, 7, 9, 16, 8)
    qg = q.clone().requires_grad_()
    out = kernels.triton_t5_flash_attention(qg, k, v, table, bidirectional=True, num_buckets=8,
                                            max_distance=12)  # fmt: skip
    out.sum().backward()
    assert qg.grad is not None and table.grad is None


def test_bad_inputs(kernels):
    f = kernels.triton_t5_flash_attention
    q, k, v, table = make(1, 2, 4, 5, 16, 8)
    kw = dict(bidirectional=True, num_buckets=8, max_distance=12)
    with pytest.raises(ValueError, match=r"bias_table must be \(num_buckets, heads\) = \(8, 2\)"):
        f(q, k, v, table.t(), **kw)
    with pytest.raises(ValueError, match="block_m must be a power of two >= 16; got block_m=24"):
        f(q, k, v, table, block_m=24, **kw)
    with pytest.raises(ValueError, match="q must be float16, bfloat16 or float32"):
        f(q.double(), k.double(), v.double(), table, **kw)
    with pytest.raises(ValueError, match="offset must be an int >= 0"):
        f(q, k, v, table, offset=-2, **kw)
