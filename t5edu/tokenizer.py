"""A SentencePiece tokenizer with T5's conventions: train, encode, decode, pad (chapter 10).

B batch, T sequence length (tokens, eos included).

T5's vocabulary (Raffel et al., 2020, section 2.2) is a SentencePiece unigram model (Kudo, 2018)
whose first ids are fixed: pad=0 (also the decoder's start token), eos=1, unk=2, and no bos.
The 100 sentinels `<extra_id_0>`..`<extra_id_99>` used by span corruption are *not* pieces of the
SentencePiece model: like Hugging Face's `T5Tokenizer`, they are appended after the model's
pieces, in reverse order, so `<extra_id_0>` has the highest id, `vocab_size - 1`, and
`<extra_id_i>` is `vocab_size - 1 - i`. This is why `noise_span_to_unique_sentinel` can count
sentinels down from `vocab_size - 1` without knowing the tokenizer.

`T5Tokenizer.load` reads any T5 `spiece.model`, ours or a public checkpoint's; the ids match HF's
`T5Tokenizer` on the same file (tests/test_tokenizer.py checks this). SentencePiece normalises text
before encoding (NFKC, runs of whitespace, newlines included, become one space), as T5 does, so
`decode(encode(text))` returns the *normalised* text.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2  # T5's fixed special ids (HF T5Tokenizer agrees)
NUM_EXTRA_IDS = 100  # T5's sentinels <extra_id_0>..<extra_id_99>
_SENTINEL = re.compile(r"<extra_id_(\d+)>")


@dataclass
class BatchEncoding:
    """A padded batch: `input_ids` `(batch, seq_len)` int64 and `attention_mask` `(batch,
    seq_len)` int64 with 1 on real tokens and 0 on padding (HF's field names)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


class T5Tokenizer:
    """Encode text to T5 ids and back with a SentencePiece model plus 100 sentinels.

    `vocab_size` = pieces in the SentencePiece model + `extra_ids` (32000 + 100 = 32100 for the
    public T5 checkpoints). Build one with `train_tokenizer`, `T5Tokenizer.load(path)` or
    `default_tokenizer()`.

    Raises:
        ValueError: if the model does not put pad, eos, unk at ids 0, 1, 2 or has a bos id.
    """

    pad_token_id = PAD_ID
    eos_token_id = EOS_ID
    unk_token_id = UNK_ID
    decoder_start_token_id = PAD_ID  # T5 starts decoding from the pad id

    def __init__(self, model_proto: bytes, extra_ids: int = NUM_EXTRA_IDS):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        got = (self.sp.pad_id(), self.sp.eos_id(), self.sp.unk_id(), self.sp.bos_id())
        if got != (PAD_ID, EOS_ID, UNK_ID, -1):
            raise ValueError(
                f"model_proto must be a SentencePiece model with T5's ids pad=0, eos=1, unk=2 "
                f"and no bos; got pad={got[0]}, eos={got[1]}, unk={got[2]}, bos={got[3]}"
            )
        if not 0 <= extra_ids:
            raise ValueError(f"extra_ids must be >= 0; got {extra_ids}")
        self.model_proto = bytes(model_proto)
        self.extra_ids = extra_ids
        self.num_pieces = self.sp.get_piece_size()
        self.vocab_size = self.num_pieces + extra_ids

    # -- ids of special tokens ---------------------------------------------------------------
    def __len__(self) -> int:
        return self.vocab_size

    def sentinel_id(self, i: int) -> int:
        """The id of `<extra_id_i>`: `vocab_size - 1 - i` (sentinels count down from the top)."""
        if not 0 <= i < self.extra_ids:
            raise ValueError(f"sentinel index i must be in [0, {self.extra_ids}); got {i}")
        return self.vocab_size - 1 - i

    def is_sentinel(self, token_id: int) -> bool:
        """Whether `token_id` is one of the sentinels `<extra_id_*>`."""
        return self.num_pieces <= token_id < self.vocab_size

    def id_to_piece(self, token_id: int) -> str:
        """The piece string of one id (`<extra_id_i>` for sentinels, `▁` marks a space)."""
        self._check_ids([token_id])
        if self.is_sentinel(token_id):
            return f"<extra_id_{self.vocab_size - 1 - token_id}>"
        return self.sp.id_to_piece(token_id)

    def convert_ids_to_tokens(self, ids) -> list[str]:
        """Piece strings of a sequence of ids (HF's name)."""
        return [self.id_to_piece(int(i)) for i in ids]

    # -- encode / decode -----------------------------------------------------------------------
    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        """Token ids of `text`, with `eos` appended unless `add_eos=False`.

        Literal `<extra_id_N>` (N < `extra_ids`) in the text become the sentinel ids and the text
        between them is encoded piece by piece, as HF's T5Tokenizer does.

        Raises:
            ValueError: if `text` is not a str.
        """
        if not isinstance(text, str):
            raise ValueError(f"text must be a str; got {type(text).__name__}")
        ids: list[int] = []
        pos = 0
        for m in _SENTINEL.finditer(text):
            if int(m.group(1)) >= self.extra_ids:
                continue  # not one of our sentinels: plain text, as in HF
            ids += self.sp.encode(text[pos : m.start()])
            ids.append(self.sentinel_id(int(m.group(1))))
            pos = m.end()
        ids += self.sp.encode(text[pos:])
        return ids + [EOS_ID] if add_eos else ids

    def tokenize(self, text: str) -> list[str]:
        """The pieces `text` splits into (no eos)."""
        return self.convert_ids_to_tokens(self.encode(text, add_eos=False))

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text of `ids` (a list or 1-D tensor), HF-style.

        Pieces are joined and `▁` becomes a space; pad, eos and sentinels print as `<pad>`,
        `</s>` and `<extra_id_i>`, or are dropped with `skip_special_tokens=True`. Unknown pieces
        print as `<unk>` either way (HF drops them when skipping; we never hide lost text).

        Raises:
            ValueError: if an id is outside `[0, vocab_size)` (e.g. the -100 of ignored labels:
                replace those with `pad_token_id` first).
        """
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"ids must be 1-D; got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        special = {PAD_ID: "<pad>", EOS_ID: "</s>"}
        parts = []
        for i in ids:
            if i in special or self.is_sentinel(i):
                if not skip_special_tokens:
                    parts.append(special.get(i) or self.id_to_piece(i))
            elif i == UNK_ID:
                parts.append("<unk>")
            else:
                parts.append(self.sp.id_to_piece(i))
        text = "".join(parts).replace("\u2581", " ")
        return text[1:] if text.startswith(" ") else text

    def _check_ids(self, ids: list[int]) -> None:
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(
                f"ids must be in [0, vocab_size={self.vocab_size}); got {bad[:5]}"
                + (" (replace the -100 of ignored labels with pad_token_id)" if -100 in bad else "")
            )

    # -- batches -------------------------------------------------------------------------------
    def __call__(
        self,
        texts: list[str],
        *,
        max_length: int | None = None,
        padding: bool | str = True,
        truncation: bool = False,
        add_eos: bool = True,
    ) -> BatchEncoding:
        """Encode a batch of texts into padded `(batch, seq_len)` tensors.

        Args:
            texts: the strings to encode.
            max_length: the longest sequence allowed (eos included).
            padding: True or "longest" pads to the longest sequence; "max_length" pads to
                `max_length`.
            truncation: only when True are sequences longer than `max_length` cut, keeping eos
                as the last token (as HF does); otherwise they raise.

        Raises:
            ValueError: if `texts` is empty or not a list of str, if a sequence is longer than
                `max_length` and `truncation` is False (naming its index, length and the limit),
                if `padding="max_length"` or `truncation=True` comes without `max_length`, or if
                `padding` is not one of the values above.
        """
        if isinstance(texts, str) or not isinstance(texts, list | tuple):
            raise ValueError(f"texts must be a list of str; got {type(texts).__name__}")
        if not texts:
            raise ValueError("texts must be a non-empty list of str; got an empty list")
        if padding not in (True, "longest", "max_length"):
            raise ValueError(f"padding must be True, 'longest' or 'max_length'; got {padding!r}")
        if (padding == "max_length" or truncation) and max_length is None:
            raise ValueError(f"padding={padding!r}, truncation={truncation} need max_length")
        if max_length is not None and max_length < 1 + add_eos:
            raise ValueError(f"max_length must be >= {1 + add_eos}; got {max_length}")
        seqs = [self.encode(t, add_eos=add_eos) for t in texts]
        if max_length is not None:
            for b, s in enumerate(seqs):
                if len(s) <= max_length:
                    continue
                if not truncation:
                    raise ValueError(
                        f"texts[{b}] encodes to {len(s)} tokens, longer than max_length="
                        f"{max_length}; pass truncation=True to cut it or raise max_length"
                    )
                seqs[b] = s[: max_length - 1] + [EOS_ID] if add_eos else s[:max_length]
        width = max_length if padding == "max_length" else max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), PAD_ID, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for b, s in enumerate(seqs):
            input_ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
            attention_mask[b, : len(s)] = 1
        return BatchEncoding(input_ids, attention_mask)

    # -- files -----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the SentencePiece model (a T5-compatible `spiece.model`) atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.model_proto)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write `directory/spiece.model`, the file HF's `T5Tokenizer.from_pretrained` reads."""
        self.save(Path(directory) / "spiece.model")

    @classmethod
    def load(cls, path: str | os.PathLike, extra_ids: int = NUM_EXTRA_IDS) -> T5Tokenizer:
        """Read a SentencePiece model file, ours or a T5 checkpoint's `spiece.model` (a
        directory holding `spiece.model` works too).

        Raises:
            ValueError: if the file is missing or not a SentencePiece model with T5's ids.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "spiece.model"
        if not path.is_file():
            raise ValueError(f"path {str(path)!r} is not a SentencePiece model file")
        try:
            return cls(path.read_bytes(), extra_ids)
        except (RuntimeError, OSError) as e:  # sentencepiece raises RuntimeError on bad protos
            raise ValueError(
                f"path {str(path)!r} is not a readable SentencePiece model: {e}"
            ) from e

    def __repr__(self) -> str:
        return (
            f"T5Tokenizer(vocab_size={self.vocab_size}, pieces={self.num_pieces}, "
            f"extra_ids={self.extra_ids})"
        )


def _training_lines(texts, max_sentences: int, seed: int) -> list[str]:
    """Non-empty lines of `texts`, a seeded sample of at most `max_sentences` of them.

    SentencePiece trains on "sentences" up to 4192 bytes; lines keep code and prose under that.
    """
    lines = [line.strip() for t in texts for line in t.splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > max_sentences:
        lines = random.Random(seed).sample(lines, max_sentences)
    return lines


def train_tokenizer(
    texts,
    vocab_size: int = 4096,
    *,
    extra_ids: int = NUM_EXTRA_IDS,
    max_sentences: int = 30_000,
    seed: int = 0,
    character_coverage: float = 0.9995,
) -> T5Tokenizer:
    """Train a SentencePiece unigram model with T5's ids on `texts` and wrap it.

    Args:
        texts: an iterable of strings (split into lines to train on).
        vocab_size: the final vocabulary size *including* the `extra_ids` sentinels, so
            `train_tokenizer(texts, 4096).vocab_size == 4096` and `<extra_id_0>` is 4095.
        max_sentences: train on a seeded random sample of at most this many lines (speed:
            ~30k lines, ~1 MB, train a 4k vocabulary in a few seconds on one core).
        seed: the sampling seed. Training runs on one thread so the same texts and seed give
            the same model on every machine.
        character_coverage: SentencePiece's share of characters kept as pieces; rarer ones
            become unk.

    Raises:
        ValueError: if `texts` holds no non-empty line (an empty corpus), or `vocab_size` leaves
            fewer than 16 SentencePiece pieces after the sentinels.
    """
    import sentencepiece as spm

    if isinstance(texts, str):
        raise ValueError("texts must be an iterable of str, not one str")
    num_pieces = vocab_size - extra_ids
    if num_pieces < 16:
        raise ValueError(
            f"vocab_size={vocab_size} leaves {num_pieces} pieces after extra_ids={extra_ids}; "
            f"need at least 16"
        )
    lines = _training_lines(texts, max_sentences, seed)
    if not lines:
        raise ValueError("empty corpus: texts holds no non-empty line to train the tokenizer on")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            model_type="unigram",
            vocab_size=num_pieces,
            pad_id=PAD_ID,
            eos_id=EOS_ID,
            unk_id=UNK_ID,
            bos_id=-1,
            character_coverage=character_coverage,
            input_sentence_size=0,  # we sampled already; keep every line given
            num_threads=1,  # multi-threaded EM sums in another order: another model
            minloglevel=2,  # no wall of C++ logs in notebooks
        )
    except RuntimeError as e:  # e.g. a vocabulary larger than the text supports
        raise ValueError(f"SentencePiece could not train vocab_size={vocab_size}: {e}") from e
    return T5Tokenizer(model.getvalue(), extra_ids)


def default_tokenizer(
    vocab_size: int = 4096,
    *,
    cache_dir: str | os.PathLike | None = None,
    max_sentences: int = 30_000,
    seed: int = 0,
) -> T5Tokenizer:
    """The book's tokenizer: trained on the standard-library corpus's train split, then cached.

    The first call builds `t5edu.data.stdlib_corpus()` (cached too) and trains for a few
    seconds; later calls read `<cache_dir>/tokenizer-<python version>-v<vocab_size>-<hash>.model`
    (the hash covers the training text and options). See `train_tokenizer` for the arguments.
    """
    from t5edu.data.corpus import default_cache_dir, stdlib_corpus

    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    corpus = stdlib_corpus(cache_dir=cache_dir)
    texts = corpus.texts("train")
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
    h.update(f"{max_sentences}-{seed}".encode())
    path = cache / f"tokenizer-py{corpus.python_version}-v{vocab_size}-{h.hexdigest()[:12]}.model"
    if path.is_file():
        try:
            return T5Tokenizer.load(path)
        except ValueError:
            pass  # a damaged cache is retrained, never trusted
    tok = train_tokenizer(texts, vocab_size, max_sentences=max_sentences, seed=seed)
    try:
        tok.save(path)
    except OSError:
        pass  # unwritable cache: retrain next time
    return tok
