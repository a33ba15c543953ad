"""Beam search, vectorised over batch and beams, with HF's exact scoring and stopping (ch. 4).

B batch, K beams, C = 2K candidates per step, L max output length, V vocab_size.
"""

from __future__ import annotations

import torch

NEG = -1.0e9  # HF's "impossible" score


def _take(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows `index` `(B, M)` of t `(B, K, ...)` along dim 1 -> `(B, M, ...)`."""
    while index.dim() < t.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(t, index, dim=1)


def beam_search(dec, config, batch, num_beams, max_new_tokens, length_penalty, early_stopping,
                use_cache, warp=None, generator=None) -> torch.Tensor:  # fmt: skip
    """Best hypothesis per input, `(B, out_len)`; see `t5edu.generation.generate`.

    Each step scores all K*V continuations by accumulated log-probability, keeps the best
    C = 2K (so that K stay alive even if K of them end in EOS), continues the best K that did
    not finish, and offers the finished ones among the top K to the pool of hypotheses, scored
    sum(log p) / gen_len**length_penalty. A row stops when (early_stopping=True) its pool is
    full, or when even its best running beam cannot beat the pool's worst (HF's heuristic:
    the running score at the current length; at max length for "never" with a positive
    penalty). Same ops and order as HF's `_beam_search`, so ties break the same way.
    """
    k, c, length = num_beams, 2 * num_beams, 1 + max_new_tokens
    dev = dec.enc.device
    eos = config.eos_token_id
    fill = config.pad_token_id or eos  # HF fills unused positions with `pad or eos`
    running = torch.full((batch, k, length), fill, dtype=torch.long, device=dev)
    running[:, :, 0] = config.decoder_start_token_id
    sequences = running.clone()
    running_scores = torch.zeros(batch, k, device=dev)
    running_scores[:, 1:] = NEG  # all beams start equal: only the first may expand at step 1
    scores = torch.full((batch, k), NEG, device=dev)
    finished = torch.zeros(batch, k, dtype=torch.bool, device=dev)
    improvable = torch.ones(batch, 1, dtype=torch.bool, device=dev)
    # Which flat beam each generated token came from: -1 = not generated (crops the output).
    running_src = torch.full((batch, k, length - 1), -1, dtype=torch.long, device=dev)
    src = running_src.clone()
    top_k_mask = torch.arange(c, device=dev) < k  # only the best K candidates may finish
    offsets = torch.arange(batch, device=dev)[:, None] * k  # (B, 1) flat row of beam 0
    cur = 1
    while True:
        flat = running.view(batch * k, length)
        logits = dec.step(flat[:, cur - 1 : cur] if use_cache else flat[:, :cur])  # (B*K, V)
        logp = torch.log_softmax(logits, dim=-1)
        if warp is not None:
            logp = warp(logp)
        vocab = logp.shape[-1]
        logp = (logp.view(batch, k, vocab) + running_scores[:, :, None]).view(batch, k * vocab)
        if warp is not None:  # beam sampling: draw C candidates without replacement
            idx = torch.multinomial(torch.softmax(logp, dim=-1), c, generator=generator)
            cand_scores, order = torch.gather(logp, 1, idx).sort(dim=-1, descending=True)
            idx = idx.gather(1, order)
        else:
            cand_scores, idx = torch.topk(logp, c)  # (B, C)
        parent, token = idx // vocab, idx % vocab
        cand = _take(running, parent)  # (B, C, L)
        cand[:, :, cur] = token
        cand_src = _take(running_src, parent)
        cand_src[:, :, cur - 1] = parent + offsets
        done = token == eos
        if cur + 1 >= length:
            done = torch.ones_like(done)
        # Continue the best K candidates that did not finish.
        alive_scores = cand_scores + done.to(torch.float32) * NEG
        keep = torch.topk(alive_scores, k)[1]
        running, running_scores = _take(cand, keep), _take(alive_scores, keep)
        running_src = _take(cand_src, keep)
        # Offer the finished among the top K to the pool of hypotheses.
        just_done = done & top_k_mask[None, :]
        final = cand_scores / ((cur + 1 - 1) ** length_penalty)
        pool_full = finished.all(dim=-1, keepdim=True) & (early_stopping is True)
        final += pool_full.to(torch.float32) * NEG
        final += (~improvable).to(torch.float32) * NEG
        final += (~just_done) * NEG
        best = torch.topk(torch.cat((scores, final), dim=1), k)[1]
        sequences = _take(torch.cat((sequences, cand), dim=1), best)
        scores = _take(torch.cat((scores, final), dim=1), best)
        src = _take(torch.cat((src, cand_src), dim=1), best)
        finished = _take(torch.cat((finished, just_done), dim=1), best)
        dec.reorder(running_src[..., cur - 1].reshape(-1))
        cur += 1
        improvable = _still_improvable(
            improvable,
            running_scores,
            scores,
            finished,
            cur,
            length,
            early_stopping,
            length_penalty,
        )
        stop_all = bool(finished.all()) and early_stopping is True
        if not bool(improvable.any()) or stop_all or bool(done.all()):
            break
    generated = int((src[:, 0] >= 0).sum(dim=1).max())
    return sequences[:, 0, : 1 + generated]


def _still_improvable(improvable, running_scores, scores, finished, cur, length, early_stopping,
                      length_penalty):  # fmt: skip
    """(B, 1): can the best running beam still beat the worst finished hypothesis?"""
    if early_stopping == "never" and length_penalty > 0.0:
        best_len = length - 1
    else:
        best_len = cur - 1
    best_running = running_scores[:, :1] / (best_len**length_penalty)
    worst = torch.where(finished, torch.min(scores, dim=1, keepdim=True)[0], NEG)
    return improvable & torch.any(best_running > worst, dim=-1, keepdim=True)


__all__ = ["beam_search"]
