"""The book's shipped pre-trained model (book/results/t5-tiny-stdlib) and its loader."""

import io
import json
import os

import pytest
import torch

from t5edu.train import shipped

FOLDER = shipped.book_model_dir()


def test_the_checkout_holds_every_file_and_the_weights_fit_the_size_limit():
    assert sorted(p.name for p in FOLDER.iterdir() if p.name != "README.md") == sorted(
        shipped.BOOK_MODEL_FILES
    )
    assert (FOLDER / "model.safetensors").stat().st_size <= 50 * 2**20  # the limit


def test_it_loads_in_t5edu_and_in_hf_with_the_same_logits():
    transformers = pytest.importorskip("transformers")
    model, tokenizer = shipped.load_book_model()
    assert len(tokenizer) == model.config.vocab_size
    hf = transformers.T5ForConditionalGeneration.from_pretrained(
        FOLDER, attn_implementation="eager"
    )
    ids = torch.tensor([tokenizer.encode("def add(a, b): return a + b")])
    with torch.no_grad():
        ours = model(input_ids=ids, labels=ids).logits
        theirs = hf.eval()(input_ids=ids, labels=ids).logits
    assert torch.equal(ours, theirs)  # naive attention is HF eager, bit for bit


def test_the_recorded_run_pre_trained_with_span_corruption_and_its_loss_fell():
    records = [json.loads(line) for line in (FOLDER / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] >= 6000
    assert evals[-1]["span_corruption/val_loss"] < 0.6 * evals[0]["span_corruption/val_loss"]


def test_a_plain_install_without_download_is_told_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(shipped, "local_results_dir", lambda: None)
    monkeypatch.setenv("T5EDU_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="pass download=True to fetch it from GitHub"):
        shipped.book_model_dir()


def test_download_fetches_each_file_into_the_cache_readable_by_all(monkeypatch, tmp_path):
    monkeypatch.setattr(shipped, "local_results_dir", lambda: None)
    monkeypatch.setenv("T5EDU_CACHE", str(tmp_path))
    asked = []

    def fake_urlopen(url, timeout):
        asked.append(url)
        return io.BytesIO((FOLDER / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(shipped, "urlopen", fake_urlopen)
    folder = shipped.book_model_dir(download=True)
    assert folder == tmp_path / shipped.BOOK_MODEL
    assert [u.rsplit("/", 1)[1] for u in asked] == list(shipped.BOOK_MODEL_FILES)
    assert all(u.startswith(shipped.RAW_PREFIX) for u in asked)
    for name in shipped.BOOK_MODEL_FILES:
        assert (folder / name).read_bytes() == (FOLDER / name).read_bytes()
        assert os.stat(folder / name).st_mode & 0o777 == 0o644
    assert sorted(p.name for p in folder.iterdir()) == sorted(shipped.BOOK_MODEL_FILES)
    shipped.book_model_dir(download=True)  # cached: nothing fetched again
    assert len(asked) == len(shipped.BOOK_MODEL_FILES)


def test_an_interrupted_download_leaves_no_partial_file(monkeypatch, tmp_path):
    monkeypatch.setattr(shipped, "local_results_dir", lambda: None)
    monkeypatch.setenv("T5EDU_CACHE", str(tmp_path))

    def failing(url, timeout):
        raise OSError("network unreachable")

    monkeypatch.setattr(shipped, "urlopen", failing)
    with pytest.raises(OSError, match="network unreachable"):
        shipped.book_model_dir(download=True)
    assert list((tmp_path / shipped.BOOK_MODEL).iterdir()) == []
