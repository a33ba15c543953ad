"""Convert to and from HF Transformers, read and write HF checkpoint directories (chapter 3).

Our parameter names are HF's, so a state dict maps 1:1; the only subtleties are the aliases of
the shared embedding (`encoder.embed_tokens`, `decoder.embed_tokens`, a tied `lm_head`).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from t5edu.config import T5Config
from t5edu.t5_model import T5ForConditionalGeneration

EMBEDDING_ALIASES = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
# In checkpoints of older transformers releases; HF ignores it too (cross-attention has no bias).
UNUSED_KEYS = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)


def _canonical_state_dict(model: nn.Module, state_dict: dict) -> dict:
    """Checkpoint tensors keyed like `model.state_dict()`, aliases resolved, or ValueError."""
    sd = dict(state_dict)
    for key in UNUSED_KEYS:
        if key in sd:
            warnings.warn(
                f"ignoring {key}: T5's cross-attention has no position bias", stacklevel=3
            )
            del sd[key]
    present = [k for k in EMBEDDING_ALIASES if k in sd]
    for k in present[1:]:
        if sd[k].shape != sd[present[0]].shape or not torch.equal(sd[k], sd[present[0]]):
            raise ValueError(f"{k} differs from {present[0]}; T5 shares one embedding matrix")
    if present:
        for k in EMBEDDING_ALIASES:
            sd.setdefault(k, sd[present[0]])
    tied = getattr(model, "lm_head", None) is not None and (
        model.lm_head.weight is model.shared.weight
    )
    if tied and present:
        if "lm_head.weight" in sd and not torch.equal(sd["lm_head.weight"], sd["shared.weight"]):
            raise ValueError(
                "lm_head.weight differs from shared.weight but the config ties them; load it "
                "with tie_word_embeddings=False"
            )
        sd["lm_head.weight"] = sd["shared.weight"]
    want = model.state_dict()
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    misshaped = [
        f"{k}: checkpoint {tuple(sd[k].shape)}, model {tuple(want[k].shape)}"
        for k in sorted(set(sd) & set(want))
        if sd[k].shape != want[k].shape
    ]
    if missing or unexpected or misshaped:
        raise ValueError(
            "checkpoint does not fit the model (config mismatch?):\n"
            f"  missing: {missing}\n  unexpected: {unexpected}\n  mis-shaped: {misshaped}"
        )
    return sd


def load_state_dict_strict(model: nn.Module, state_dict: dict, keep_dtypes: bool = False) -> None:
    """Copy a (HF-named) state dict into `model`, refusing anything that does not fit.

    Raises:
        ValueError: listing by name the missing, unexpected and mis-shaped tensors, and for
            embedding aliases that disagree. Known-unused keys of old HF checkpoints are dropped
            with a warning. keep_dtypes: give each parameter the checkpoint's dtype (HF keeps
            `wo` in float32 in half-precision models).
    """
    sd = _canonical_state_dict(model, state_dict)
    params = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, target in model.state_dict(keep_vars=True).items():
            src = sd[name]
            if keep_dtypes and src.dtype != target.dtype and name in params:
                target.data = src.detach().to(target.device, copy=True)
            else:
                target.copy_(src)


def from_hf(hf_model, attention_backend: str = "naive", **overrides) -> T5ForConditionalGeneration:
    """Our `T5ForConditionalGeneration` with the weights, dtypes and device of an HF one.

    `overrides` set config fields that do not change the function computed, e.g.
    `norm_type="fast_rmsnorm"` or `dropout_rate`.

    Tying is read from the weights (transformers 5 ties whatever the config says), the rescale
    from `scale_decoder_outputs` (transformers 5) or `tie_word_embeddings` (earlier releases).
    Returned in eval mode if the HF model is in eval mode. Raises ValueError as
    `load_state_dict_strict`.
    """
    hf_cfg = hf_model.config
    tied = hf_model.lm_head.weight is hf_model.shared.weight
    scale = getattr(hf_cfg, "scale_decoder_outputs", None)
    scale = hf_cfg.tie_word_embeddings if scale is None else scale
    config = T5Config.from_hf(
        hf_cfg,
        tie_word_embeddings=tied,
        scale_decoder_outputs=bool(scale),
        attention_backend=attention_backend,
        **overrides,
    )
    w = hf_model.shared.weight
    model = T5ForConditionalGeneration(config).to(device=w.device, dtype=w.dtype)
    load_state_dict_strict(model, hf_model.state_dict(), keep_dtypes=True)
    return model.train(hf_model.training)


def to_hf(model: T5ForConditionalGeneration, attn_implementation: str | None = None):
    """A `transformers.T5ForConditionalGeneration` with our weights, dtypes and device.

    `attn_implementation` ("eager", "sdpa") is passed to HF's config. An untied head stays
    untied (transformers 5 ties on construction; the head is given back its own tensor).
    Raises ValueError for configs HF cannot run (see `T5Config.to_hf`).
    """
    import transformers

    kwargs = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    hf = transformers.T5ForConditionalGeneration(model.config.to_hf(**kwargs))
    if not model.config.tie_word_embeddings and hf.lm_head.weight is hf.shared.weight:
        hf.lm_head.weight = nn.Parameter(hf.lm_head.weight.detach().clone())
    hf.to(device=model.device, dtype=model.dtype)
    load_state_dict_strict(hf, model.state_dict(), keep_dtypes=True)
    return hf.train(model.training)


# --- checkpoint directories -------------------------------------------------------------------
def _read(loader, path: Path) -> dict:
    """loader(path), with a truncated or corrupted file reported by name as a ValueError."""
    try:
        return loader(path)
    except Exception as err:  # safetensors and torch raise their own types for bad bytes
        raise ValueError(f"checkpoint file {str(path)!r} cannot be read ({err})") from err


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err})") from err


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _weight_files(directory: Path) -> list[Path]:
    """The weight file(s) of a checkpoint directory: model.safetensors (or its shards), else
    pytorch_model.bin (or its shards). Shard names must be plain file names in `directory`."""
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return [directory / name]
        index = directory / f"{name}.index.json"
        if index.is_file():
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ValueError(f"{str(index)!r}: weight_map must be an object")
            shards = sorted(set(weight_map.values()), key=str)
            for shard in shards:
                # A name such as "../x" or "/etc/y" would read a file outside the checkpoint.
                if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".."):
                    raise ValueError(
                        f"{str(index)!r}: shard {shard!r} is not a file name inside {directory}"
                    )
            return [directory / shard for shard in shards]
    raise ValueError(
        f"path_or_name: {directory} has no model.safetensors or pytorch_model.bin (or index)"
    )


def _load_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    if path.suffix == ".safetensors":
        return _read(load_file, path)
    return _read(lambda f: torch.load(f, map_location="cpu", weights_only=True), path)


def _checkpoint_state_dict(directory: Path) -> dict:
    """All tensors of model.safetensors (sharded or not), else pytorch_model.bin."""
    out = {}
    for path in _weight_files(directory):
        out.update(_load_weights(path))
    return out


def _weight_shapes(directory: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """`{key: (shape, file name)}` of every stored tensor, read from the safetensors headers
    (no tensor data is read); a pytorch_model.bin is memory-mapped instead."""
    from safetensors import safe_open

    shapes = {}
    for path in _weight_files(directory):
        if path.suffix == ".safetensors":

            def read(f, path=path):
                with safe_open(str(f), framework="pt") as st:
                    return {k: tuple(st.get_slice(k).get_shape()) for k in st.keys()}  # noqa: SIM118

            found = _read(read, path)
        else:
            found = {
                k: tuple(v.shape)
                for k, v in _read(
                    lambda f: torch.load(f, map_location="cpu", weights_only=True, mmap=True), path
                ).items()
            }
        shapes.update({k: (shape, path.name) for k, shape in found.items()})
    return shapes


# config.json fields that size the model: checked for type and against the weights before the
# model is built (a wrong value could otherwise ask for terabytes, or hours of construction).
_SIZE_FIELDS = (
    "vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
    "relative_attention_num_buckets", "relative_attention_max_distance",
)  # fmt: skip
_BOOL_FIELDS = ("tie_word_embeddings", "scale_decoder_outputs", "is_encoder_decoder")


def check_config_json(raw, config_path: Path, shapes: dict) -> None:
    """Raise ValueError naming `config_path` and the field if config.json has a value of the
    wrong type or range, or one that disagrees with the stored weights' shapes.

    `shapes`: `_weight_shapes`'s `{key: (shape, file name)}`. Checked (when the key exists):
    the embedding is (vocab_size, d_model), the first query projection (num_heads * d_kv,
    d_model), the first feed-forward input (d_ff, d_model), the position bias
    (relative_attention_num_buckets, num_heads), and the block counts are num_layers and
    num_decoder_layers.
    """
    where = str(config_path)
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a JSON object; got a {type(raw).__name__}")

    def bad(name, expected):
        raise ValueError(f"{where}: {name} must be {expected}; got {raw[name]!r}")

    for name in _SIZE_FIELDS:
        value = raw.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            bad(name, "an integer >= 1")
    for name in _BOOL_FIELDS:  # "false" in quotes would read as true
        if raw.get(name) is not None and not isinstance(raw[name], bool):
            bad(name, "true or false")

    def number(value):
        return isinstance(value, int | float) and not isinstance(value, bool)

    dropout, eps = raw.get("dropout_rate"), raw.get("layer_norm_epsilon")
    if dropout is not None and not (number(dropout) and 0 <= dropout < 1):
        bad("dropout_rate", "a number in [0, 1)")
    if eps is not None and not (number(eps) and 0 < eps < 1):
        bad("layer_norm_epsilon", "a number in (0, 1)")
    if raw.get("feed_forward_proj") is not None and not isinstance(raw["feed_forward_proj"], str):
        bad("feed_forward_proj", "a string such as 'relu' or 'gated-gelu'")

    def expect(key, dims):  # dims: [(field or product label, expected size), ...]
        if key not in shapes:
            return
        shape, file = shapes[key]
        for axis, (label, size) in enumerate(dims):
            if size is not None and (len(shape) != len(dims) or shape[axis] != size):
                raise ValueError(
                    f"{where}: {label} is {size}, but {file} stores {key} with shape "
                    f"{shape}: the config does not describe these weights"
                )

    d_model, heads, d_kv = raw.get("d_model"), raw.get("num_heads"), raw.get("d_kv")
    embedding = next((k for k in EMBEDDING_ALIASES if k in shapes), None)
    if embedding:
        expect(embedding, [("vocab_size", raw.get("vocab_size")), ("d_model", d_model)])
    inner = heads * d_kv if heads and d_kv else None
    expect("encoder.block.0.layer.0.SelfAttention.q.weight",
           [("num_heads x d_kv", inner), ("d_model", d_model)])  # fmt: skip
    for wi in ("wi", "wi_0"):
        expect(f"encoder.block.0.layer.1.DenseReluDense.{wi}.weight",
               [("d_ff", raw.get("d_ff")), ("d_model", d_model)])  # fmt: skip
    expect("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
           [("relative_attention_num_buckets", raw.get("relative_attention_num_buckets")),
            ("num_heads", heads)])  # fmt: skip
    for stack, field in (("encoder", "num_layers"), ("decoder", "num_decoder_layers")):
        field = field if raw.get(field) is not None else "num_layers"
        want = raw.get(field)
        blocks = {int(k.split(".")[2]) for k in shapes if k.startswith(f"{stack}.block.")}
        if want is not None and blocks and len(blocks) != want:
            file = next(f for k, (_, f) in shapes.items() if k.startswith(f"{stack}.block."))
            raise ValueError(
                f"{where}: {field} is {raw.get(field)!r}, but {file} stores {len(blocks)} "
                f"{stack} blocks"
            )


def _download(name: str) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["config.json", "*.safetensors", "model.safetensors.index.json"]
    path = Path(snapshot_download(name, allow_patterns=patterns))
    if not any(path.glob("*.safetensors")):
        path = Path(snapshot_download(name, allow_patterns=["config.json", "pytorch_model*"]))
    return path


def from_pretrained(
    path_or_name: str | os.PathLike,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    allow_download: bool = False,
    attention_backend: str = "naive",
    **config_overrides,
) -> T5ForConditionalGeneration:
    """Load an HF T5 checkpoint directory (config.json + model.safetensors or pytorch_model.bin,
    sharded or not) into our `T5ForConditionalGeneration`, in eval mode.

    Args:
        path_or_name: a directory; a hub name (e.g. "google-t5/t5-small") only with
            `allow_download=True` (the default never touches the network).
        dtype: parameter dtype (default float32, whatever the checkpoint stores).
        device: where to put the model (default CPU).
        attention_backend, config_overrides: set config fields (e.g. dropout_rate=0.0).

    Tying follows the tensors: a checkpoint without `lm_head.weight`, or with one equal to the
    embedding, is tied; the rescale follows `scale_decoder_outputs` (transformers 5) or else
    `tie_word_embeddings`, as HF. Raises ValueError naming missing, unexpected and mis-shaped
    tensors, or a path that is not a checkpoint directory.
    """
    directory = Path(path_or_name)
    if not directory.is_dir():
        if not allow_download:
            raise ValueError(
                f"path_or_name: no directory {str(path_or_name)!r}; to fetch a hub model pass "
                "allow_download=True"
            )
        directory = _download(str(path_or_name))
    if not (directory / "config.json").is_file():
        raise ValueError(f"path_or_name: {str(directory)!r} has no config.json")
    raw = _read_json(directory / "config.json")
    # Before anything is built: a bad config.json must fail here, naming its field, not as an
    # allocation of d_model=1e9 or minutes of constructing num_layers=1e6 blocks.
    check_config_json(raw, directory / "config.json", _weight_shapes(directory))
    sd = _checkpoint_state_dict(directory)
    shared = next((sd[k] for k in EMBEDDING_ALIASES if k in sd), None)
    tie_flag = raw.get("tie_word_embeddings", True)
    scale = raw.get("scale_decoder_outputs", tie_flag)
    if "lm_head.weight" not in sd:
        # A transformers-4 config that says untied yet has no head: genuinely missing.
        tied = tie_flag or "scale_decoder_outputs" in raw
    else:
        tied = shared is not None and torch.equal(sd["lm_head.weight"], shared)
    fields = {"tie_word_embeddings": tied, "scale_decoder_outputs": bool(scale)}
    fields.update(attention_backend=attention_backend, **config_overrides)
    config = T5Config.from_hf(raw, **fields)
    model = _build_empty(config)
    load_state_dict_strict(model, sd)
    return model.to(device=device or "cpu", dtype=dtype or torch.float32).eval()


def _build_empty(config: T5Config) -> T5ForConditionalGeneration:
    """The model with uninitialised float32 CPU weights (every one is loaded next), skipping
    the random initialisation that costs minutes on billion-parameter models."""
    if config.position_encoding != "relative_bias":
        return T5ForConditionalGeneration(config)  # ALiBi/RoPE state would need rebuilding
    with torch.device("meta"):
        model = T5ForConditionalGeneration(config)
    model = model.to_empty(device="cpu")
    if config.tie_word_embeddings:
        model.lm_head.weight = model.shared.weight  # to_empty gives each module its own tensor
    return model


def save_pretrained(model: T5ForConditionalGeneration, path: str | os.PathLike) -> None:
    """Write config.json and model.safetensors that `transformers` (and `from_pretrained`) load.

    Each file is written to a temporary name in the directory and moved into place with
    `os.replace`, so an interrupted save never leaves a truncated file under the real name.
    The shared embedding is stored once as `shared.weight` (its aliases are omitted, as HF
    does); `lm_head.weight` is stored when untied. Variants HF cannot run (RoPE, ALiBi, other
    norms) get `model_type: "t5edu"`: transformers' Auto classes refuse them (and its
    T5ForConditionalGeneration warns) instead of silently misreading them as T5.
    """
    from safetensors.torch import save_file

    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    if config.is_hf_compatible:
        meta = config.to_hf_dict()
    else:
        meta = {
            **config.to_dict(),
            "model_type": "t5edu",
            "architectures": ["T5ForConditionalGeneration"],
        }
    meta["dtype"] = str(model.dtype).removeprefix("torch.")
    skip = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    if config.tie_word_embeddings:
        skip.add("lm_head.weight")
    tensors = {
        k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items() if k not in skip
    }
    tmp = directory / f".model.safetensors.tmp{os.getpid()}"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.chmod(tmp, 0o644)  # safetensors writes 0600; a checkpoint is read by other users too
    os.replace(tmp, directory / "model.safetensors")
    tmp = directory / f".config.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, directory / "config.json")


__all__ = ["from_hf", "to_hf", "from_pretrained", "save_pretrained", "load_state_dict_strict"]
