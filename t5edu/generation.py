"""Decoding: greedy, sampling and beam search with the KV cache, token-identical to HF (ch. 4).

B batch, K beams, S source length, L max output length, V vocab_size, D d_model.
"""

from __future__ import annotations

import torch

from t5edu.device import device_memory_bytes
from t5edu.kv_cache import MIN_CAPACITY, T5Cache
from t5edu.logits_processing import check_generate_args, warp_logits
from t5edu.relative_position import bias_rows
from t5edu.t5_attention import RelativeBiasTable
from t5edu.t5_checks import check_ids_structure, check_mask_structure, check_values


class _Decoder:
    """One decoding session: encoder output computed once, then `step(tokens)` returns float32
    next-token logits `(N, V)`.

    What grows with the output, the KV cache and the relative-bias vector, grows with it (by
    doubling, up to `max_length`), so a long `max_new_tokens` costs memory only for the
    positions actually reached: no `(L, L)` bias or bucket table is built, and nothing is left
    on the model afterwards.
    """

    def __init__(
        self, model, input_ids, attention_mask, max_length, use_cache, repeat=1, static=False
    ):
        """`input_ids` and `attention_mask` as `generate` checked them: the mask in its final
        form (bool, or None when it hides nothing, so every cross-attention skips masking).
        No step checks anything again. `static`: allocate the KV cache and the bias vector for
        `max_length` positions at once (`T5Cache(preallocate=True)`), so a compiled `step`
        compiles for the first two steps only, instead of again at every doubling."""
        self.model, self.use_cache, self.max_length = model, use_cache, max_length
        self.static = static
        enc = model.encoder(input_ids, attention_mask, validate=False).last_hidden_state
        if repeat > 1:  # each beam attends to its own copy of its input's encoding
            enc = enc.repeat_interleave(repeat, dim=0)  # (B*K, S, D)
            if attention_mask is not None:
                attention_mask = attention_mask.repeat_interleave(repeat, dim=0)
        self.enc, self.enc_mask = enc, attention_mask
        n_layers = len(model.decoder.block)
        self.cache = T5Cache(n_layers, max_length, preallocate=static) if use_cache else None
        # T5's bias depends on key - query only: an (H, 2c - 1) vector covers every position
        # below c, and a cached step's row is a slice of it (see `bias_rows`).
        self.by_distance: torch.Tensor | None = None
        # How the decoder's layers take their bias cannot change during a generation: once.
        self.rpb = model.decoder.relative_attention_bias  # None with ALiBi or RoPE
        self.reads_bias_table = model.decoder.reads_bias_table

    def self_attention_bias(self, t: int, n: int) -> torch.Tensor | RelativeBiasTable | None:
        """The `(1, H, n - t, n)` bias of queries t..n-1 over keys 0..n-1 (None with RoPE);
        with every decoder layer on `t5_flash`, the bias table itself with offset t."""
        rpb = self.rpb
        if rpb is None:  # ALiBi computes just these rows (bottom-right aligned); RoPE: None
            return self.model.decoder.position_bias(n - t, n, t)
        if self.reads_bias_table:  # no bias rows at all: gathered per tile from the table
            return RelativeBiasTable(rpb, t)
        covered = 0 if self.by_distance is None else (self.by_distance.shape[1] + 1) // 2
        if n > covered:
            covered = min(self.max_length, max(n, 2 * covered, MIN_CAPACITY))
            if self.static:
                covered = self.max_length
            self.by_distance = rpb.bias_by_distance(covered)  # (H, 2 * covered - 1)
        return bias_rows(self.by_distance, t, n - t, n)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: the newest `(N, 1)` with a cache, else the whole prefix `(N, T)`."""
        t = self.cache.length if self.use_cache else 0
        n = t + tokens.shape[1]
        bias = self.self_attention_bias(t, n)
        h = self.model.decoder(
            tokens, self.enc, self.enc_mask, None, None, self.cache, self.use_cache, bias,
            validate=False,
        ).last_hidden_state  # fmt: skip
        # One matmul over the whole vocabulary: slicing it into cache-sized chunks was about
        # 1.4x faster on an AMD CPU but not bit-identical to HF under MKL on an Intel one.
        return self.model.logits_from_hidden(h[:, -1:])[:, 0].float()  # (N, V)

    def reorder(self, index: torch.Tensor) -> None:
        if self.cache is not None:
            self.cache.reorder(index)


def generation_bytes(model, rows: int, max_new_tokens: int, num_beams: int, use_cache: bool) -> int:
    """A lower estimate of the memory a generation needs when it runs to `1 + max_new_tokens`
    positions: the KV cache of every decoder layer (`use_cache`), or without it the last
    step's `(N, H, L, L)` float32 scores and probabilities, plus the int64 token buffers
    (beam search keeps about 14 `(N, L)` ones). N = rows * num_beams, L = 1 + max_new_tokens."""
    c, n, length = model.config, rows * num_beams, 1 + max_new_tokens
    per_position = 8 if num_beams == 1 else 14 * 8  # token and source-index buffers, int64
    if use_cache:
        itemsize = model.lm_head.weight.element_size()
        per_position += 2 * len(model.decoder.block) * c.num_heads * c.d_kv * itemsize
    need = n * length * per_position
    if not use_cache:
        need += 2 * n * c.num_heads * length * length * 4
    return need


def check_generation_fits(model, rows, max_new_tokens, num_beams, use_cache, device) -> None:
    """ValueError naming max_new_tokens when the generation could not finish in the device's
    memory at its full length (see `generation_bytes`), instead of an allocator crash later."""
    total = device_memory_bytes(device)
    if total is None:
        return
    need = generation_bytes(model, rows, max_new_tokens, num_beams, use_cache)
    if need > total:
        gib = 2**30
        cache = "with the KV cache" if use_cache else "without the KV cache (use_cache=False)"
        raise ValueError(
            f"max_new_tokens={max_new_tokens} cannot fit: decoding {rows} input(s) x "
            f"{num_beams} beam(s) to {1 + max_new_tokens} positions {cache} needs at least "
            f"{need / gib:.1f} GiB, more than the {total / gib:.1f} GiB of memory on {device}; "
            f"lower max_new_tokens (or the batch or num_beams)"
        )


def _infer_mask(input_ids, attention_mask, config):
    # As HF: without a mask, pad tokens in the input are hidden (when pad differs from EOS).
    if attention_mask is None and config.pad_token_id != config.eos_token_id:
        if bool((input_ids == config.pad_token_id).any()):
            return input_ids != config.pad_token_id  # bool, the layers' form
    return attention_mask


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 20,
    num_beams: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Generate `(B, out_len)` token ids starting with `decoder_start_token_id`, as HF's generate.

    Args:
        input_ids `(B, S)`, attention_mask `(B, S)` (default: hide pad tokens, as HF).
        max_new_tokens: tokens after the start token (out_len <= 1 + max_new_tokens).
        num_beams: 1 = greedy/sampling; > 1 = beam search (HF's algorithm: 2K candidates per
            step, finished hypotheses scored as sum of log-probs / length**length_penalty).
        do_sample, temperature, top_k, top_p: sampling (with num_beams > 1, beams are drawn
            without replacement from the accumulated scores, as HF). temperature/top_k/top_p
            apply only when do_sample (as HF).
        early_stopping: beam search only. False (HF's default heuristic: stop when the best
            running beam, scored at its current length, cannot beat the worst finished one),
            True (stop when K hypotheses are finished), or "never" (the exact criterion).
        use_cache: reuse keys/values (identical tokens, much faster).
        generator: torch.Generator for sampling (default: the global RNG).

    Returns:
        int64 `(B, out_len)`. Greedy/sampling: a row that emitted EOS gets pad_token_id after
        it; the output ends when every row has finished or at max_new_tokens. Beam search: the
        best hypothesis per row, cropped to the longest of them; shorter rows are filled with
        EOS when pad_token_id is 0, as HF's beam search does (it fills with `pad or eos`).

    Raises:
        ValueError: naming the argument, for bad ids/mask or generation settings, and naming
            max_new_tokens when the generation could not fit in the device's memory at its
            full length (`generation_bytes`). Memory grows with the positions reached: the KV
            cache and the relative bias grow by doubling, no `(L, L)` table is built.

    Source: HF `GenerationMixin._sample` / `_beam_search` (transformers 4.50+ vectorised beam
    search), whose outputs tests/test_generation.py checks token for token. Chapter 4.
    """
    config = model.config
    check_ids_structure("input_ids", input_ids)
    check_mask_structure("attention_mask", attention_mask, input_ids.shape)
    check_generate_args(
        max_new_tokens, num_beams, temperature, top_k, top_p, early_stopping, length_penalty,
        do_sample, use_cache,
    )  # fmt: skip
    check_generation_fits(
        model, input_ids.shape[0], max_new_tokens, num_beams, use_cache, input_ids.device
    )
    # Checked once, here: the ids' range and the mask's values in one host sync, the mask in
    # its final form for every step (see `t5edu.t5_checks.check_values`).
    (attention_mask,) = check_values(
        [("input_ids", input_ids, False)], config.vocab_size, [("attention_mask", attention_mask)]
    )
    attention_mask = _infer_mask(input_ids, attention_mask, config)
    if num_beams == 1:
        return _greedy_or_sample(
            model, input_ids, attention_mask, max_new_tokens, do_sample, temperature, top_k,
            top_p, use_cache, generator,
        )  # fmt: skip
    from t5edu.beam_search import beam_search

    dec = _Decoder(model, input_ids, attention_mask, 1 + max_new_tokens, use_cache, num_beams)
    return beam_search(
        dec, config, input_ids.shape[0], num_beams, max_new_tokens, length_penalty,
        early_stopping, use_cache,
        warp=(lambda s: warp_logits(s, temperature, top_k, top_p)) if do_sample else None,
        generator=generator,
    )  # fmt: skip


def _greedy_or_sample(model, input_ids, attention_mask, max_new_tokens, do_sample, temperature,
                      top_k, top_p, use_cache, generator):  # fmt: skip
    config = model.config
    b, length = input_ids.shape[0], 1 + max_new_tokens
    dec = _Decoder(model, input_ids, attention_mask, length, use_cache)
    out = torch.full((b, length), config.pad_token_id, dtype=torch.long, device=input_ids.device)
    out[:, 0] = config.decoder_start_token_id
    unfinished = torch.ones(b, dtype=torch.bool, device=input_ids.device)
    pad, eos = config.pad_token_id, config.eos_token_id
    cur = 1
    while cur < length:
        logits = dec.step(out[:, cur - 1 : cur] if use_cache else out[:, :cur])  # (B, V)
        if do_sample:
            probs = torch.softmax(warp_logits(logits, temperature, top_k, top_p), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
        else:
            nxt = logits.argmax(dim=-1)
        nxt = torch.where(unfinished, nxt, pad)
        out[:, cur] = nxt
        cur += 1
        unfinished &= nxt != eos
        if not bool(unfinished.any()):
            break
    return out[:, :cur]


__all__ = ["generate"]
