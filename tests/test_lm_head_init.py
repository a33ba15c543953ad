"""The untied LM head's init: HF's std 1 and Mesh TF's fan-in scale (the 42-nat start)."""

import math

import pytest
import torch

import t5edu

VOCAB = 512


def _model(lm_head_init, d_model=128, seed=0):
    torch.manual_seed(seed)
    cfg = t5edu.T5Config.get_config(
        "tiny", vocab_size=VOCAB, d_model=d_model, lm_head_init=lm_head_init
    )
    return t5edu.T5ForConditionalGeneration(cfg)


@pytest.mark.parametrize("d_model", [64, 256])
def test_hf_init_has_std_one_and_fan_in_has_d_model_to_the_minus_half(d_model):
    # HF's _init_weights: normal(std=initializer_factor) for an untied lm_head (transformers 4;
    # transformers 5 ties v1.1 heads to the embedding on construction, of std 1 as well).
    # VOCAB * d_model >= 32k samples: the sample std is within 2% of the true one (> 5 sigma).
    assert _model("hf", d_model).lm_head.weight.std().item() == pytest.approx(1.0, rel=0.02)
    fan_in = _model("fan_in", d_model).lm_head.weight.std().item()
    assert fan_in == pytest.approx(d_model**-0.5, rel=0.02)


def test_first_loss_is_tens_of_nats_with_hfs_init_and_near_ln_v_with_fan_in():
    torch.manual_seed(1)
    input_ids = torch.randint(2, VOCAB, (4, 16))
    labels = torch.randint(2, VOCAB, (4, 8))
    losses = {}
    for init in ("hf", "fan_in"):
        with torch.no_grad():
            losses[init] = _model(init).eval()(input_ids=input_ids, labels=labels).loss.item()
    ln_v = math.log(VOCAB)
    assert losses["hf"] > 3 * ln_v  # logits of std ~sqrt(128) ~ 11: confidently wrong
    assert abs(losses["fan_in"] - ln_v) < 1.0  # logits of std ~1: E[loss] = ln V + ~0.5


def test_lm_head_init_touches_only_the_untied_head():
    a, b = _model("hf"), _model("fan_in")
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        if name != "lm_head.weight":
            assert torch.equal(p, q), name


def test_lm_head_init_is_not_written_to_hfs_config_and_round_trips_in_ours(tmp_path):
    model = _model("fan_in")
    assert "lm_head_init" not in model.config.to_hf_dict()
    assert model.config.to_dict()["lm_head_init"] == "fan_in"
    model.save_pretrained(tmp_path)
    back = t5edu.T5ForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(back.lm_head.weight, model.lm_head.weight)


def test_unknown_lm_head_init_is_refused_with_the_choices():
    with pytest.raises(
        ValueError, match=r"lm_head_init must be one of \('hf', 'fan_in'\); got 'xavier'"
    ):
        t5edu.T5Config.get_config("tiny", lm_head_init="xavier")
