"""The transfer experiment's mechanics (t5edu.train.transfer), on the toy reverse task."""

import pytest
import torch

import t5edu
from t5edu.train import transfer
from t5edu.train.toy import decode_ids, reverse_task

VOCAB = 32


class ListTask:
    """A finite task as `Mixture` reads it: `name`, `len`, `example(i, generator=None)`."""

    def __init__(self, name, examples):
        self.name, self.examples = name, examples

    def __len__(self):
        return len(self.examples)

    def example(self, i, generator=None):
        return self.examples[i]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(7)
    cfg = t5edu.T5Config.get_config(
        "tiny", vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2
    )
    t5edu.T5ForConditionalGeneration(cfg).save_pretrained(path)
    return str(path)


SETTINGS = transfer.FinetuneSettings(
    steps=4, batch_size=4, warmup_steps=1, eval_every=2, max_new_tokens=8
)
TRAIN = [ListTask("reverse", reverse_task(16, VOCAB, max_length=5, seed=1))]
EVAL = {"reverse": reverse_task(4, VOCAB, max_length=5, seed=2)}


def test_pretrained_init_loads_the_checkpoint_and_random_init_does_not(checkpoint):
    saved = t5edu.T5ForConditionalGeneration.from_pretrained(checkpoint)
    pre = transfer.build_model("pre-trained", checkpoint, seed=0)
    rand0 = transfer.build_model("random", checkpoint, seed=0)
    rand0_again = transfer.build_model("random", checkpoint, seed=0)
    rand1 = transfer.build_model("random", checkpoint, seed=1)
    sd = saved.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in pre.state_dict().items())
    assert not torch.equal(rand0.shared.weight, saved.shared.weight)
    assert all(torch.equal(v, rand0_again.state_dict()[k]) for k, v in rand0.state_dict().items())
    assert not torch.equal(rand0.shared.weight, rand1.shared.weight)
    assert rand0.config.lm_head_init == "fan_in"
    assert rand0.config.replace(lm_head_init="hf") == pre.config.replace(lm_head_init="hf")


def test_unknown_init_is_refused(checkpoint):
    with pytest.raises(
        ValueError, match=r"init must be one of \('pre-trained', 'random'\); got 'x'"
    ):
        transfer.build_model("x", checkpoint, seed=0)


def test_experiment_runs_every_init_and_seed_with_curves_at_the_eval_steps(checkpoint):
    out = transfer.transfer_experiment(
        checkpoint, TRAIN, EVAL, decode_ids, seeds=(0, 1), settings=SETTINGS, progress=None
    )
    assert [(r["init"], r["seed"]) for r in out["runs"]] == [
        ("pre-trained", 0),
        ("random", 0),
        ("pre-trained", 1),
        ("random", 1),
    ]
    for run in out["runs"]:
        assert [r["step"] for r in run["curve"]] == [0, 2, 4]
        assert all(0.0 <= r["reverse/exact_match"] <= 1.0 for r in run["curve"])
        assert not any(k.endswith("/samples") for r in run["curve"] for k in r)
    # Step 0 of every pre-trained run is the same model on the same data.
    assert out["runs"][0]["curve"][0] == out["runs"][2]["curve"][0]
    again = transfer.transfer_experiment(
        checkpoint, TRAIN, EVAL, decode_ids, seeds=(0,), settings=SETTINGS, progress=None
    )
    assert again["runs"][0] == out["runs"][0]  # deterministic given the seed


def test_repeated_or_no_seeds_are_refused(checkpoint):
    for seeds in ((0, 0), ()):
        with pytest.raises(ValueError, match="seeds must be distinct ints, at least one"):
            transfer.transfer_experiment(checkpoint, TRAIN, EVAL, decode_ids, seeds=seeds)


def test_summary_is_mean_and_sample_std_over_seeds():
    def run(init, seed, em):
        return {"init": init, "seed": seed, "curve": [{"step": 0}, {"t/exact_match": em}]}

    runs = [run("pre-trained", 0, 0.2), run("pre-trained", 1, 0.4), run("pre-trained", 2, 0.9)]
    runs.append(run("random", 0, 0.1))
    s = transfer.summarize(runs, ["t"])
    assert s["pre-trained"]["t"]["mean"] == pytest.approx(0.5, abs=1e-12)
    assert s["pre-trained"]["t"]["std"] == pytest.approx(
        torch.tensor([0.2, 0.4, 0.9], dtype=torch.float64).std().item(), abs=1e-12
    )
    assert (s["pre-trained"]["t"]["min"], s["pre-trained"]["t"]["max"]) == (0.2, 0.9)
    assert s["random"]["t"] == {"mean": 0.1, "std": 0.0, "min": 0.1, "max": 0.1, "n": 1}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "0", "0"], "--seeds: expected distinct seeds; got [0, 0]"),
        (["--tasks", "verb", "verb"], "--tasks: expected each task once"),
        (["--tasks", "nope"], "argument --tasks: invalid choice: 'nope'"),
        (["--steps", "0"], "argument --steps: expected an integer >= 1; got 0"),
        (["--lr", "inf"], "argument --lr: expected a finite number > 0; got 'inf'"),
        (["--lr", "-0.001"], "argument --lr: expected a finite number > 0"),
        (["--eval-every", "-1"], "argument --eval-every: expected an integer >= 0; got -1"),
        (["--warmup-steps", "300"], "--warmup-steps 300 with --steps 200: cosine needs"),
        (["--pretrained", "/no/such/model"], "--pretrained: expected a folder holding"),
    ],
)
def test_cli_bad_options_fail_in_one_line_before_any_work(argv, message, capsys):
    """The transfer command takes many minutes: a typo must be a usage error (exit 2), not a
    traceback after the data is built or a run that silently repeats a seed."""
    with pytest.raises(SystemExit) as exit_info:
        transfer.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_pretrained_folder_missing_the_tokenizer_is_named(checkpoint, capsys):
    """`save_pretrained` writes no spiece.model; the error lists what is missing."""
    with pytest.raises(SystemExit):
        transfer.main(["--pretrained", checkpoint])
    assert "(missing ['spiece.model'])" in capsys.readouterr().err
