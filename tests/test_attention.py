"""t5edu.attention against torch.nn.functional.scaled_dot_product_attention (fp32, atol 1e-6)."""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

import t5edu
from t5edu.attention import scaled_dot_product_attention

ATOL = 1e-6


def qkv(b=2, h=3, tq=5, tk=7, d=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, tq, d, generator=g, dtype=dtype)
    k = torch.randn(b, h, tk, d, generator=g, dtype=dtype)
    v = torch.randn(b, h, tk, d, generator=g, dtype=dtype)
    return q, k, v


def padding_to_float(mask):
    return torch.zeros(mask.shape, dtype=torch.float32).masked_fill(~mask.bool(), float("-inf"))[
        :, None, None, :
    ]


@pytest.mark.parametrize("tq,tk", [(5, 5), (1, 9), (4, 11), (7, 7)])
@pytest.mark.parametrize("scale", [None, 1.0, 0.3])
def test_plain_matches_pytorch(tq, tk, scale):
    q, k, v = qkv(tq=tq, tk=tk)
    want = F.scaled_dot_product_attention(q, k, v, scale=scale)
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, scale=scale), want, atol=ATOL, rtol=0
    )


@pytest.mark.parametrize("tq,tk", [(6, 6), (1, 8), (3, 10)])
def test_causal_bottom_right_matches_pytorch_lower_right(tq, tk):
    q, k, v = qkv(tq=tq, tk=tk)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(tq, tk))
    got = scaled_dot_product_attention(q, k, v, causal=True)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_causal_with_one_query_sees_every_key():
    q, k, v = qkv(tq=1, tk=6)
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, causal=True),
        scaled_dot_product_attention(q, k, v),
        atol=0,
        rtol=0,
    )


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.long, torch.int32])
def test_padding_mask_and_bias_match_pytorch(mask_dtype):
    q, k, v = qkv(tq=5, tk=7)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3]).to(mask_dtype)
    bias = torch.randn(1, 3, 5, 7)
    want = F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias + padding_to_float(mask), scale=1.0
    )
    got = scaled_dot_product_attention(q, k, v, bias=bias, attention_mask=mask, scale=1.0)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_padding_plus_causal_matches_pytorch():
    q, k, v = qkv(tq=4, tk=6)
    mask = torch.tensor([[1] * 6, [1] * 5 + [0]])
    tri = torch.zeros(4, 6).masked_fill(~causal_lower_right(4, 6)._materialize(), float("-inf"))
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=tri + padding_to_float(mask))
    got = scaled_dot_product_attention(q, k, v, attention_mask=mask, causal=True)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("bias_shape", [(7,), (5, 7), (3, 5, 7), (2, 1, 5, 7), (1, 3, 1, 7)])
def test_bias_broadcast_shapes(bias_shape):
    q, k, v = qkv(tq=5, tk=7)
    if len(bias_shape) == 1:
        with pytest.raises(ValueError, match="bias"):
            scaled_dot_product_attention(q, k, v, bias=torch.randn(bias_shape))
        return
    bias = torch.randn(bias_shape)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.expand(2, 3, 5, 7))
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, bias=bias), want, atol=ATOL, rtol=0
    )


def test_fully_masked_rows_give_zeros_and_zero_grads():
    q, k, v = qkv(tq=3, tk=4)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    out = scaled_dot_product_attention(q, k, v, attention_mask=mask)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(q.grad[1], torch.zeros_like(q.grad[1]))
    assert torch.equal(v.grad[0, :, 2:], torch.zeros_like(v.grad[0, :, 2:]))


def test_gradients_match_pytorch():
    q, k, v = qkv(tq=4, tk=6, dtype=torch.float64)
    bias = torch.randn(1, 3, 4, 6, dtype=torch.float64)
    ours = [t.clone().requires_grad_() for t in (q, k, v, bias)]
    ref = [t.clone().requires_grad_() for t in (q, k, v, bias)]
    scaled_dot_product_attention(*ours[:3], bias=ours[3], causal=True).square().sum().backward()
    tri = torch.zeros(4, 6, dtype=torch.float64).masked_fill(
        ~causal_lower_right(4, 6)._materialize(), float("-inf")
    )
    F.scaled_dot_product_attention(*ref[:3], attn_mask=ref[3] + tri).square().sum().backward()
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=0)


def test_gradcheck():
    q, k, v = (t.double().requires_grad_() for t in qkv(b=1, h=2, tq=3, tk=4, d=4))
    bias = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0]])
    assert torch.autograd.gradcheck(
        lambda q, k, v, b: scaled_dot_product_attention(
            q, k, v, bias=b, attention_mask=mask, causal=True
        ),
        (q, k, v, bias),
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_keeps_dtype_and_is_close(dtype):
    q, k, v = qkv()
    got = scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), causal=True)
    assert got.dtype == dtype
    want = scaled_dot_product_attention(q, k, v, causal=True)
    torch.testing.assert_close(got.float(), want, atol=3e-2, rtol=0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(k=torch.randn(2, 3, 7, 8)), r"k must be .*head_dim=16.*\(2, 3, 7, 8\)"),
        (dict(k=torch.randn(2, 4, 7, 16)), r"k must be .*heads=3"),
        (dict(v=torch.randn(2, 3, 6, 16)), r"v must be .*\(2, 3, 6, 16\)"),
        (dict(q=torch.randn(3, 5, 16)), r"q must be \(batch, heads, len, head_dim\).*\(3, 5, 16\)"),
        (
            dict(attention_mask=torch.ones(2, 5, dtype=torch.long)),
            r"attention_mask .*\(2, 7\).*\(2, 5\)",
        ),
        (
            dict(attention_mask=torch.ones(2, 7)),
            r"attention_mask must be bool or an integer.*float32",
        ),
        (dict(bias=torch.randn(2, 3, 4, 7)), r"bias must broadcast .*\(2, 3, 4, 7\)"),
    ],
)
def test_bad_input_raises_value_error_naming_it(kwargs, match):
    q, k, v = qkv(tq=5, tk=7)
    args = dict(q=q, k=k, v=v) | kwargs
    q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
    with pytest.raises(ValueError, match=match):
        scaled_dot_product_attention(q, k, v, **args)


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_backend_matches_reference(causal):
    q, k, v = qkv(tq=4, tk=6)
    mask = torch.tensor([[1] * 6, [0] * 6])
    bias = torch.randn(1, 3, 4, 6)
    want = scaled_dot_product_attention(q, k, v, bias=bias, attention_mask=mask, causal=causal)
    got = t5edu.attention(q, k, v, bias=bias, attention_mask=mask, causal=causal, backend="sdpa")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_unknown_backend_is_named():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="backend must be one of .*'nope'"):
        t5edu.attention(q, k, v, backend="nope")


def test_multi_head_attention_matches_torch_multihead():
    torch.manual_seed(0)
    d_model, heads = 32, 4
    ours = t5edu.MultiHeadAttention(d_model, heads, bias=True)
    ref = torch.nn.MultiheadAttention(d_model, heads, bias=True, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.k.weight, ours.v.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.k.bias, ours.v.bias]))
        ref.out_proj.weight.copy_(ours.o.weight)
        ref.out_proj.bias.copy_(ours.o.bias)
    x = torch.randn(2, 6, d_model)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    want, _ = ref(x, x, x, key_padding_mask=~mask.bool(), need_weights=False)
    torch.testing.assert_close(ours(x, attention_mask=mask), want, atol=1e-6, rtol=0)


def test_multi_head_attention_rejects_indivisible_width():
    with pytest.raises(ValueError, match="d_model=30 is not divisible by num_heads=4"):
        t5edu.MultiHeadAttention(30, 4)


@pytest.mark.parametrize("backend", ["naive", "sdpa"])
def test_mask_values_other_than_0_1_are_refused(backend):
    q, k, v = qkv(tq=3, tk=4)
    mask = torch.tensor([[1, 1, 2, 0], [1, 0, 0, 0]])
    with pytest.raises(ValueError, match=r"attention_mask must hold only 0/1.*\[2\]"):
        t5edu.attention(q, k, v, attention_mask=mask, backend=backend)
