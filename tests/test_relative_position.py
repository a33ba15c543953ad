"""Relative position buckets and bias against HF's T5Attention (exact integer/float equality)."""

import pytest
import torch
from transformers.models.t5.modeling_t5 import T5Attention as HFT5Attention
from transformers.models.t5.modeling_t5 import T5Config as HFT5Config

from t5edu.relative_position import RelativePositionBias, relative_position_bucket

SETTINGS = [(32, 128), (32, 64), (16, 40), (8, 20), (64, 256), (4, 3), (33, 128), (6, 7)]


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", SETTINGS)
def test_bucket_matches_hf(bidirectional, num_buckets, max_distance):
    if not bidirectional and max_distance <= num_buckets // 2:
        pytest.skip("causal bucketing needs max_distance > num_buckets // 2")
    rel = torch.arange(-1000, 1001)
    got = relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
    want = HFT5Attention._relative_position_bucket(
        rel, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
    )
    assert got.dtype == torch.long
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert got.min() >= 0 and got.max() < num_buckets


def test_bucket_keyword_names_and_2d():
    rel = torch.arange(20)[None, :] - torch.arange(10)[:, None]
    got = relative_position_bucket(
        relative_position=rel, bidirectional=False, num_buckets=32, max_distance=128
    )
    assert got.shape == (10, 20)
    assert (got[rel >= 0] == 0).all()  # future keys share bucket 0 when causal


def test_bucket_monotone_in_distance():
    far = relative_position_bucket(-torch.arange(0, 500), bidirectional=False)
    assert (far[1:] >= far[:-1]).all() and far[-1] == 31


@pytest.mark.parametrize(
    "num_buckets,max_distance,bidirectional,match",
    [
        (2, 128, True, "num_buckets"),
        (3, 128, True, "num_buckets"),
        (1, 128, False, "num_buckets"),
        (32, 8, True, "max_distance"),
        (32, 16, False, "max_distance"),
        (32, 128.0, True, "max_distance"),
    ],
)
def test_bucket_settings_that_cannot_work(num_buckets, max_distance, bidirectional, match):
    with pytest.raises(ValueError, match=match):
        relative_position_bucket(torch.arange(5), bidirectional, num_buckets, max_distance)


def test_bucket_rejects_float_positions():
    with pytest.raises(ValueError, match="relative_position"):
        relative_position_bucket(torch.arange(5.0))


def _hf_attention(num_buckets, max_distance, heads, is_decoder):
    cfg = HFT5Config(
        d_model=16,
        d_kv=4,
        num_heads=heads,
        relative_attention_num_buckets=num_buckets,
        relative_attention_max_distance=max_distance,
        is_decoder=is_decoder,
        decoder_start_token_id=0,
    )
    return HFT5Attention(cfg, has_relative_attention_bias=True, layer_idx=0)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("q_len,k_len,offset", [(7, 7, 0), (1, 9, 8), (3, 12, 9), (5, 3, 0)])
def test_bias_matches_hf_compute_bias(bidirectional, q_len, k_len, offset):
    torch.manual_seed(0)
    ours = RelativePositionBias(16, 40, num_heads=3, bidirectional=bidirectional)
    hf = _hf_attention(16, 40, 3, is_decoder=not bidirectional)
    hf.relative_attention_bias.weight.data.copy_(ours.weight.data)
    got = ours(q_len, k_len, offset=offset)
    want = hf.compute_bias(q_len, k_len, past_seen_tokens=offset)
    assert got.shape == (1, 3, q_len, k_len)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_bias_cached_rows_equal_full_rows():
    torch.manual_seed(0)
    bias = RelativePositionBias(32, 128, num_heads=2, bidirectional=False)
    full = bias(10, 10)
    for t in range(10):
        torch.testing.assert_close(bias(1, t + 1, offset=t), full[:, :, t : t + 1, : t + 1])


def test_bias_state_dict_key_and_errors():
    bias = RelativePositionBias(32, 128, num_heads=4, bidirectional=True)
    assert list(bias.state_dict()) == ["weight"] and bias.weight.shape == (32, 4)
    with pytest.raises(ValueError, match="max_distance"):
        RelativePositionBias(32, 4, num_heads=4, bidirectional=True)
    with pytest.raises(ValueError, match="num_heads"):
        RelativePositionBias(32, 128, num_heads=0, bidirectional=True)
    with pytest.raises(ValueError, match="offset"):
        bias(2, 2, offset=-1)


def test_bias_after_inference_mode_still_trains():
    bias = RelativePositionBias(32, 128, num_heads=2, bidirectional=True)
    with torch.inference_mode():
        bias(5, 5)
    bias(5, 5).sum().backward()  # the cached bucket table must not be an inference tensor
    assert bias.weight.grad is not None and bias.weight.grad.sum() == 2 * 25


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize(
    "offset,q_len,k_len", [(0, 40, 40), (5, 1, 6), (39, 1, 40), (3, 7, 12), (0, 1, 1), (10, 5, 40)]
)
def test_bias_rows_from_the_distance_vector_equal_forward(bidirectional, offset, q_len, k_len):
    """What decoding reads: the same weight entries as forward's (q_len, k_len) gather, exactly."""
    from t5edu.relative_position import bias_rows

    rpb = RelativePositionBias(8, 20, 3, bidirectional)
    by_distance = rpb.bias_by_distance(40)
    assert by_distance.shape == (3, 79)
    assert torch.equal(bias_rows(by_distance, offset, q_len, k_len), rpb(q_len, k_len, offset))


def test_bias_rows_outside_the_vector_raise():
    from t5edu.relative_position import bias_rows

    by_distance = RelativePositionBias(8, 20, 3, False).bias_by_distance(10)
    with pytest.raises(ValueError, match=r"must lie below n=10"):
        bias_rows(by_distance, 9, 2, 11)
    with pytest.raises(ValueError, match=r"n must be an int >= 1; got 0"):
        RelativePositionBias(8, 20, 3, False).bias_by_distance(0)
