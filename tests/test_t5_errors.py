"""Bad input to the T5 model raises ValueError naming the argument."""

import pytest
import torch

from t5edu.config import T5Config
from t5edu.t5_model import T5ForConditionalGeneration

CFG = dict(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(**CFG)).eval()


IDS = torch.tensor([[5, 6, 7], [8, 9, 10]])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(input_ids=IDS[0], labels=IDS), "input_ids"),  # rank 1
        (dict(input_ids=IDS[None], labels=IDS), "input_ids"),  # rank 3
        (dict(input_ids=IDS.float(), labels=IDS), "input_ids"),
        (dict(input_ids=IDS + 60, labels=IDS), "input_ids"),  # >= vocab_size
        (dict(input_ids=IDS - 6, labels=IDS), "input_ids"),  # negative
        (dict(input_ids=IDS, labels=IDS + 60), "labels"),
        (dict(input_ids=IDS, labels=torch.tensor([[5, -1, 6], [1, 2, 3]])), "labels"),
        (dict(input_ids=IDS, decoder_input_ids=IDS[:, None]), "decoder_input_ids"),
        (dict(input_ids=IDS, decoder_input_ids=IDS + 64), "decoder_input_ids"),
        (dict(input_ids=IDS, decoder_input_ids=IDS[:1]), "decoder_input_ids"),  # batch 1 vs 2
        (dict(input_ids=IDS, attention_mask=torch.ones(2, 4), labels=IDS), "attention_mask"),
        (dict(input_ids=IDS, attention_mask=torch.ones(2, 3), labels=IDS), "attention_mask"),
        (
            dict(input_ids=IDS, labels=IDS, decoder_attention_mask=torch.ones(2, 2, dtype=int)),
            "decoder_attention_mask",
        ),
        (dict(input_ids=IDS), "decoder_input_ids"),  # nothing to decode
        (dict(labels=IDS), "input_ids"),  # nothing to encode
    ],
)
def test_bad_forward_input(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        model(**kwargs)


def test_labels_shape_must_match_decoder_input(model):
    with pytest.raises(ValueError, match="labels"):
        model(input_ids=IDS, decoder_input_ids=IDS, labels=IDS[:, :2])


def test_unknown_attention_backend():
    with pytest.raises(ValueError, match="attention_backend"):
        T5ForConditionalGeneration(T5Config(**CFG, attention_backend="fastest"))
    model = T5ForConditionalGeneration(T5Config(**CFG))
    with pytest.raises(ValueError, match="backend"):
        model.set_attention_backend("fastest")


def test_bad_generate_input(model):
    for kwargs, match in [
        (dict(input_ids=IDS[0]), "input_ids"),
        (dict(input_ids=IDS, attention_mask=torch.ones(1, 3)), "attention_mask"),
        (dict(input_ids=IDS, max_new_tokens=0), "max_new_tokens"),
        (dict(input_ids=IDS, num_beams=0), "num_beams"),
        (dict(input_ids=IDS, do_sample=True, temperature=0.0), "temperature"),
        (dict(input_ids=IDS, do_sample=True, top_k=0), "top_k"),
        (dict(input_ids=IDS, do_sample=True, top_p=1.5), "top_p"),
        (dict(input_ids=IDS, num_beams=2, early_stopping="sometimes"), "early_stopping"),
    ]:
        with pytest.raises(ValueError, match=match):
            model.generate(**kwargs)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_beams=2, length_penalty=NAN), r"length_penalty must be a finite number.*nan"),
        (dict(num_beams=2, length_penalty=INF), r"length_penalty must be a finite number.*inf"),
        (dict(num_beams=2, length_penalty=-INF), r"length_penalty must be a finite number"),
        (dict(num_beams=2, length_penalty="1.0"), r"length_penalty must be a finite number"),
        (dict(do_sample=True, temperature=NAN), r"temperature must be a finite number > 0.*nan"),
        (dict(do_sample=True, temperature=INF), r"temperature must be a finite number > 0.*inf"),
        (dict(do_sample=True, temperature="hot"), r"temperature must be a finite number"),
        (dict(do_sample=True, top_p=NAN), r"top_p must be None or a number in \(0, 1\].*nan"),
        (dict(do_sample=True, top_p=INF), r"top_p must be None or a number in \(0, 1\]"),
        (dict(num_beams=2, early_stopping=1), r"early_stopping must be True, False or 'never'"),
        (dict(do_sample="yes"), r"do_sample must be True or False; got 'yes'"),
        (dict(use_cache=1), r"use_cache must be True or False; got 1"),
    ],
)
def test_generate_refuses_non_finite_and_mistyped_settings(model, kwargs, match):
    """length_penalty=nan used to return an arbitrary beam (every finished score NaN),
    temperature=inf a uniform sample, early_stopping=1 ran as False (beam search tests `is`)."""
    with pytest.raises(ValueError, match=match):
        model.generate(IDS, max_new_tokens=3, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.long])
@pytest.mark.parametrize("arg", ["inputs_embeds", "decoder_inputs_embeds"])
def test_embeds_of_another_dtype_name_the_argument_and_both_dtypes(model, arg, dtype):
    """A float64 inputs_embeds used to fail in the first matmul ('expected m1 and m2 to have
    the same dtype'), naming neither the argument nor the dtype the model expects."""
    embeds = torch.zeros(2, 3, CFG["d_model"], dtype=dtype)
    kwargs = {"input_ids": IDS, "decoder_input_ids": IDS}
    kwargs.pop("input_ids" if arg == "inputs_embeds" else "decoder_input_ids")
    match = rf"{arg} must have the model's dtype torch.float32 .*got dtype {dtype}"
    with pytest.raises(ValueError, match=match):
        model(**kwargs, **{arg: embeds})


def test_embeds_of_the_model_dtype_and_under_autocast_still_run(model):
    embeds = model.shared(IDS)
    want = model(input_ids=IDS, decoder_input_ids=IDS).logits
    with torch.no_grad():
        got = model(inputs_embeds=embeds, decoder_input_ids=IDS).logits
    torch.testing.assert_close(got, want)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        out = model(inputs_embeds=embeds.bfloat16(), decoder_input_ids=IDS).logits
    assert out.shape == want.shape and torch.isfinite(out).all()
