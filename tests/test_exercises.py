"""The exercise checker: every reference solution passes, typical wrong answers fail with a
message that names what is wrong, and the checker's own contract (bools, errors, no side
effects on the global random state or on the reader's inputs)."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import t5edu.exercises as ex
from t5edu.exercises import REGISTRY, check, list_exercises

IDS = list_exercises()
CHAPTERS = sorted({REGISTRY[i].chapter for i in IDS})


@pytest.mark.parametrize("exercise_id", IDS)
def test_reference_solution_passes(exercise_id, capsys):
    assert check(exercise_id, REGISTRY[exercise_id].solution()) is True
    out = capsys.readouterr().out
    assert "fail" not in out and out.strip().splitlines()[-1].endswith(("pass", ": right"))


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_each_chapter_has_at_least_two_coding_exercises(chapter):
    coding = [i for i in list_exercises(chapter) if not REGISTRY[i].value]
    assert len(coding) >= 2, coding


# ---- wrong answers: (id, answer, words the verdict must contain) ----------------------------


def _top_left(q_len, k_len):
    return torch.arange(k_len)[None, :] <= torch.arange(q_len)[:, None]


def _attention(scale_default=True, bottom_right=True, nan_rows=False, transpose_out=False):
    def fn(q, k, v, attention_mask=None, causal=False, scale=None):
        tq, tk = q.shape[2], k.shape[2]
        if scale is None:
            scale = q.shape[-1] ** -0.5 if scale_default else 1.0
        scores = q @ k.transpose(-1, -2) * scale
        keep = torch.ones(q.shape[0], 1, tq, tk, dtype=torch.bool)
        if attention_mask is not None:
            keep = keep & attention_mask.bool()[:, None, None, :]
        if causal:
            shift = tk - tq if bottom_right else 0
            keep = keep & (torch.arange(tk)[None, :] <= torch.arange(tq)[:, None] + shift)
        weights = scores.masked_fill(~keep, -math.inf).softmax(-1)
        if not nan_rows:
            weights = weights.nan_to_num(0.0)
        out = weights @ v
        return out.transpose(-1, -2) if transpose_out else out

    return fn


def _mha(split_without_transpose=False):
    def fn(x, w_q, w_k, w_v, w_o, num_heads):
        b, t, d = x.shape
        dh = d // num_heads

        def split(y):
            if split_without_transpose:  # a view straight to (B, H, T, Dh) mixes positions
                return y.reshape(b, num_heads, t, dh)
            return y.view(b, t, num_heads, dh).transpose(1, 2)

        q, k, v = split(x @ w_q.T), split(x @ w_k.T), split(x @ w_v.T)
        out = (q @ k.transpose(-1, -2) * dh**-0.5).softmax(-1) @ v
        return out.transpose(1, 2).reshape(b, t, d) @ w_o.T

    return fn


def _bucket_flipped(relative_position, **kw):
    return ex.ch02.relative_position_bucket(-relative_position, **kw)


def _bias(offset_shift=0, drop_batch_dim=False):
    def fn(weight, q_len, k_len, offset, bidirectional):
        out = ex.ch02._position_bias_solution(
            weight, q_len, k_len, offset + offset_shift, bidirectional
        )
        return out[0] if drop_batch_dim else out

    return fn


def _rms(eps_outside=False, center=False):
    def fn(x, weight, eps=1e-6):
        if center:
            x = x - x.mean(-1, keepdim=True)
        ms = x.pow(2).mean(-1, keepdim=True)
        rms = ms.sqrt() + eps if eps_outside else (ms + eps).sqrt()
        return x / rms * weight

    return fn


def _rms_backward(no_projection=False, no_sum=False):
    def fn(x, weight, grad_out, eps=1e-6):
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        x_hat, gw = x * r, grad_out * weight
        grad_x = r * gw if no_projection else r * (gw - x_hat * (gw * x_hat).mean(-1, keepdim=True))
        grad_w = grad_out * x_hat
        return grad_x, grad_w if no_sum else grad_w.sum(0)

    return fn


def _eps_grad(sign=1.0, per_row=False):
    def fn(x, weight, grad_out, eps):
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        g = (grad_out * weight * x * (-0.5 * sign * r**3)).sum(-1)
        return g if per_row else g.sum()

    return fn


def _ffn(gate_on_up=False, no_transpose=False):
    def fn(x, gate_weight, up_weight, down_weight):
        if no_transpose:
            return (F.silu(x @ gate_weight) * (x @ up_weight)) @ down_weight
        gate, up = (up_weight, gate_weight) if gate_on_up else (gate_weight, up_weight)
        return (F.silu(x @ gate.T) * (x @ up.T)) @ down_weight.T

    return fn


def _rope(offset_shift=0, interleaved=False, sign=1.0, ignore_offset=False):
    def fn(x, offset):
        t, d = x.shape[-2:]
        start = 0 if ignore_offset else offset + offset_shift
        theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        angles = sign * torch.arange(start, start + t, dtype=torch.float64)[:, None] * theta
        if interleaved:
            z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2))
            out = torch.view_as_real(z * torch.polar(torch.ones_like(angles), angles))
            return out.flatten(-2).float()
        cos, sin = angles.cos().repeat(1, 2), angles.sin().repeat(1, 2)
        x1, x2 = x.double().chunk(2, dim=-1)
        return (x.double() * cos + torch.cat([-x2, x1], dim=-1) * sin).float()

    return fn


def _inv_freq(ntk_without_exponent=False, linear_times=False):
    def fn(dim, base=10000.0, scaling=None):
        kind, s = (None, 1.0) if scaling is None else (scaling["type"], scaling["factor"])
        if kind == "ntk":
            base = base * s if ntk_without_exponent else base * s ** (dim / (dim - 2))
        theta = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        if kind == "linear":
            return theta * s if linear_times else theta / s
        return theta

    return fn


def _permute_all_rows(weight, num_heads):
    return weight[ex.ch07.half_split_index(weight.shape[0])]  # across heads, not within each


def _alibi_bias(top_left=False, positive=False):
    def fn(num_heads, q_len, k_len, causal):
        m = ex.ch08.alibi_slopes(num_heads)[:, None, None]
        start = 0 if top_left else k_len - q_len
        i, j = torch.arange(start, start + q_len)[:, None], torch.arange(k_len)[None, :]
        dist = (j - i) if causal else (j - i).abs() * (1 if positive else -1)
        return m * dist.float()

    return fn


def _round_down(dim, multiple_of):
    return multiple_of * (int(8 * dim / 3) // multiple_of)


def _fuse_gate_first(gate_weight, up_weight):
    return torch.cat([gate_weight, up_weight])


def _fuse_along_columns(gate_weight, up_weight):
    return torch.cat([up_weight, gate_weight], dim=1)


def _swiglu_grad_b_without_product_rule(a, b, grad_out):
    return grad_out * F.silu(b), grad_out * a * torch.sigmoid(b)


def _slopes_power_of_two_rule(num_heads):
    return torch.tensor([2 ** (-8 * h / num_heads) for h in range(1, num_heads + 1)])


WRONG = [
    ("ch01.score_memory", 128, "expected 134217728, got 128"),
    ("ch01.score_memory", "128 MiB", "got '128 MiB'"),
    ("ch01.causal_mask", _top_left, "entries differ (exact match required)"),
    ("ch01.causal_mask", lambda q_len, k_len: _top_left(q_len, k_len).float(), "integer or bool"),
    ("ch01.masked_attention", _attention(scale_default=False), "wrong values, max |diff|"),
    ("ch01.masked_attention", _attention(bottom_right=False), "wrong values"),
    ("ch01.masked_attention", _attention(nan_rows=True), "holds NaN"),
    ("ch01.masked_attention", _attention(transpose_out=True), "another order"),
    ("ch01.multi_head_attention", _mha(split_without_transpose=True), "wrong values"),
    ("ch02.bucket_40", (12, 23), "output[0]: expected 28, got 12"),
    ("ch02.bucket", _bucket_flipped, "entries differ"),
    ("ch02.bucket", lambda **kw: ex.ch02.relative_position_bucket(**kw).float(), "integer or bool"),
    ("ch02.position_bias", _bias(offset_shift=1), "wrong values"),
    ("ch02.position_bias", _bias(offset_shift=-1), "wrong values"),
    ("ch02.position_bias", _bias(drop_batch_dim=True), "shape (1, 4, 5, 5), got (4, 5, 5)"),
    ("ch02.bucket_starts", lambda **kw: ex.ch02._bucket_starts(**kw) + 1, "entries differ"),
    ("ch05.rms_norm", _rms(eps_outside=True), "wrong values"),
    ("ch05.rms_norm", _rms(center=True), "wrong values"),
    ("ch05.rms_norm", lambda x, weight, eps=1e-6: _rms()(x, 1.0, eps), "wrong values"),
    ("ch05.rms_norm_backward", _rms_backward(no_projection=True), "output[0]: wrong values"),
    ("ch05.rms_norm_backward", _rms_backward(no_sum=True), "output[1]: expected shape (16,)"),
    ("ch05.rms_norm_grad_eps", _eps_grad(sign=-1.0), "wrong values"),
    ("ch05.rms_norm_grad_eps", _eps_grad(per_row=True), "expected shape (), got (6,)"),
    ("ch06.glu_hidden_dim", _round_down, "expected 11008, got 10752"),
    ("ch06.fused_gate_up", _fuse_gate_first, "wrong values"),
    ("ch06.fused_gate_up", _fuse_along_columns, "must be (2F, D) = (80, 16); got (40, 32)"),
    ("ch06.swiglu_ffn", _ffn(gate_on_up=True), "wrong values"),
    ("ch06.swiglu_ffn", _ffn(no_transpose=True), "raised RuntimeError"),
    ("ch06.swiglu_backward", _swiglu_grad_b_without_product_rule, "output[1]: wrong values"),
    ("ch07.inv_freq", _inv_freq(ntk_without_exponent=True), "wrong values"),
    ("ch07.inv_freq", _inv_freq(linear_times=True), "wrong values"),
    ("ch07.rope_offset", _rope(ignore_offset=True), "wrong values"),
    ("ch07.rope_offset", _rope(offset_shift=1), "wrong values"),
    ("ch07.rope_offset", _rope(interleaved=True), "wrong values"),
    ("ch07.rope_offset", _rope(sign=-1.0), "wrong values"),
    ("ch07.permute_for_half_split", _permute_all_rows, "wrong values"),
    ("ch08.longest_half_life", 256.0, "expected 177.446, got 256"),
    ("ch08.longest_half_life", math.log(2) / 2**-7, "exceeds the tolerance 0.01"),
    ("ch08.slopes", _slopes_power_of_two_rule, "wrong values"),
    ("ch08.alibi_bias", _alibi_bias(top_left=True), "wrong values"),
    ("ch08.alibi_bias", _alibi_bias(positive=True), "wrong values"),
]  # fmt: skip


def _wrong_answers_of_the_chapter_files() -> list[tuple]:
    """The WRONG lists of the chapters' own `test_exercises_chNN.py` files."""
    found = []
    for path in sorted(Path(__file__).parent.glob("test_exercises_ch*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found += module.WRONG
    return found


ALL_WRONG = WRONG + _wrong_answers_of_the_chapter_files()


@pytest.mark.parametrize(
    ("exercise_id", "answer", "words"), ALL_WRONG, ids=[w[0] for w in ALL_WRONG]
)
def test_wrong_answer_is_caught_and_named(exercise_id, answer, words, capsys):
    assert check(exercise_id, answer) is False
    out = capsys.readouterr().out
    assert words in out, out
    assert out.strip().splitlines()[-1].startswith(f"{exercise_id}: ")
    assert ("cases fail; task:" in out) or (REGISTRY[exercise_id].value and ": wrong; task:" in out)


def test_every_exercise_has_a_wrong_answer_tested():
    assert {w[0] for w in ALL_WRONG} == set(IDS)


def test_a_verdict_names_the_case_the_difference_and_the_tolerance(capsys):
    check("ch07.rope_offset", _rope(offset_shift=1))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "ch07.rope_offset"
    # Case 1 has offset 0: shifting it is wrong there too, and the line says with which input.
    assert lines[1].startswith("  case 1/4 (x (2, 2, 5, 8), offset=0): wrong values")
    assert "max |diff|" in lines[1] and "tolerance 1e-05" in lines[1]
    assert "expected" in lines[1] and "got" in lines[1]


def test_a_partly_right_answer_reports_ok_cases_and_fails(capsys):
    # Top-left equals bottom-right when q_len == k_len: those cases pass, the others do not.
    assert check("ch01.causal_mask", _top_left) is False
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "  case 1/6: ok"
    assert lines[2].startswith("  case 2/6 (q_len=3, k_len=8): ") and "differ" in lines[2]
    assert lines[-1].startswith("ch01.causal_mask: 3 of 6 cases fail")


def test_unknown_id_raises_listing_the_known_ids():
    with pytest.raises(ValueError, match=r"unknown exercise id 'ch07.rope_ofset'") as err:
        check("ch07.rope_ofset", lambda x, offset: x)
    assert "did you mean 'ch07.rope_offset'" in str(err.value)
    for known in IDS:
        assert known in str(err.value)
    with pytest.raises(ValueError, match="known ids: ch01"):
        check(7, lambda: None)


def test_a_function_exercise_given_a_value_returns_false(capsys):
    assert check("ch07.rope_offset", 3.0) is False
    assert "expected a function" in capsys.readouterr().out


def test_an_answer_that_raises_fails_its_cases_and_the_rest_still_run(capsys):
    def rope(x, offset):
        if offset == 7:
            raise IndexError("position 7 is out of range")
        return ex.ch07._rope_solution(x, offset)

    assert check("ch07.rope_offset", rope) is False
    out = capsys.readouterr().out
    assert "raised IndexError: position 7 is out of range" in out
    assert out.count(": ok") == 3
    assert "  case 2/4 (x (1, 3, 4, 16), offset=7): raised IndexError" in out


def test_check_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    # The expected output builds MultiHeadAttention, whose initialisation draws numbers.
    assert check("ch01.multi_head_attention", REGISTRY["ch01.multi_head_attention"].solution())
    assert torch.equal(before, torch.get_rng_state())


def test_an_answer_that_edits_its_inputs_cannot_change_the_expected():
    def rms_norm_in_place(x, weight, eps=1e-6):
        out = ex.ch05.RMSNorm(x.shape[-1], eps)(x).detach() * weight
        x.zero_()  # vandalise the input after use
        return out

    assert check("ch05.rms_norm", rms_norm_in_place) is True


def test_cases_are_the_same_every_call():
    for exercise_id in IDS:
        a, b = REGISTRY[exercise_id].cases(), REGISTRY[exercise_id].cases()
        for case_a, case_b in zip(a, b, strict=True):
            for key, val in case_a.items():
                if isinstance(val, torch.Tensor):
                    assert torch.equal(val, case_b[key]), (exercise_id, key)


def test_list_exercises_by_chapter():
    assert list_exercises(7) == list_exercises("ch07") == list_exercises("07_rope")
    assert list_exercises("7_rope") == list_exercises("ch7") == list_exercises(7)
    assert list_exercises("ch013") == list_exercises(13)  # not chapter 1's
    with pytest.raises(ValueError, match="no exercises for chapter 100"):
        list_exercises(100)  # not chapter 10's
    assert all(i.startswith("ch07.") for i in list_exercises(7))
    assert "ch07.rope_offset" in list_exercises(7)
    assert sorted(list_exercises()) == list_exercises()
    with pytest.raises(ValueError, match=r"no exercises for chapter 99; chapters with exercises"):
        list_exercises(99)
    with pytest.raises(ValueError, match="chapter must be None, an int or a str"):
        list_exercises(7.0)


@pytest.mark.parametrize(
    ("want", "got", "words"),
    [
        (torch.zeros(2, 3), torch.zeros(3, 2), "expected shape (2, 3), got (3, 2) (the same sizes"),
        (torch.zeros(2), [0.0, 0.0], "expected a torch.Tensor of shape (2,), got list"),
        (torch.zeros(2), torch.zeros(2, dtype=torch.long), "expected a floating-point tensor"),
        ((torch.zeros(1),), (torch.zeros(1), torch.zeros(1)), "expected a tuple of 1, got 2"),
        (1.5, "1.5", "expected a number near 1.5, got str"),
        (3, 3.5, "expected 3, got 3.5"),
        (True, 1, "expected True, got 1"),
    ],
)
def test_compare_messages(want, got, words):
    assert words in ex.compare(want, got, atol=1e-5, rtol=0.0)


def test_compare_tolerance_is_inclusive_and_relative_part_scales():
    want = torch.tensor([1.0, 100.0], dtype=torch.float64)  # float64: the offsets stay exact
    assert ex.compare(want, want + torch.tensor([1e-5, 0.0]), atol=1e-5, rtol=0.0) is None
    assert ex.compare(want, want + torch.tensor([0.0, 9e-4]), atol=0.0, rtol=1e-5) is None
    msg = ex.compare(want, want + 2e-3, atol=0.0, rtol=1e-5)
    assert "wrong values" in msg and "tolerance 1e-05 * |expected|" in msg
    assert ex.compare(3, torch.tensor(3), 0, 0) is None  # a 0-d tensor for a number is fine


def test_numpy_scalars_are_numbers(capsys):
    np = pytest.importorskip("numpy")
    assert check("ch01.score_memory", np.int64(8 * 2048 * 2048 * 4)) is True
    assert check("ch08.longest_half_life", np.float64(256 * math.log(2))) is True


def test_a_value_exercise_given_a_function_says_it_wants_the_value(capsys):
    assert check("ch01.score_memory", lambda: 0) is False
    assert "expected a value, not a function: pass the result" in capsys.readouterr().out


def test_an_answer_with_other_parameter_names_is_told_the_keywords(capsys):
    assert check("ch01.causal_mask", lambda a, b: None) is False
    assert "the checker calls your function by keyword: q_len, k_len" in capsys.readouterr().out


def test_long_values_in_a_verdict_are_cut_and_tensors_shown_by_shape():
    from t5edu.exercises._core import describe

    msg = ex.compare(1.5, list(range(1000)), 1e-5, 0.0)
    assert msg.startswith("expected a number near 1.5, got list [0, 1, 2") and len(msg) < 150
    msg = ex.compare(3, [torch.zeros(2, 3)] * 10, 1e-5, 0.0)
    assert msg == "expected 3, got [tensor(2, 3), tensor(2, 3), tensor(2, 3), tensor(2, 3), ...]"
    text = describe({"grads": [torch.zeros(3, 4), torch.zeros(2)], "k": 3})
    assert text == "grads=[tensor(3, 4), tensor(2,)], k=3"
