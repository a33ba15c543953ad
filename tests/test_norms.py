"""RMSNorm family and norm registry vs torch, HF and hand-written references (chapter 5)."""

import pytest
import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.t5.modeling_t5 import T5LayerNorm

from t5edu import (
    NORMS,
    AdaptiveRMSNorm,
    FastRMSNorm,
    GroupRMSNorm,
    LayerNorm,
    RMSNorm,
    build_norm,
    fast_rms_norm,
    saved_tensor_bytes,
)

SHAPES = [(5, 8), (2, 3, 16), (2, 1, 3, 12)]
HALF = [torch.float16, torch.bfloat16]


def random_weight(mod, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mod.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return mod


def inputs(shape, seed=0, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype) * 3 + 0.5


# ---- RMSNorm against independent implementations ---------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_rmsnorm_matches_torch_and_hf(shape, eps):
    d = shape[-1]
    ours = random_weight(RMSNorm(d, eps=eps))
    refs = [torch.nn.RMSNorm(d, eps=eps), LlamaRMSNorm(d, eps=eps), T5LayerNorm(d, eps=eps)]
    x = inputs(shape)
    for ref in refs:
        ref.weight.data.copy_(ours.weight.data)
        torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("cls", [RMSNorm, FastRMSNorm])
def test_rmsnorm_gradients_match_torch(cls):
    x = inputs((3, 4, 16))
    ours, ref = random_weight(cls(16)), torch.nn.RMSNorm(16, eps=1e-6)
    ref.weight.data.copy_(ours.weight.data)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = inputs((3, 4, 16), seed=5)
    (ours(xa) * g).sum().backward()
    (ref(xb) * g).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", sorted(NORMS))
def test_registry_norms_keep_half_dtype(name, dtype):
    norm = build_norm(name, 8, eps=1e-6)
    x = inputs((2, 3, 8), dtype=dtype)
    y = norm(x)
    assert y.dtype == dtype
    assert torch.isfinite(y.float()).all()


@pytest.mark.parametrize("dtype", HALF)
def test_rmsnorm_half_matches_float32_within_rounding(dtype):
    x = inputs((4, 32), dtype=dtype)
    want = torch.nn.RMSNorm(32, eps=1e-6)(x.float())
    for norm in (RMSNorm(32), FastRMSNorm(32), GroupRMSNorm(32, 1)):
        got = norm(x)
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), want, atol=0, rtol=torch.finfo(dtype).eps)


def test_rmsnorm_half_weight_matches_hf_t5_bitwise():
    x = inputs((3, 16), dtype=torch.bfloat16)
    ours, ref = RMSNorm(16).bfloat16(), T5LayerNorm(16).bfloat16()
    random_weight(ours)
    ref.weight.data.copy_(ours.weight.data)
    assert torch.equal(ours(x), ref(x))
    fast = FastRMSNorm(16).bfloat16()
    fast.weight.data.copy_(ours.weight.data)
    assert torch.equal(fast(x), ours(x))


def test_rmsnorm_float64_gradcheck():
    x = inputs((3, 6), dtype=torch.float64).requires_grad_()
    norm = random_weight(RMSNorm(6)).double()
    assert torch.autograd.gradcheck(norm, (x,))


# ---- FastRMSNorm --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_fast_rmsnorm_forward_backward_equal_rmsnorm(shape):
    d = shape[-1]
    ref, fast = random_weight(RMSNorm(d)), FastRMSNorm(d)
    fast.weight.data.copy_(ref.weight.data)
    xa, xb = inputs(shape).requires_grad_(), inputs(shape).requires_grad_()
    g = inputs(shape, seed=9)
    ya, yb = ref(xa), fast(xb)
    torch.testing.assert_close(yb, ya, atol=1e-6, rtol=0)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xb.grad, xa.grad, atol=1e-6, rtol=0)
    torch.testing.assert_close(fast.weight.grad, ref.weight.grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(3, 5), (2, 2, 4)])
def test_fast_rmsnorm_gradcheck_float64(shape):
    x = inputs(shape, dtype=torch.float64).requires_grad_()
    w = inputs(shape[-1:], seed=3, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: fast_rms_norm(a, b, 1e-6), (x, w))


def test_fast_rmsnorm_only_input_grad():
    fast = FastRMSNorm(8).requires_grad_(False)
    x = inputs((2, 8)).requires_grad_()
    fast(x).sum().backward()
    assert x.grad is not None and fast.weight.grad is None


@pytest.mark.parametrize("rows,d", [(16, 64), (3 * 7, 32)])
def test_fast_rmsnorm_saves_less_memory(rows, d):
    x = inputs((rows, d)).requires_grad_()
    auto, fast = RMSNorm(d), FastRMSNorm(d)
    auto_bytes = saved_tensor_bytes(lambda: auto(x))
    fast_bytes = saved_tensor_bytes(lambda: fast(x))
    # fast: input (rows x d) + 1/RMS (rows) + weight (d); autograd also keeps x_hat (rows x d).
    assert fast_bytes == 4 * (rows * d + rows + d)
    assert auto_bytes == 4 * (2 * rows * d + rows + d)
    assert fast_bytes < auto_bytes


def test_saved_tensor_bytes_counts_shared_storage_once():
    x = torch.randn(10, requires_grad=True)
    assert saved_tensor_bytes(lambda: x * x) == 40  # mul saves x twice: one storage
    assert saved_tensor_bytes(lambda: x + x) == 0  # add saves nothing


# ---- Group and adaptive variants ----------------------------------------------------------------


@pytest.mark.parametrize("d,groups", [(12, 1), (12, 3), (12, 12), (16, 4)])
def test_group_rmsnorm_equals_rmsnorm_per_group(d, groups):
    norm = random_weight(GroupRMSNorm(d, groups))
    x = inputs((2, 5, d))
    size = d // groups
    want = torch.cat(
        [
            F.rms_norm(c, (size,), weight=w, eps=1e-6)
            for c, w in zip(x.split(size, -1), norm.weight.split(size), strict=True)
        ],
        dim=-1,
    )
    torch.testing.assert_close(norm(x), want, atol=1e-6, rtol=0)


def test_group_rmsnorm_one_group_is_rmsnorm_and_noncontiguous_input():
    x = inputs((8, 3, 6)).transpose(0, 1)  # non-contiguous
    torch.testing.assert_close(GroupRMSNorm(6, 1)(x), RMSNorm(6)(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("shift", [False, True])
def test_adaptive_rmsnorm_starts_as_identity(shift):
    norm = AdaptiveRMSNorm(8, cond_dim=5, shift=shift)
    x, c = inputs((2, 4, 8)), inputs((2, 5), seed=2)
    torch.testing.assert_close(norm(x, c), RMSNorm(8)(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("per_position", [False, True])
def test_adaptive_rmsnorm_matches_formula(per_position):
    norm = random_weight(AdaptiveRMSNorm(8, cond_dim=5, shift=True))
    x = inputs((2, 4, 8))
    c = inputs((2, 4, 5) if per_position else (2, 5), seed=2)
    cb = c if per_position else c[:, None, :]
    scale = cb @ norm.to_scale.weight.T + norm.to_scale.bias
    shift = cb @ norm.to_shift.weight.T + norm.to_shift.bias
    want = F.rms_norm(x, (8,), eps=1e-6) * (1 + scale) + shift
    torch.testing.assert_close(norm(x, c), want, atol=1e-6, rtol=0)


def test_adaptive_rmsnorm_keeps_half_dtype():
    norm = AdaptiveRMSNorm(8, 4, shift=True)
    x, c = inputs((2, 3, 8), dtype=torch.bfloat16), inputs((2, 4), dtype=torch.bfloat16)
    assert norm(x, c).dtype == torch.bfloat16


def test_layernorm_matches_torch():
    ours = random_weight(LayerNorm(12))
    ref = torch.nn.LayerNorm(12, eps=1e-6)
    ref.load_state_dict(ours.state_dict())
    x = inputs((3, 4, 12))
    torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", sorted(NORMS))
def test_build_norm_builds_each(name):
    norm = build_norm(name, 6, eps=1e-5)
    assert isinstance(norm, NORMS[name]) and norm.eps == 1e-5
    assert set(NORMS) >= {"rmsnorm", "fast_rmsnorm", "layernorm"}


# ---- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "norm", [RMSNorm(8), FastRMSNorm(8), GroupRMSNorm(8, 2), LayerNorm(8)], ids=type
)
def test_dim_mismatch_raises(norm):
    with pytest.raises(ValueError, match=r"dim=8.*got shape \(2, 6\)"):
        norm(torch.randn(2, 6))


def test_fast_rms_norm_weight_mismatch_raises():
    with pytest.raises(ValueError, match="weight shape"):
        fast_rms_norm(torch.randn(2, 6), torch.ones(5))


@pytest.mark.parametrize("groups", [0, 5, 16])
def test_group_rmsnorm_bad_num_groups(groups):
    with pytest.raises(ValueError, match=f"num_groups={groups}"):
        GroupRMSNorm(8, groups)


def test_adaptive_rmsnorm_bad_cond():
    norm = AdaptiveRMSNorm(8, cond_dim=4)
    x = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match="cond_dim=4"):
        norm(x, torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"cond must be .*got shape \(3, 4\)"):
        norm(x, torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"dim=8"):
        norm(torch.randn(2, 3, 7), torch.randn(2, 4))


def test_build_norm_unknown_name():
    with pytest.raises(ValueError, match="norm_type.*'batchnorm'"):
        build_norm("batchnorm", 8, 1e-6)
