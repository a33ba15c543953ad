"""T5's encoder and decoder blocks as data, drawn from that data, and checked against t5edu (ch. 3).

The figure is drawn from `block_spec` and `stack_spec`, which name the t5edu (and HF) modules
each box stands for, in the order the forward calls them. `call_order` records that order from
a real forward with module hooks, so a chapter can assert that the picture and the code agree:
`call_order(block, run) == block_call_order(block_spec(config, is_decoder))`.

B batch, S source length, T target length, D d_model, V vocab_size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from t5edu.config import T5Config


@dataclass(frozen=True)
class SubLayer:
    """One pre-norm residual sub-layer of a `T5Block`: x + dropout(body(layer_norm(x))).

    index: position in `T5Block.layer`; body: the sub-module's name (HF's: `SelfAttention`,
    `EncDecAttention`, `DenseReluDense`); label: the text of its box; inside: the body's own
    modules in call order, drawn as part of its box (empty for attention, drawn as one box);
    kind: "attention" or "ffn" (the box's colour); cross: keys and values come from the encoder.
    """

    index: int
    body: str
    label: str
    kind: str
    inside: tuple[str, ...] = ()
    cross: bool = False

    @property
    def name(self) -> str:
        return f"layer.{self.index}"


def _check_t5(config: T5Config) -> None:
    if config.position_encoding != "relative_bias" or config.norm_type == "layernorm":
        raise ValueError(
            "the diagram draws T5's own blocks: position_encoding='relative_bias' and an RMSNorm "
            f"norm_type; got position_encoding={config.position_encoding!r}, "
            f"norm_type={config.norm_type!r}"
        )


def block_spec(config: T5Config, is_decoder: bool) -> tuple[SubLayer, ...]:
    """The sub-layers of an encoder or decoder block of `config`, in order (HF's `T5Block`).

    The attention boxes name the dropout on attention weights (a `dropout_p` of the kernel, not
    a module); the feed-forward lists its dropout between activation and `wo` (`inside`).

    Raises:
        ValueError: for a config with RoPE, ALiBi or LayerNorm (not T5's own architecture).
    """
    _check_t5(config)
    gated = config.is_gated_act
    ffn_inside = ("wi_0", "wi_1", "dropout", "wo") if gated else ("wi", "dropout", "wo")
    act = "GEGLU" if config.feed_forward_proj == "gated-gelu" else config.feed_forward_proj
    hidden = "act(wi_0 x) \u00b7 wi_1 x" if gated else "act(wi x)"
    ffn_label = f"feed-forward ({act})\n{hidden}\n\u2192 dropout \u2192 wo"
    mode = "causal" if is_decoder else "bidirectional"
    layers = [SubLayer(0, "SelfAttention", f"self-attention, {mode}\n+ position bias\n"
                       "dropout on weights", "attention")]  # fmt: skip
    if is_decoder:
        layers.append(
            SubLayer(1, "EncDecAttention", "cross-attention\nno position bias\n"
                     "dropout on weights", "attention", cross=True)
        )  # fmt: skip
    layers.append(SubLayer(len(layers), "DenseReluDense", ffn_label, "ffn", ffn_inside))
    return tuple(layers)


def block_call_order(spec: tuple[SubLayer, ...]) -> list[tuple[int, str]]:
    """`(depth, module name)` in the order the block's forward calls them, as `call_order`
    records it: each sub-layer, then its norm, body (and the body's `inside`), dropout."""
    order = []
    for s in spec:
        order += [(0, s.name), (1, f"{s.name}.layer_norm"), (1, f"{s.name}.{s.body}")]
        order += [(2, f"{s.name}.{s.body}.{m}") for m in s.inside]
        order.append((1, f"{s.name}.dropout"))
    return order


# (module name in a T5Encoder / T5Decoder, box label, kind); "block" stands for all blocks.
_STACK = (
    ("embed_tokens", "shared embedding", "embed"),
    ("block.0.layer.0.SelfAttention.relative_attention_bias",
     "relative position bias\nblock 0's table, computed\nonce, added in every block", "bias"),
    ("dropout", "dropout", "dropout"),
    ("block", "blocks", "blocks"),
    ("final_layer_norm", "final RMSNorm", "norm"),
    ("dropout", "dropout", "dropout"),
)  # fmt: skip


def stack_spec(config: T5Config) -> tuple[tuple[str, str, str], ...]:
    """`(module, label, kind)` steps of `T5Encoder` / `T5Decoder` (HF's `T5Stack`) in call order:
    embedding, the position bias (block 0's table), dropout, the blocks, final norm, dropout.

    Raises:
        ValueError: for a config with RoPE, ALiBi or LayerNorm (not T5's own architecture).
    """
    _check_t5(config)
    return _STACK


def stack_call_order(config: T5Config, is_decoder: bool) -> list[str]:
    """The modules a stack calls directly (depth 0 of `call_order`), in order."""
    n = config.num_decoder_layers if is_decoder else config.num_layers
    order = []
    for name, _, _ in stack_spec(config):
        order += [f"block.{i}" for i in range(n)] if name == "block" else [name]
    return order


def call_order(root: nn.Module, run: Callable[[], object], opaque=None) -> list[tuple[int, str]]:
    """`(depth, name)` of every submodule of `root` that `run()` calls, in call order.

    depth counts the enclosing submodule calls (0: called by `root` itself). Calls inside an
    `opaque` module (default: `T5Attention`, drawn as one box) are left out. Modules that run
    nothing are not called: t5edu skips dropout in eval mode or at p = 0, so record those in
    train mode with `dropout_rate > 0`. The hooks are removed afterwards, also on error.
    """
    if opaque is None:
        from t5edu.t5_attention import T5Attention

        opaque = (T5Attention,)
    names = {m: n for n, m in root.named_modules() if n}
    order, active = [], []

    def pre(module, args):
        if not any(isinstance(a, opaque) for a in active):
            order.append((len(active), names[module]))
        active.append(module)

    def post(module, args, output):
        active.pop()

    hooks = [m.register_forward_pre_hook(pre) for m in names]
    hooks += [m.register_forward_hook(post) for m in names]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return order


COLORS = {
    "norm": "#d9f0d3",
    "attention": "#dbe9f6",
    "ffn": "#fde7d4",
    "dropout": "#eeeeee",
    "embed": "#eadcf2",
    "bias": "#fff5cc",
}
_LEGEND = {
    "norm": "RMSNorm (HF's T5LayerNorm)",
    "attention": "attention (no 1/sqrt(d) scale)",
    "ffn": "feed-forward",
    "dropout": "dropout (p = dropout_rate; off in eval)",
    "embed": "embedding / LM head",
    "bias": "relative position bias",
}
_ROW = 1.35  # height of one sub-layer row
_NORM_X, _BODY_X, _DROP_X = 1.35, 3.25, 5.05  # box centres right of the residual stream


def _box(ax, x, y, text, kind, w, h=0.5, fontsize=7.5):
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04",
                       fc=COLORS[kind], ec="0.35", lw=0.8)
    )  # fmt: skip
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _path(ax, points, color="0.3", ls="-", lw=1.0):
    """A polyline through `points` with an arrow head on its last segment."""
    from matplotlib.patches import FancyArrowPatch

    xs, ys = zip(*points, strict=True)
    ax.plot(xs[:-1], ys[:-1], color=color, ls=ls, lw=lw, solid_capstyle="butt")
    ax.add_patch(FancyArrowPatch(points[-2], points[-1], arrowstyle="-|>", mutation_scale=10,
                                 color=color, ls=ls, lw=lw, shrinkA=0, shrinkB=0))  # fmt: skip


def _plus(ax, x, y, r=0.15):
    from matplotlib.patches import Circle

    ax.add_patch(Circle((x, y), r, fc="white", ec="0.3", lw=1.0, zorder=3))
    ax.text(x, y, "+", ha="center", va="center", fontsize=10, zorder=4)


def _stack(ax, x, config, is_decoder, input_label):
    """Draw one stack on the residual stream at `x`; return (top y, cross-attention box)."""
    from matplotlib.patches import FancyBboxPatch

    spec = block_spec(config, is_decoder)
    n_blocks = config.num_decoder_layers if is_decoder else config.num_layers
    title = "decoder" if is_decoder else "encoder"
    ax.text(x, 0.35, input_label, ha="center", va="center", fontsize=8)
    y, cross_at = 0.55, None
    for _, label, kind in stack_spec(config):
        if kind == "bias":  # beside the embedding, feeding every self-attention
            bias_y = 1.15
            _box(ax, x + _BODY_X, bias_y, label, kind, w=2.4, h=0.62, fontsize=6.5)
            continue
        if kind != "blocks":
            w = 2.2 if kind in ("embed", "norm") else 1.2
            _path(ax, [(x, y), (x, y + 0.35)])
            y += 0.6
            _box(ax, x, y, label, kind, w=w)
            y += 0.25
            continue
        frame_bottom = y + 0.3
        _path(ax, [(x, y), (x, frame_bottom + 0.45)])
        y = frame_bottom + 0.45  # branch point of the first sub-layer
        top = None
        _path(ax, [(x + _BODY_X, bias_y + 0.31), (x + _BODY_X, y - 0.34)], ls="--")
        for s in spec:
            if top is not None:  # the stream from the last + to this branch point
                ax.plot([x, x], [top + 0.15, y], color="0.3", lw=1.0)
            ax.plot([x], [y], "o", color="0.3", ms=3)
            _path(ax, [(x, y), (x + _NORM_X - 0.55, y)])
            _box(ax, x + _NORM_X, y, "RMSNorm", "norm", w=1.1)
            _path(ax, [(x + _NORM_X + 0.55, y), (x + _BODY_X - 1.15, y)])
            _box(ax, x + _BODY_X, y, s.label, s.kind, w=2.3, h=0.62, fontsize=6.5)
            _path(ax, [(x + _BODY_X + 1.15, y), (x + _DROP_X - 0.5, y)])
            _box(ax, x + _DROP_X, y, "dropout", "dropout", w=1.0)
            top = y + 0.62
            _path(ax, [(x + _DROP_X, y + 0.25), (x + _DROP_X, top), (x + 0.15, top)])
            _path(ax, [(x, y), (x, top - 0.15)])  # the residual (skip) path
            _plus(ax, x, top)
            if s.cross:
                cross_at = (x + _BODY_X, y)
            y = top + _ROW - 0.62
        frame_top = top + 0.45
        ax.plot([x, x], [top + 0.15, frame_top], color="0.3", lw=1.0)
        ax.add_patch(
            FancyBboxPatch(
                (x - 0.7, frame_bottom), _DROP_X + 1.35, frame_top - frame_bottom,
                boxstyle="round,pad=0.02", fc="none", ec="0.55", ls="--", lw=0.8)
        )  # fmt: skip
        ax.text(x + _DROP_X + 0.65, frame_top + 0.06, f"{title} block \u00d7 {n_blocks}",
                ha="right", va="bottom", fontsize=8, style="italic")  # fmt: skip
        ax.text(x - 0.33, frame_bottom + 0.8, "residual", rotation=90, ha="center",
                va="center", fontsize=6.5, color="0.35")  # fmt: skip
        y = frame_top
    return y, cross_at


def draw_t5_blocks(config: T5Config, ax=None):
    """T5's encoder (left) and decoder (right) with every sub-layer's pre-norm RMSNorm, dropout
    and residual add, each stack's embedding dropout, final norm and final dropout, the decoder's
    cross-attention fed by the encoder output, and the LM head. Returns the Axes.

    Drawn from `block_spec(config, ...)` and `stack_spec(config)`; the block counts, the
    feed-forward type and the head come from `config`. Needs matplotlib.

    Raises:
        ValueError: for a config with RoPE, ALiBi or LayerNorm (not T5's own architecture).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if ax is None:
        _, ax = plt.subplots(figsize=(11, 7.9))
    xe, xd = 1.3, 8.95
    enc_top, _ = _stack(ax, xe, config, False, "input_ids (B, S)")
    dec_top, (cx, cy) = _stack(ax, xd, config, True, "decoder_input_ids (B, T)")
    # The encoder output: keys and values of every decoder block's cross-attention.
    ax.text(xe, enc_top + 0.5, "encoder output (B, S, D)", ha="center", va="center", fontsize=8)
    _path(ax, [(xe, enc_top), (xe, enc_top + 0.35)])
    gap, kv_y, blue = xe + _DROP_X + 1.05, cy - 0.45, "#1f5fa8"
    _path(ax, [(xe + 1.25, enc_top + 0.5), (gap, enc_top + 0.5), (gap, kv_y), (cx, kv_y),
               (cx, cy - 0.31)], color=blue, lw=1.3)  # fmt: skip
    ax.text((xe + 1.25 + gap) / 2, enc_top + 0.58, "keys and values of every cross-attention",
            fontsize=7, color=blue, ha="center", va="bottom")  # fmt: skip
    # The LM head on the decoder output.
    y = dec_top
    tied = config.scale_decoder_outputs
    head = "$\\times\\, d_\\mathrm{model}^{-1/2}$\n(tied head, v1.0)" if tied else (
        "no rescale\n(untied head, v1.1)")  # fmt: skip
    for label, kind, w in [(head, "embed", 2.4), ("LM head", "embed", 2.2)]:
        _path(ax, [(xd, y), (xd, y + 0.35)])
        y += 0.65
        _box(ax, xd, y, label, kind, w=w, h=0.55 if "\n" in label else 0.5)
        y += 0.3
    _path(ax, [(xd, y), (xd, y + 0.3)])
    ax.text(xd, y + 0.5, "logits (B, T, V)", ha="center", va="center", fontsize=8)
    handles = [Patch(fc=COLORS[k], ec="0.35", label=v) for k, v in _LEGEND.items()]
    ax.legend(handles=handles, loc="upper left", fontsize=7.5, title="boxes", title_fontsize=8)
    ax.set(xlim=(0, 15.2), ylim=(0, y + 0.8))
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(
        "T5 blocks: x + dropout(sub-layer(RMSNorm(x))) for every sub-layer ("
        f"{config.feed_forward_proj}, {'tied' if config.tie_word_embeddings else 'untied'} head)"
    )
    return ax


__all__ = [
    "SubLayer",
    "block_spec",
    "block_call_order",
    "stack_spec",
    "stack_call_order",
    "call_order",
    "draw_t5_blocks",
]
