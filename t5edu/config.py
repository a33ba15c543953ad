"""T5Config: the hyperparameters of a T5 model, HF field names, presets and validation (ch. 3)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from t5edu.activations import FEED_FORWARD_PROJ

# Presets and parameter counts live in t5edu.presets; re-exported here.
from t5edu.presets import PRESETS, PUBLISHED_SIZES, num_parameters
from t5edu.relative_position import check_bucket_settings

POSITION_ENCODINGS = ("relative_bias", "rope", "alibi")

# Fields beyond HF's T5Config (absent from HF config.json files).
_T5EDU_FIELDS = ("position_encoding", "norm_type", "rope_base", "lm_head_init")
# How an untied LM head is initialised: std = initializer_factor * scale.
LM_HEAD_INITS = ("hf", "fan_in")
_HF_NORMS = ("rmsnorm", "fast_rmsnorm")  # HF's T5LayerNorm, computed identically


@dataclass
class T5Config:
    """Configuration of a T5 encoder-decoder, with HF `transformers.T5Config` field names.

    Defaults are `t5-small`'s. `num_heads * d_kv` need not equal `d_model` (t5-3b and t5-11b
    have 32 and 128 heads of width 128 on a 1024-wide model). `tie_word_embeddings=True` is T5
    v1.0 (the LM head reuses the shared embedding and its input is scaled by `d_model**-0.5`);
    v1.1 and FLAN-T5 set it False (separate head, no rescale). `scale_decoder_outputs` exists
    because transformers 5 keeps the two apart (it can tie without rescaling); None means "same
    as tie_word_embeddings", the T5 paper's and transformers 4's rule.

    Raises:
        ValueError: naming the field, for non-positive sizes, an unknown `feed_forward_proj`,
            `position_encoding` or `norm_type`, relative-bucket settings that cannot work (see
            `t5edu.relative_position.check_bucket_settings`), token ids outside the vocabulary,
            or an odd `d_kv` with RoPE. `attention_backend` is checked when a model is built.

    Source: HF `transformers.T5Config`; Raffel et al. 2020 (T5); T5 v1.1 release notes. Ch. 3.
    """

    vocab_size: int = (
        32128  # 32000 SentencePiece pieces + 100 sentinels, padded to a multiple of 128
    )
    d_model: int = 512  # width of the residual stream
    d_kv: int = 64  # width of one attention head
    d_ff: int = 2048  # hidden width of the feed-forward
    num_layers: int = 6  # encoder blocks
    num_decoder_layers: int | None = None  # decoder blocks; None: same as num_layers
    num_heads: int = 8
    relative_attention_num_buckets: int = 32  # relative-position buckets per direction pair
    relative_attention_max_distance: int = 128  # distances beyond this share the last bucket
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    initializer_factor: float = 1.0  # scales every init std (HF's testing knob)
    # Untied head's init std: "hf" = 1 (HF, nanoT5), "fan_in" = d_model**-0.5 (Mesh TF's dense).
    lm_head_init: str = "hf"
    feed_forward_proj: str = "relu"  # "relu" (v1.0), "gated-gelu" (v1.1), or any GLU name
    tie_word_embeddings: bool = True  # LM head shares the embedding (v1.0)
    scale_decoder_outputs: bool | None = None  # d_model**-0.5 before the head; None: as tied
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0  # T5 starts decoding from the pad token
    attention_backend: str = "naive"  # a name in t5edu.backends.BACKENDS
    position_encoding: str = "relative_bias"  # or "rope", "alibi" (chapters 7-8)
    norm_type: str = "rmsnorm"  # a name in t5edu.norms.NORMS
    rope_base: float = 10000.0  # RoPE's theta, when position_encoding == "rope"

    def __post_init__(self):
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_layers
        if self.scale_decoder_outputs is None:
            self.scale_decoder_outputs = bool(self.tie_word_embeddings)
        self.validate()

    def validate(self) -> None:
        """Check every field; ValueError naming the first bad one (see the class docstring)."""
        for name in (
            "vocab_size",
            "d_model",
            "d_kv",
            "d_ff",
            "num_layers",
            "num_decoder_layers",
            "num_heads",
            "relative_attention_num_buckets",
            "relative_attention_max_distance",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1); got {self.dropout_rate!r}")
        if not self.layer_norm_epsilon > 0:
            raise ValueError(f"layer_norm_epsilon must be > 0; got {self.layer_norm_epsilon!r}")
        if not self.initializer_factor > 0:
            raise ValueError(f"initializer_factor must be > 0; got {self.initializer_factor!r}")
        if self.lm_head_init not in LM_HEAD_INITS:
            raise ValueError(
                f"lm_head_init must be one of {LM_HEAD_INITS}; got {self.lm_head_init!r}"
            )
        if self.feed_forward_proj not in FEED_FORWARD_PROJ:
            raise ValueError(
                f"feed_forward_proj must be one of {sorted(FEED_FORWARD_PROJ)}; "
                f"got {self.feed_forward_proj!r}"
            )
        if self.position_encoding not in POSITION_ENCODINGS:
            raise ValueError(
                f"position_encoding must be one of {list(POSITION_ENCODINGS)}; "
                f"got {self.position_encoding!r}"
            )
        from t5edu.norms import NORMS

        if self.norm_type not in NORMS:
            raise ValueError(f"norm_type must be one of {sorted(NORMS)}; got {self.norm_type!r}")
        if not isinstance(self.attention_backend, str):
            raise ValueError(
                f"attention_backend must be a backend name (str); got {self.attention_backend!r}"
            )
        if self.position_encoding == "relative_bias":
            # The encoder buckets bidirectionally, the decoder causally: both must work.
            for bidirectional in (True, False):
                try:
                    check_bucket_settings(
                        self.relative_attention_num_buckets,
                        self.relative_attention_max_distance,
                        bidirectional,
                    )
                except ValueError as err:
                    raise ValueError(
                        f"relative_attention_num_buckets={self.relative_attention_num_buckets} and "
                        f"relative_attention_max_distance={self.relative_attention_max_distance} "
                        f"cannot work: {err}"
                    ) from None
        if self.position_encoding == "rope":
            if self.d_kv % 2:
                raise ValueError(f"d_kv must be even for RoPE (it rotates pairs); got {self.d_kv}")
            if not self.rope_base > 1:  # base**(-2i/d) must decay, as RoPE requires
                raise ValueError(f"rope_base must be > 1; got {self.rope_base!r}")
        for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int; got {value!r}")
            if not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"{name} must be in [0, vocab_size={self.vocab_size}); got {value}"
                )

    # Derived quantities (HF computes the same ones in its T5Config.__post_init__).
    @property
    def is_gated_act(self) -> bool:
        """True for GLU feed-forwards (wi_0, wi_1, wo), False for dense ones (wi, wo)."""
        return FEED_FORWARD_PROJ[self.feed_forward_proj][0]

    @property
    def dense_act_fn(self) -> str:
        """Name of the feed-forward activation in `t5edu.activations.ACTIVATIONS`."""
        return FEED_FORWARD_PROJ[self.feed_forward_proj][1]

    @property
    def inner_dim(self) -> int:
        """num_heads * d_kv, the width attention projects into."""
        return self.num_heads * self.d_kv

    def replace(self, **changes) -> T5Config:
        """A copy with some fields changed (validated); ValueError naming an unknown field."""
        names = {f.name for f in dataclasses.fields(self)}
        for key in changes:
            if key not in names:
                raise ValueError(f"T5Config has no field {key!r}; fields are {sorted(names)}")
        if "tie_word_embeddings" in changes and "scale_decoder_outputs" not in changes:
            changes["scale_decoder_outputs"] = None  # follow the new tie setting
        return dataclasses.replace(self, **changes)

    @classmethod
    def get_config(cls, name: str, **overrides) -> T5Config:
        """A preset by name, optionally with fields overridden (e.g. `vocab_size=`).

        Names: `small base large xl xxl` (T5 v1.1 shapes), `t5-small t5-base t5-large t5-3b
        t5-11b` (also with the `google-t5/` prefix), `google/t5-v1_1-{small,base,large,xl,xxl}`,
        `google/flan-t5-{small,base,large,xl,xxl}` (same shapes as v1.1), and `tiny`: a v1.1-style
        model (d_model 128, 2+2 layers, 4 heads, vocab 8192, no dropout) that trains on a CPU in
        minutes. Raises ValueError listing the names for an unknown one.
        """
        key = name.removeprefix("google-t5/") if isinstance(name, str) else None
        if key not in PRESETS:
            raise ValueError(f"name must be one of {sorted(PRESETS)}; got {name!r}")
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"overrides: unknown T5Config fields {unknown}")
        return cls(**{**PRESETS[key], **overrides})

    # --- HF conversion ---------------------------------------------------------------------
    @classmethod
    def from_hf(cls, hf_config: Any, **overrides) -> T5Config:
        """From a `transformers.T5Config` or a config.json dict; unknown HF keys are ignored.

        Handles transformers 5, which forces `tie_word_embeddings=True` and keeps the rescale
        in `scale_decoder_outputs`: there a v1.1 config reads as untied, unscaled.
        """
        get = (
            hf_config.get
            if isinstance(hf_config, dict)
            else (lambda k, d=None: getattr(hf_config, k, d))
        )
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: get(k) for k in names if get(k) is not None}
        scale = get("scale_decoder_outputs")
        if scale is not None:  # transformers 5: only the rescale flag is meaningful
            kwargs["tie_word_embeddings"] = kwargs["scale_decoder_outputs"] = bool(scale)
        kwargs.pop("attention_backend", None)
        if "feed_forward_proj" in kwargs:
            kwargs["feed_forward_proj"] = _proj_from_hf(kwargs["feed_forward_proj"])
        if isinstance(kwargs.get("eos_token_id"), list):
            raise ValueError(f"eos_token_id must be one int; got {kwargs['eos_token_id']!r}")
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_dict(self) -> dict:
        """Every field but the run-time `attention_backend`, JSON-ready (our checkpoints of
        variants HF cannot run, such as RoPE or ALiBi T5s, store this)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.pop("attention_backend")
        return out

    @property
    def is_hf_compatible(self) -> bool:
        """Whether HF's T5 can run this config: relative bias and an RMSNorm ("fast_rmsnorm"
        has the same forward bit for bit, only a leaner backward; HF reads it as "rmsnorm")."""
        return self.position_encoding == "relative_bias" and self.norm_type in _HF_NORMS

    def to_hf_dict(self) -> dict:
        """The config.json dict HF writes for this model (no transformers import needed).

        Raises ValueError when HF's T5 cannot represent the config (RoPE/ALiBi, another norm).
        """
        if not self.is_hf_compatible:
            raise ValueError(
                "HF's T5 supports only position_encoding='relative_bias' and norm_type "
                f"{' or '.join(map(repr, _HF_NORMS))}; "
                f"got position_encoding={self.position_encoding!r}, norm_type={self.norm_type!r}"
            )
        gated, act = FEED_FORWARD_PROJ[self.feed_forward_proj]
        # HF spells every GLU "gated-<act>", and maps "gated-gelu" onto the tanh GELU.
        proj = ("gated-gelu" if act == "gelu_new" else f"gated-{act}") if gated else act
        out = self.to_dict()
        for key in _T5EDU_FIELDS:
            out.pop(key)
        out.update(
            feed_forward_proj=proj,
            model_type="t5",
            architectures=["T5ForConditionalGeneration"],
            is_encoder_decoder=True,
        )
        return out

    def to_hf(self, **hf_kwargs):
        """A `transformers.T5Config` equal to this one (see `to_hf_dict`); `hf_kwargs` (e.g.
        `attn_implementation="eager"`) go to its constructor."""
        import transformers

        d = self.to_hf_dict()
        for key in ("model_type", "architectures"):
            d.pop(key)
        scale = d.pop("scale_decoder_outputs")
        hf = transformers.T5Config(**d, **hf_kwargs)
        if hasattr(hf, "scale_decoder_outputs"):
            # transformers 5 ties the weights whatever the config says; to_hf(model) unties them.
            hf.scale_decoder_outputs = scale
        elif scale != self.tie_word_embeddings:
            raise ValueError(
                "this transformers release cannot rescale without tying: "
                f"tie_word_embeddings={self.tie_word_embeddings}, scale_decoder_outputs={scale}"
            )
        return hf


def _proj_from_hf(name: str) -> str:
    """Our feed_forward_proj for HF's spelling ("gated-sigmoid" is our "glu"); else unchanged."""
    if name in FEED_FORWARD_PROJ or not name.startswith("gated-"):
        return name
    act = name.removeprefix("gated-")
    want = (True, "gelu_new" if act == "gelu" else act)
    return next((k for k, v in FEED_FORWARD_PROJ.items() if v == want), name)


__all__ = ["T5Config", "PRESETS", "PUBLISHED_SIZES", "POSITION_ENCODINGS", "num_parameters"]
