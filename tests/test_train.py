"""The trainer's parts: schedules, optimizers, accumulation, checkpointing, precision, errors.

References: HF `transformers.optimization` (schedules, Adafactor), `torch.optim.AdamW`, closed
forms of the schedules, `rouge_score`. Tiny models and a few steps keep this file fast.
"""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import transformers
from transformers import optimization as hf_optim

from t5edu.config import T5Config
from t5edu.data import collate
from t5edu.t5_model import T5ForConditionalGeneration
from t5edu.train import (
    Adafactor,
    AdamWScale,
    CosineSchedule,
    InverseSqrtSchedule,
    ResumableSampler,
    TrainConfig,
    Trainer,
    apply_activation_checkpointing,
    build_optimizer,
    build_scheduler,
    exact_match,
    find_blocks,
    make_schedule,
    read_metrics,
    rouge_l,
    saved_activation_bytes,
)
from t5edu.train.toy import decode_ids, reverse_task
from t5edu.train.trainer import NonFiniteError

VOCAB = 64


def tiny_t5(seed: int = 0, dropout: float = 0.0, layers: int = 2) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=layers, num_heads=2,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=dropout,
    )  # fmt: skip
    return T5ForConditionalGeneration(cfg)


def tiny_hf_t5(seed: int = 0) -> transformers.T5ForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = transformers.T5Config(
        vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
        feed_forward_proj="gated-gelu", dropout_rate=0.0,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    return transformers.T5ForConditionalGeneration(cfg)


def trainer(model, data=None, **overrides) -> Trainer:
    kw = dict(steps=4, batch_size=8, lr=1e-2, warmup_steps=1, eval_every=0, progress=False)
    kw.update(overrides)
    data = reverse_task(64, VOCAB) if data is None else data
    return Trainer(model, TrainConfig(**kw), data, collate)


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# --------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("warmup,total,min_ratio", [(0, 10, 0.0), (3, 20, 0.0), (5, 40, 0.1)])
def test_cosine_matches_hf_and_closed_form(warmup, total, min_ratio):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    hf = hf_optim.get_cosine_with_min_lr_schedule_with_warmup(
        opt, warmup, total, min_lr_rate=min_ratio
    )
    ours = CosineSchedule(warmup, total, min_ratio)
    for s in range(total + 3):
        want = hf.lr_lambdas[0](s)
        closed = (
            s / warmup
            if s < warmup
            else min_ratio
            + (1 - min_ratio)
            * 0.5
            * (1 + math.cos(math.pi * min(1, (s - warmup) / (total - warmup))))
        )
        assert ours(s) == pytest.approx(closed, abs=1e-12)
        if s <= total:  # beyond it HF's cosine rises again; ours stays at the floor
            assert ours(s) == pytest.approx(want, abs=1e-12)
    assert ours(warmup) == 1.0 and ours(total) == pytest.approx(min_ratio)


@pytest.mark.parametrize("warmup", [1, 4, 10])
def test_inverse_sqrt_matches_hf_and_t5_paper(warmup):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    hf = hf_optim.get_inverse_sqrt_schedule(opt, warmup, timescale=warmup)
    linear, constant = InverseSqrtSchedule(warmup), InverseSqrtSchedule(warmup, "constant")
    for s in range(1, 50):
        assert linear(s) == pytest.approx(hf.lr_lambdas[0](s), abs=1e-12)
        # T5 paper: lr = 1 / sqrt(max(n, k)), normalised by its peak 1 / sqrt(k)
        assert constant(s) == pytest.approx(math.sqrt(warmup) / math.sqrt(max(s, warmup)))
    assert linear(0) == 0.0 and constant(0) == 1.0


def test_build_scheduler_drives_the_optimizer_lr():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = build_scheduler(opt, "cosine", warmup_steps=2, total_steps=6)
    seen = []
    for _ in range(7):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.5 * CosineSchedule(2, 6)(s) for s in range(7)], abs=1e-12)


@pytest.mark.parametrize(
    "args,match",
    [
        (("cosine", 5, 5), "warmup_steps=5, total_steps=5"),
        (("inverse_sqrt", 0, 10), "warmup_steps >= 1"),
        (("warmup_cosine", 1, 10), "schedule name"),
        (("constant", -1, 10), "warmup_steps"),
    ],
)
def test_schedule_errors(args, match):
    with pytest.raises(ValueError, match=match):
        make_schedule(*args)


# --------------------------------------------------------------------------- optimizers
def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(6, 5), (5,), (3, 4, 2)]
    return [torch.nn.Parameter(torch.randn(s, generator=g) * 0.1) for s in shapes]


def _random_grads(params, step):
    g = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)


def test_adamw_scale_without_scaling_is_torch_adamw():
    ours_p, ref_p = _params(), _params()
    ours = AdamWScale(ours_p, lr=1e-2, eps=1e-8, weight_decay=0.1, scale_by_rms=False)
    ref = torch.optim.AdamW(ref_p, lr=1e-2, eps=1e-8, weight_decay=0.1)
    for step in range(6):
        _random_grads(ours_p, step)
        _random_grads(ref_p, step)
        ours.step()
        ref.step()
    for a, b in zip(ours_p, ref_p, strict=True):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=0)


def test_adamw_scale_is_adamw_with_rms_scaled_lr():
    """Reference: torch's AdamW, one group per tensor, lr set to lr * max(1e-3, RMS(p))."""
    ours_p, ref_p = _params(), _params()
    with torch.no_grad():
        ref_p[1].zero_()  # an all-zero tensor: the 1e-3 floor applies
        ours_p[1].zero_()
    lr = 2e-2
    ours = AdamWScale(ours_p, lr=lr)
    ref = torch.optim.AdamW([{"params": [p]} for p in ref_p], lr=lr, eps=1e-6, weight_decay=0.0)
    for step in range(6):
        _random_grads(ours_p, step)
        _random_grads(ref_p, step)
        for group, p in zip(ref.param_groups, ref_p, strict=True):
            group["lr"] = lr * max(1e-3, (p.detach().pow(2).mean().sqrt()).item())
        ours.step()
        ref.step()
    for a, b in zip(ours_p, ref_p, strict=True):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=0)
    moved = (ours_p[1] - 0).abs().max().item()
    assert 0 < moved < 1e-3 * lr * 10  # floor: zero tensors move ~1e-3 * lr per step


def test_adafactor_matches_hf_on_a_t5():
    """build_optimizer('adafactor') == HF Adafactor(scale_parameter, relative_step): T5's."""
    model_a, model_b = tiny_t5(), tiny_t5()
    ours = build_optimizer(model_a, "adafactor", lr=1e-2)
    hf = hf_optim.Adafactor(model_b.parameters(), lr=None, scale_parameter=True, relative_step=True)
    batch = collate(reverse_task(8, VOCAB)).as_dict()
    for _ in range(5):
        for model, opt in ((model_a, ours), (model_b, hf)):
            opt.zero_grad()
            model(**batch).loss.backward()
            opt.step()
    for (name, a), b in zip(model_a.named_parameters(), model_b.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize(
    "ours_kw,hf_kw",
    [
        ({}, {"lr": None}),  # T5: relative step, parameter scaling, no momentum
        (  # external lr, momentum, weight decay, no parameter scaling
            {"lr": 1e-3, "relative_step": False, "beta1": 0.9, "weight_decay": 0.1,
             "scale_parameter": False},
            {"lr": 1e-3, "relative_step": False, "beta1": 0.9, "weight_decay": 0.1,
             "scale_parameter": False},
        ),
    ],
)  # fmt: skip
def test_adafactor_matches_hf_with_tiny_and_zero_gradients(ours_kw, hf_kw):
    """Rows with gradients near 0 (a head's rows for tokens never predicted) and exact zeros:
    T5 adds eps1 = 1e-30 to g^2, which is what these rows' updates depend on."""
    ours_p, ref_p = _params(), _params()
    ours = Adafactor(ours_p, **ours_kw)
    ref = hf_optim.Adafactor(ref_p, **hf_kw)
    for step in range(6):
        for params in (ours_p, ref_p):
            _random_grads(params, step)
            params[0].grad[:2] *= 1e-16  # tiny
            params[0].grad[2] = 0.0  # none at all
        ours.step()
        ref.step()
    for a, b in zip(ours_p, ref_p, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_optimizer_groups_exempt_vectors_from_decay():
    opt = build_optimizer(tiny_t5(), "adamw", lr=1e-3, weight_decay=0.1)
    decays = {g["weight_decay"]: {p.ndim for p in g["params"]} for g in opt.param_groups}
    assert decays == {0.1: {2}, 0.0: {1}}


@pytest.mark.parametrize(
    "kwargs,match",
    [({"name": "sgd"}, "optimizer name"), ({"lr": -1.0}, "lr")],
)
def test_optimizer_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_optimizer(tiny_t5(), **kwargs)
    with pytest.raises(ValueError, match="betas"):
        AdamWScale(_params(), betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="decay_rate"):
        Adafactor(_params(), decay_rate=1.5)


# --------------------------------------------------------------------------- accumulation
def _uneven_examples():
    # Targets of very different lengths: a mean of per-micro-batch means would be wrong.
    data = reverse_task(8, VOCAB, min_length=2, max_length=14, seed=3)
    return sorted(data, key=lambda e: len(e.labels))


def test_accumulation_equals_large_batch():
    data = _uneven_examples()
    big = trainer(tiny_t5(), data, batch_size=8)
    acc = trainer(tiny_t5(), data, batch_size=8, micro_batch_size=2)
    assert acc.accumulation == 4
    idx = list(range(8))
    loss_big, n_big = big.forward_backward([big.make_batch(idx, data, "train")])
    micro = [acc.make_batch(idx[i : i + 2], data, "train") for i in range(0, 8, 2)]
    loss_acc, n_acc = acc.forward_backward(micro)
    assert n_big == n_acc
    assert (loss_big / n_big).item() == pytest.approx((loss_acc / n_acc).item(), rel=1e-6)
    g_big, g_acc = grads(big.model), grads(acc.model)
    for name in g_big:
        torch.testing.assert_close(g_acc[name], g_big[name], atol=1e-6, rtol=0, msg=name)

    # The check can fail: averaging per-micro-batch means (the naive way) is visibly different.
    naive = tiny_t5()
    for b in micro:
        (naive(**b).loss / len(micro)).backward()
    gap = max((p.grad - g_big[n]).abs().max().item() for n, p in naive.named_parameters())
    assert gap > 1e-4


def test_training_steps_with_accumulation_equal_large_batch():
    data = reverse_task(64, VOCAB, seed=1)
    a = trainer(tiny_t5(), data, steps=3, batch_size=8)
    b = trainer(tiny_t5(), data, steps=3, batch_size=8, micro_batch_size=4)
    a.train()
    b.train()
    assert b.step_losses == pytest.approx(a.step_losses, abs=1e-6)


# --------------------------------------------------------------------------- activation ckpt
def test_find_blocks_finds_each_block_once():
    model = tiny_t5(layers=3)
    blocks = find_blocks(model)
    assert len(blocks) == 6 and blocks[0] is model.encoder.block[0]
    assert len(find_blocks(tiny_hf_t5())) == 4  # HF: T5Block holds a ModuleList; not descended


@pytest.mark.parametrize("make", [tiny_t5, tiny_hf_t5])
def test_activation_checkpointing_equal_gradients_less_saved(make):
    batch = collate(reverse_task(4, VOCAB, seed=2)).as_dict()
    plain, ckpt = make(), make()
    assert apply_activation_checkpointing(ckpt) == 4
    kw = {"use_cache": False}

    def run(m):
        return lambda: m(**batch, **kw).loss.backward()

    saved_plain = saved_activation_bytes(run(plain), plain)
    saved_ckpt = saved_activation_bytes(run(ckpt), ckpt)
    g_plain, g_ckpt = grads(plain), grads(ckpt)
    for name in g_plain:
        torch.testing.assert_close(g_ckpt[name], g_plain[name], atol=1e-6, rtol=0, msg=name)
    assert saved_ckpt < 0.5 * saved_plain


def test_activation_checkpointing_errors():
    model = tiny_t5()
    apply_activation_checkpointing(model)
    with pytest.raises(ValueError, match="already checkpointed"):
        apply_activation_checkpointing(model)
    with pytest.raises(ValueError, match="found no nn.ModuleList"):
        apply_activation_checkpointing(torch.nn.Linear(2, 2))


# --------------------------------------------------------------------------- the loop
@pytest.mark.parametrize("make", [tiny_t5, tiny_hf_t5])
def test_training_reduces_loss_and_logs_jsonl(make, tmp_path):
    data, val = reverse_task(128, VOCAB), reverse_task(16, VOCAB, seed=9)
    t = Trainer(
        make(),
        TrainConfig(
            steps=12, batch_size=8, lr=2e-2, warmup_steps=2, eval_every=6, log_every=4,
            out_dir=str(tmp_path), progress=False,
        ),
        data, collate, val_data=val,
    )  # fmt: skip
    history = t.train()
    evals = [r["val_loss"] for r in history if r["kind"] == "eval"]
    assert [r["step"] for r in history if r["kind"] == "eval"] == [0, 6, 12]
    assert evals[0] > evals[1] > evals[2]
    assert read_metrics(tmp_path / "metrics.jsonl") == history
    train = read_metrics(tmp_path / "metrics.jsonl", kind="train")
    assert [r["step"] for r in train] == [4, 8, 12]
    assert all(r["tokens_per_s"] > 0 and r["lr"] >= 0 for r in train)


def test_streams_and_per_task_validation():
    class Stream:  # indexable, endless (no __len__), like t5edu.data.Mixture
        def __init__(self):
            self.data = reverse_task(512, VOCAB)

        def __getitem__(self, k):
            return self.data[k % 512]

    t = trainer(tiny_t5(), Stream(), steps=2, eval_every=2)
    t.val_data = {"a": reverse_task(8, VOCAB, seed=5), "b": reverse_task(16, VOCAB, seed=6)}
    history = t.train()
    assert t.sampler.state_dict()["offset"] == 16
    last = history[-1]
    a, b = last["a/val_loss"], last["b/val_loss"]
    assert min(a, b) <= last["val_loss"] <= max(a, b)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_finite(precision):
    t = trainer(tiny_t5(), steps=3, precision=precision)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. no "scheduler.step() before optimizer.step()"
        t.train()
    assert t.scaler.is_enabled() == (precision == "fp16")
    assert all(math.isfinite(x) for x in t.step_losses)


def test_evaluation_generates_and_scores():
    data = reverse_task(8, VOCAB, seed=4)
    t = trainer(tiny_t5(), steps=1, warmup_steps=0, eval_every=1, max_new_tokens=4)
    t.generation_data, t.decode = {"reverse": data}, decode_ids
    result = t.evaluate()
    assert 0.0 <= result["reverse/rougeL"] <= 1.0 and result["reverse/exact_match"] == 0.0
    assert len(result["reverse/samples"]) == 3
    assert set(result["reverse/samples"][0]) == {"input", "target", "prediction"}


def test_text_metrics_against_rouge_score():
    from rouge_score import rouge_scorer

    preds, refs = ["return the sum", "open a file", "x"], ["return the sum", "open file now", "y"]
    assert exact_match(preds, refs) == pytest.approx(1 / 3)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    want = sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs, strict=True)) / 3
    # "open a file" vs "open file now": LCS 2, P = R = 2/3
    assert rouge_l(preds, refs) == pytest.approx(want) == pytest.approx((1 + 2 / 3 + 0) / 3)
    with pytest.raises(ValueError, match="equally long"):
        rouge_l(["a"], ["a", "b"])


def test_sampler_epochs_and_state():
    s = ResumableSampler(10, 4, seed=1)
    first = [s.next_batch() for _ in range(2)]
    assert len(set(first[0] + first[1])) == 8  # no repeats within an epoch
    state = s.state_dict()
    nxt = s.next_batch()  # epoch 2 (2 examples were dropped)
    t = ResumableSampler(10, 4, seed=1)
    t.load_state_dict(state)
    assert t.next_batch() == nxt and t.epoch == 1
    with pytest.raises(ValueError, match="batch_size=4"):
        ResumableSampler(10, 5, seed=1).load_state_dict(state)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"optimizer": "lion"}, "optimizer must be one of"),
        ({"batch_size": 8, "micro_batch_size": 3}, "multiple of micro_batch_size=3"),
        ({"strategy": "ddp"}, "torchrun"),
        ({"precision": "fp8"}, "precision must be one of"),
        ({"steps": 0}, "steps must be an integer >= 1; got 0"),
        # Each of these used to be accepted and fail late (or never): issue 15.
        ({"lr": float("nan")}, "lr must be a finite number > 0; got nan"),
        ({"lr": float("inf")}, "lr must be a finite number > 0; got inf"),
        ({"lr": 0.0}, "lr must be a finite number > 0; got 0.0"),
        ({"keep_checkpoints": 0}, "keep_checkpoints must be an integer >= 1; got 0"),
        ({"log_every": 0}, "log_every must be an integer >= 1; got 0"),
        ({"save_every": -1}, "save_every must be an integer >= 0; got -1"),
        ({"eval_every": -2}, "eval_every must be an integer >= 0; got -2"),
        ({"grad_clip": -1.0}, "grad_clip must be a finite number >= 0; got -1.0"),
        ({"min_lr_ratio": 2.0}, "min_lr_ratio must be a finite number >= 0 and <= 1; got 2.0"),
        ({"out_dir": ""}, "out_dir must be a directory, or None to write nothing; got ''"),
    ],
)
def test_bad_config(overrides, match):
    with pytest.raises(ValueError, match=match):
        trainer(tiny_t5(), **overrides)


def test_empty_corpus():
    with pytest.raises(ValueError, match="train_data is empty"):
        trainer(tiny_t5(), data=[])


def test_batch_larger_than_data():
    with pytest.raises(ValueError, match="batch_size must be in"):
        trainer(tiny_t5(), data=reverse_task(4, VOCAB), batch_size=8)


def test_sequence_too_long_for_the_model():
    data = reverse_task(16, VOCAB, min_length=20, max_length=20)
    t = trainer(tiny_t5(), data, max_input_length=16)
    with pytest.raises(ValueError, match=r"input_ids has 21 tokens.*max_input_length=16"):
        t.train()


def test_generation_data_needs_decode():
    with pytest.raises(ValueError, match="decode"):
        Trainer(
            tiny_t5(), TrainConfig(progress=False), reverse_task(64, VOCAB), collate,
            generation_data={"reverse": reverse_task(4, VOCAB)},
        )  # fmt: skip


def test_cli_help():
    out = subprocess.run(
        [sys.executable, "-m", "t5edu.train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    for flag in ("--steps", "--batch-size", "--optimizer", "--precision", "--resume", "--strategy"):
        assert flag in out.stdout


def test_cli_trains_resumes_and_writes_a_transformers_checkpoint(tmp_path):
    """The toy task end to end: train 4 steps, resume to 6, reload with transformers."""
    cmd = [
        sys.executable, "-m", "t5edu.train", "--data", "toy", "--batch-size", "8",
        "--warmup-steps", "1", "--eval-every", "2", "--save-every", "2", "--gen-examples", "2",
        "--max-new-tokens", "4", "--val-examples", "8", "--log-every", "1", "--no-progress",
        "--device", "cpu", "--out-dir", str(tmp_path),
    ]  # fmt: skip
    first = subprocess.run([*cmd, "--steps", "4"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(
        [*cmd, "--steps", "6", "--resume", "latest"], capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stderr
    assert "transformers.T5ForConditionalGeneration.from_pretrained loads it" in second.stdout
    train_steps = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", "train")]
    assert train_steps == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-000006"
    bad = subprocess.run([*cmd, "--resume", str(tmp_path / "nowhere")], capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2 and "--resume: no checkpoint found" in bad.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--device", "tpu"],
            "argument --device: expected auto, cpu, cuda, cuda:N or mps; got 'tpu'",
        ),
        (["--preset", "nope", "--data", "toy"], "--preset: name must be one of"),
        (["--resume", "/no/such/checkpoint"], "--resume: no checkpoint found at"),
        (["--resume", "latest", "--out-dir", "/no/such/run"], "no checkpoint under --out-dir"),
        (["--rates", "span_corruption"], "argument --rates: expected task=rate with task one of"),
        (["--rates", "span_corruption=-1"], "span_corruption: expected a finite rate >= 0; got"),
        (["--rates", "verb=inf"], "verb: expected a finite rate >= 0; got 'inf'"),
        (["--rates", "span_corruption=1,span_corruption=2"], "span_corruption: given twice in"),
        (["--rates", "name=0"], "expected at least one rate > 0; got 'name=0'"),
        (["--rates", "verb=nan"], "verb: expected a finite rate >= 0; got 'nan'"),
        (["--downstream", "verb,nope"], "argument --downstream: expected names from"),
        (["--downstream", "verb,verb"], "argument --downstream: each task at most once; ['verb']"),
        (["--downstream", "none,verb"], "argument --downstream: 'none' stands alone"),
        (["--lm-head-init", "xavier"], "argument --lm-head-init: invalid choice: 'xavier'"),
    ],
)
def test_cli_bad_options_fail_fast_in_one_line(argv, message, capsys):
    """Usage errors exit 2 before any data is prepared (the tokenizer takes seconds to train)."""
    from t5edu.train.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not Path("/no").exists()  # a usage error writes nothing, not even a folder


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU-only torch")
def test_cli_cuda_without_cuda_is_a_usage_error(capsys):
    from t5edu.train.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "cuda"])
    assert exit_info.value.code == 2
    assert "got 'cuda', but no CUDA GPU is visible to torch" in capsys.readouterr().err


def test_cli_short_run_with_default_warmup_and_no_evaluation(tmp_path, capsys):
    """--steps 3 with the default warm-up (50 > 3) must run: warm-up shrinks to steps // 10."""
    from t5edu.train.__main__ import main

    argv = ["--data", "toy", "--steps", "3", "--batch-size", "4", "--eval-every", "0",
            "--gen-examples", "0", "--val-examples", "4", "--no-progress", "--device", "cpu",
            "--out-dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "trained 3 steps" in out and "no evaluation (--eval-every 0)" in out


# --------------------------------------------------------------------------- NaN/inf (issue 15, 17)
def _overflow_while(t, flag):
    """Make every gradient of `t`'s model inf while `flag["on"]` (an fp16 overflow)."""
    for p in t.model.parameters():
        p.register_hook(lambda g: torch.full_like(g, math.inf) if flag["on"] else g)


def test_fp16_overflow_streak_keeps_a_loss_scale_floor():
    """GradScaler has no floor: after ~144 overflows in a row 1/scale overflows, after ~166
    the scale is 0, "skipped" (the scale went down) is never true again and the next clean
    step turns every weight into NaN. The floor keeps the scale >= 1 and skips are counted."""
    t = trainer(tiny_t5(), steps=400, precision="fp16", max_consecutive_skips=1000, warmup_steps=0)
    flag = {"on": True}
    _overflow_while(t, flag)
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    for i in range(170):
        out = t.train_step()
        assert out.skipped, f"overflow {i + 1} not reported as skipped"
        assert t.scaler.get_scale() >= 1.0
    assert t.consecutive_skips == 170
    assert all(torch.equal(p, before[n]) for n, p in t.model.named_parameters())
    assert t.scheduler.last_epoch == 0  # the schedule waits for real updates
    flag["on"] = False
    out = t.train_step()
    assert not out.skipped and math.isfinite(out.loss) and t.consecutive_skips == 0
    assert all(p.isfinite().all() for p in t.model.parameters())
    assert any(not torch.equal(p, before[n]) for n, p in t.model.named_parameters())


def test_fp16_consecutive_skips_are_bounded(tmp_path):
    t = trainer(tiny_t5(), steps=100, precision="fp16", out_dir=str(tmp_path), save_every=1,
                max_consecutive_skips=20)  # fmt: skip
    flag = {"on": False}
    _overflow_while(t, flag)
    real_step = t.train_step

    def overflow_from_step_3():
        flag["on"] = t.step >= 2
        return real_step()

    t.train_step = overflow_from_step_3
    with pytest.raises(NonFiniteError, match="20 fp16 steps in a row overflowed"):
        t.train()
    assert t.step == 21  # steps 3..21 skipped (19), the 20th skip stops the run
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-000021"
    state = torch.load(tmp_path / "checkpoints" / "step-000021" / "trainer_state.pt",
                       weights_only=True)  # fmt: skip
    assert state["consecutive_skips"] == 19


def test_non_finite_loss_stops_before_the_update():
    """fp32: a NaN gradient must stop the run with the weights of the last good step."""
    t = trainer(tiny_t5(), steps=4)
    flag = {"on": False}
    for p in t.model.parameters():
        p.register_hook(lambda g: torch.full_like(g, math.nan) if flag["on"] else g)
    t.train_step()
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    flag["on"] = True
    with pytest.raises(NonFiniteError, match=r"loss .*gradient norm nan at lr 0.01: not finite"):
        t.train_step()
    assert all(torch.equal(p, before[n]) for n, p in t.model.named_parameters())


def test_cli_rates_for_a_task_left_out_is_a_usage_error(tmp_path, capsys):
    """--rates may name a downstream task only if --downstream builds it."""
    from t5edu.train.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--rates", "params=1", "--downstream", "none", "--out-dir", str(tmp_path / "r")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--rates names tasks ['params'] that are not built (see --downstream)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--strategy", "ddp", "--device", "cpu"], "needs several processes; launch with torchrun"),
        (["--preset", "huge"], "--preset: name must be one of"),
        (["--warmup-steps", "50", "--steps", "10"], "warmup_steps < total_steps"),
    ],
)
def test_cli_usage_error_found_under_the_lock_leaves_no_out_dir(argv, words, tmp_path, capsys):
    """Errors found after the run directory's lock was taken (and had created the folder)
    still leave nothing behind; a folder that existed before is kept."""
    from t5edu.train.__main__ import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", "toy", "--no-progress", "--out-dir", str(out), *argv])
    assert exit_info.value.code == 2
    assert words in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()  # the user's own empty folder stays
    with pytest.raises(SystemExit):
        main(["--data", "toy", "--no-progress", "--out-dir", str(out), *argv])
    assert out.is_dir()


def test_cli_resume_with_no_steps_left_is_a_usage_error(tmp_path, capsys):
    from t5edu.train.__main__ import main

    argv = ["--data", "toy", "--steps", "3", "--batch-size", "4", "--eval-every", "0",
            "--gen-examples", "0", "--val-examples", "4", "--no-progress", "--device", "cpu",
            "--out-dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--resume", "latest"])  # --steps 3 again: the checkpoint is at step 3
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--steps 3: the checkpoint is already at step 3; pass a larger --steps" in err
