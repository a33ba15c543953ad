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
