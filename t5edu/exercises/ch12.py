"""Exercises of chapter 12 (benchmarks). Expected outputs come from `t5edu.num_parameters`,
`t5edu.bench.timing.paired_ratio`, `t5edu.bench.flops.t5_flops`, the gradients autograd returns
for `t5edu.attention` (their bytes, summed) and `torch.utils.flop_counter.FlopCounterMode`
counting a cached decoding step of a real `t5edu` model.

B batch, H heads, N sequence length, Dh head dim, S source length, P cached target positions.
"""

from __future__ import annotations

import statistics
from types import SimpleNamespace

import torch

from t5edu.backends import attention
from t5edu.bench.flops import count_flops, t5_flops
from t5edu.bench.timing import Timing, paired_ratio
from t5edu.config import T5Config, num_parameters
from t5edu.exercises._core import Exercise, randn, register, seeded
from t5edu.t5_model import T5ForConditionalGeneration

# --- ch12.score_outgrows_weights: one score matrix against the whole model (exercise 2) -------


def _outgrow_length(inputs: dict) -> int:
    """Smallest N with 8 * N * N float32 scores > t5-small's float32 weights, by bisection."""
    weights = num_parameters(T5Config.get_config("t5-small"))
    lo, hi = 1, 1 << 20  # score(lo) <= weights < score(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if 8 * mid * mid <= weights else (lo, mid)
    return hi


register(
    Exercise(
        id="ch12.score_outgrows_weights",
        task="the smallest sequence length N at which one (1, 8, N, N) float32 score matrix "
        "holds more bytes than all of t5-small's float32 weights, as an int",
        cases=lambda: [{}],
        expected=_outgrow_length,
        solution=lambda: 2751,
        run=lambda answer, inputs: answer,
        value=True,
    )
)

# --- ch12.paired_ratio: speed ratios round by round (exercise 3) ------------------------------


def _ratio_cases() -> list[dict]:
    gen = seeded(1203)
    cases = []
    for rounds, slow_round in [(5, None), (6, 2), (7, 0), (1, None), (8, 5)]:
        # seconds, rounded to 0.1 us as a timer's samples are; `other` 1.5x to 2.5x faster
        base = 1e-3 * (1.0 + 0.2 * torch.rand(rounds, generator=gen, dtype=torch.float64))
        other = base / (1.5 + torch.rand(rounds, generator=gen, dtype=torch.float64))
        base, other = [[round(t, 7) for t in ts.tolist()] for ts in (base, other)]
        if slow_round is not None:  # another job slowed the whole machine in one round
            base[slow_round], other[slow_round] = 4 * base[slow_round], 4 * other[slow_round]
        cases.append({"base_times": base, "other_times": other})
    return cases


def _t5edu_ratio(base_times, other_times):
    r = paired_ratio(Timing("base", base_times), Timing("other", other_times))
    return r["median"], r["min"], r["max"]


def _ratio_solution(base_times, other_times):
    rs = [b / o for b, o in zip(base_times, other_times, strict=True)]
    return statistics.median(rs), min(rs), max(rs)


register(
    Exercise(
        id="ch12.paired_ratio",
        task="paired_ratio(base_times, other_times) -> (median, min, max) over rounds r of "
        "base_times[r] / other_times[r]: the speed of `other` relative to `base`",
        cases=_ratio_cases,
        expected=lambda inputs: _t5edu_ratio(**inputs),
        solution=lambda: _ratio_solution,
        atol=1e-9,
        why_tol="float64 arithmetic on the same numbers",
    )
)

# --- ch12.crossover_length: attention scores against the feed-forward (exercise 4) ------------


def _crossover(inputs: dict) -> int:
    """Smallest S where t5-small's encoder scores cost at least its feed-forward, by bisection."""
    cfg = T5Config.get_config("t5-small")

    def scores_win(s):
        terms = t5_flops(cfg, 1, s, 1).terms
        return terms["encoder attention scores"] >= terms["encoder feed-forward"]

    lo, hi = 1, 1 << 20  # scores_win(lo) is False, scores_win(hi) is True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if scores_win(mid) else (mid, hi)
    return hi


register(
    Exercise(
        id="ch12.crossover_length",
        task="the source length S at which t5-small's encoder attention scores cost as many "
        "FLOPs as its feed-forward (the smallest S where they cost at least as many), as an int",
        cases=lambda: [{}],
        expected=_crossover,
        solution=lambda: 512 * 2048 // 512,
        run=lambda answer, inputs: answer,
        value=True,
    )
)

# --- ch12.gradient_bytes: the lower bound of a memory measurement (exercise 5) ----------------


def _grad_cases() -> list[dict]:
    return [
        {"batch": b, "heads": h, "seq_len": n, "head_dim": dh, "dtype": dt, "bias_learned": bl}
        for b, h, n, dh, dt, bl in [
            (1, 8, 64, 16, torch.float32, True),
            (2, 4, 32, 8, torch.float32, True),  # the bias is shared by the batch: (1, H, N, N)
            (2, 4, 32, 8, torch.float32, False),
            (1, 2, 48, 32, torch.bfloat16, True),
            (3, 2, 16, 8, torch.float16, False),
        ]
    ]


def _measured_grad_bytes(batch, heads, seq_len, head_dim, dtype, bias_learned):
    """Bytes of the gradients one naive forward+backward really returns, as the chapter's
    memory benchmark sets it up: q, k, v (B, H, N, Dh) and a (1, H, N, N) bias."""
    gen = seeded(1205)
    q, k, v = (randn(gen, batch, heads, seq_len, head_dim).to(dtype) for _ in range(3))
    bias = randn(gen, 1, heads, seq_len, seq_len).to(dtype)
    leaves = [q, k, v] + ([bias] if bias_learned else [])
    for t in leaves:
        t.requires_grad_()
    attention(q, k, v, bias=bias, scale=1.0, backend="naive").sum().backward()
    return sum(t.grad.numel() * t.grad.element_size() for t in leaves)


def _grad_bytes_solution(batch, heads, seq_len, head_dim, dtype, bias_learned):
    grads = 3 * batch * heads * seq_len * head_dim + (heads * seq_len**2 if bias_learned else 0)
    return grads * dtype.itemsize


register(
    Exercise(
        id="ch12.gradient_bytes",
        task="gradient_bytes(batch, heads, seq_len, head_dim, dtype, bias_learned) -> int: the "
        "bytes of dq, dk, dv (B, H, N, Dh) and, when learned, of the (1, H, N, N) bias gradient",
        cases=_grad_cases,
        expected=lambda inputs: _measured_grad_bytes(**inputs),
        solution=lambda: _grad_bytes_solution,
    )
)

# --- ch12.decode_step_flops: one cached decoding step (exercise 6) ----------------------------

_DECODE_CONFIGS = [
    # d_model, d_kv, num_heads, d_ff, vocab, encoder layers, decoder layers, feed_forward_proj
    (32, 8, 4, 64, 120, 2, 2, "gated-gelu"),
    (32, 16, 2, 48, 100, 1, 3, "relu"),
    (48, 8, 3, 80, 90, 2, 1, "gated-silu"),
]


def _decode_cases() -> list[dict]:
    cases = []
    for (d, dkv, h, f, v, le, ld, proj), (b, s, p) in zip(
        _DECODE_CONFIGS + _DECODE_CONFIGS[:1],
        [(2, 9, 4), (1, 5, 0), (3, 7, 6), (1, 20, 11)],
        strict=True,
    ):
        cfg = T5Config(
            d_model=d, d_kv=dkv, num_heads=h, d_ff=f, vocab_size=v, num_layers=le,
            num_decoder_layers=ld, feed_forward_proj=proj,
        )  # fmt: skip
        fields = ("d_model", "d_kv", "num_heads", "d_ff", "vocab_size", "num_layers")
        config = SimpleNamespace(
            **{k: getattr(cfg, k) for k in fields},
            num_decoder_layers=cfg.num_decoder_layers,
            is_gated_act=cfg.is_gated_act,
        )
        cases.append({"config": config, "batch": b, "src_len": s, "past_len": p})
    return cases


@torch.no_grad()
def _counted_step_flops(config, batch, src_len, past_len):
    """FlopCounterMode over one decoder step of a real t5edu model: past_len target positions
    already in the KV cache (cross-attention keys and values cached too), one new token."""
    cfg = T5Config(
        d_model=config.d_model, d_kv=config.d_kv, num_heads=config.num_heads, d_ff=config.d_ff,
        vocab_size=config.vocab_size, num_layers=config.num_layers,
        num_decoder_layers=config.num_decoder_layers,
        feed_forward_proj="gated-gelu" if config.is_gated_act else "relu",
    )  # fmt: skip
    gen = seeded(1206)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1206)
        model = T5ForConditionalGeneration(cfg).eval()
    src = torch.randint(2, cfg.vocab_size, (batch, src_len), generator=gen)
    tokens = torch.randint(2, cfg.vocab_size, (batch, past_len + 1), generator=gen)
    enc = (model.encoder(src).last_hidden_state,)
    past = None  # fill the cache: the start step (or the whole prefix), then the counted step
    if past_len > 0:
        past = model(encoder_outputs=enc, decoder_input_ids=tokens[:, :past_len], use_cache=True)
        past = past.past_key_values
    if past is None:  # the very first step: the cross-attention keys and values are computed
        return count_flops(
            lambda: model(encoder_outputs=enc, decoder_input_ids=tokens, use_cache=True)
        )
    return count_flops(
        lambda: model(
            encoder_outputs=enc,
            decoder_input_ids=tokens[:, -1:],
            past_key_values=past,
            use_cache=True,
        )  # fmt: skip
    )


def _decode_solution(config, batch, src_len, past_len):
    c = config
    d, inner, f, v = c.d_model, c.num_heads * c.d_kv, c.d_ff, c.vocab_size
    ffn = (3 if c.is_gated_act else 2) * 2 * d * f
    self_attn = 4 * 2 * d * inner + 2 * 2 * (past_len + 1) * inner  # one query, P + 1 keys
    cross = 2 * 2 * d * inner + 2 * 2 * src_len * inner  # q, o and the scores over S keys
    # The first step (P = 0) projects the encoder output to cross-attention keys and values.
    cross_kv = 2 * 2 * d * inner * src_len if past_len == 0 else 0
    per_layer = self_attn + cross + ffn + cross_kv
    return batch * (c.num_decoder_layers * per_layer + 2 * d * v)


register(
    Exercise(
        id="ch12.decode_step_flops",
        task="decode_step_flops(config, batch, src_len, past_len) -> int: the matmul FLOPs of "
        "one greedy step with the KV cache (past_len positions cached, one new token per row)",
        cases=_decode_cases,
        expected=lambda inputs: _counted_step_flops(**inputs),
        solution=lambda: _decode_solution,
    )
)
