"""T5 presets by name (published HF shapes) and parameter counts without building (chapter 3)."""

from __future__ import annotations


def _v11(d_model, d_ff, num_layers, num_heads):
    return dict(
        d_model=d_model,
        d_kv=64,
        d_ff=d_ff,
        num_layers=num_layers,
        num_heads=num_heads,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    )


def _v10(d_model, d_kv, d_ff, num_layers, num_heads):
    return dict(d_model=d_model, d_kv=d_kv, d_ff=d_ff, num_layers=num_layers, num_heads=num_heads)


# Shapes from the published HF config.json files (google-t5/*, google/t5-v1_1-*, google/flan-t5-*).
_V11 = {
    "small": _v11(512, 1024, 8, 6),
    "base": _v11(768, 2048, 12, 12),
    "large": _v11(1024, 2816, 24, 16),
    "xl": _v11(2048, 5120, 24, 32),
    "xxl": _v11(4096, 10240, 24, 64),
}
PRESETS: dict[str, dict] = {
    **_V11,
    **{f"google/t5-v1_1-{k}": v for k, v in _V11.items()},
    **{f"google/flan-t5-{k}": v for k, v in _V11.items()},
    "t5-small": _v10(512, 64, 2048, 6, 8),
    "t5-base": _v10(768, 64, 3072, 12, 12),
    "t5-large": _v10(1024, 64, 4096, 24, 16),
    "t5-3b": _v10(1024, 128, 16384, 24, 32),
    "t5-11b": _v10(1024, 128, 65536, 24, 128),
    "tiny": dict(
        vocab_size=8192,
        d_model=128,
        d_kv=32,
        d_ff=512,
        num_layers=2,
        num_heads=4,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    ),
}

# Sizes as published (Raffel et al. 2020, table 14; the v1.1 and FLAN-T5 model cards).
PUBLISHED_SIZES = {
    "t5-small": 60e6,
    "t5-base": 220e6,
    "t5-large": 770e6,
    "t5-3b": 2.8e9,
    "t5-11b": 11e9,
}


def num_parameters(config) -> int:
    """Number of trainable parameters of `T5ForConditionalGeneration(config)`, without building it.

    Counts each tensor once (a tied head adds nothing). Equals `sum(p.numel() for p in
    model.parameters())` for our model and HF's exactly (tests/test_config.py). The published
    sizes are rounded to two significant figures of a count that is close to ours: t5-small
    60.5M ("60M"), t5-base 222.9M ("220M"), t5-3b 2.85B ("2.8B", truncated), t5-11b 11.3B
    ("11B"); t5-large's "770M" is 4% above our 737.7M and equals the count with an untied
    32128 x 1024 output layer (770.6M), so the paper apparently counted the head separately.
    """
    from t5edu.norms import build_norm

    c = config
    d, inner = c.d_model, c.inner_dim
    norm = sum(p.numel() for p in build_norm(c.norm_type, d, c.layer_norm_epsilon).parameters())
    attention = 4 * d * inner  # q, k, v: (D -> H*Dh); o: (H*Dh -> D)
    ffn = (3 if c.is_gated_act else 2) * d * c.d_ff
    bias = c.relative_attention_num_buckets * c.num_heads
    has_bias = c.position_encoding == "relative_bias"
    encoder = c.num_layers * (attention + ffn + 2 * norm) + norm + (bias if has_bias else 0)
    decoder = c.num_decoder_layers * (2 * attention + ffn + 3 * norm) + norm
    decoder += bias if has_bias else 0
    embeddings = c.vocab_size * d * (1 if c.tie_word_embeddings else 2)
    return embeddings + encoder + decoder


__all__ = ["PRESETS", "PUBLISHED_SIZES", "num_parameters"]
