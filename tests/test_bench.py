"""Benchmark harness: correctness only (FLOP formula, statistics, memory accounting, CLI/JSON).

Speed is never asserted here; `python -m t5edu.bench` measures it.
"""

import json
import types

import pytest
import torch
import transformers

import t5edu
from t5edu.bench import __main__ as cli
from t5edu.bench import attention as attn_bench
from t5edu.bench import bias_table, flops, generate, machine, model, norm, report, timing


@pytest.fixture(autouse=True)
def one_thread():
    """Micro-sized ops on one thread: on a busy shared machine two OpenMP threads wait on each
    other and these tests run 20x slower. Nothing here measures speed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------- FLOPs

CONFIGS = {
    "v1 relu tied": dict(feed_forward_proj="relu", tie_word_embeddings=True),
    "v1.1 gated-gelu untied": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "decoder deeper": dict(num_layers=1, num_decoder_layers=3),
    "heads*d_kv != d_model": dict(num_heads=3, d_kv=12),
}


def hf_config(**kw):
    base = dict(vocab_size=96, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2,
                dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0,
                eos_token_id=1)  # fmt: skip
    return transformers.T5Config(**{**base, **kw})


def hf_eager(cfg):
    torch.manual_seed(0)
    m = transformers.T5ForConditionalGeneration(cfg)
    m.set_attn_implementation("eager")  # matmuls FlopCounterMode can see
    return m


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("b,s,t", [(1, 5, 3), (2, 9, 4)])
def test_flops_equal_flop_counter_hf(name, b, s, t):
    cfg = hf_config(**CONFIGS[name])
    m = hf_eager(cfg)
    x, y = torch.randint(2, 96, (b, s)), torch.randint(2, 96, (b, t))
    want = flops.t5_flops(cfg, b, s, t)
    assert flops.count_flops(lambda: m(input_ids=x, labels=y)) == want.forward
    # backward: each matmul's output gradient times both inputs -> exactly 2x the forward
    assert flops.count_flops(lambda: m(input_ids=x, labels=y).loss.backward()) == want.training


@pytest.mark.parametrize("name", list(CONFIGS))
def test_flops_equal_flop_counter_t5edu(name):
    cfg = t5edu.T5Config.from_hf(hf_config(**CONFIGS[name]))
    torch.manual_seed(0)
    m = t5edu.T5ForConditionalGeneration(cfg)  # naive backend: plain matmuls
    x, y = torch.randint(2, 96, (2, 7)), torch.randint(2, 96, (2, 5))
    want = flops.t5_flops(cfg, 2, 7, 5)
    assert flops.count_flops(lambda: m(input_ids=x, labels=y).loss.backward()) == want.training


def test_flops_terms_and_tokens():
    f = flops.t5_flops(hf_config(), 2, 10, 4)
    assert f.forward == sum(f.terms.values())
    assert f.training == 3 * f.forward and f.tokens == 2 * 14
    assert f.training_per_token == f.training / 28
    # lm head: 2 * D * V per target token
    assert f.terms["lm head"] == 2 * 4 * 2 * 32 * 96


@pytest.mark.parametrize("arg", ["batch", "src_len", "tgt_len"])
def test_flops_bad_sizes(arg):
    sizes = {"batch": 1, "src_len": 4, "tgt_len": 2, arg: 0}
    with pytest.raises(ValueError, match=arg):
        flops.t5_flops(hf_config(), **sizes)


def test_flops_bad_config():
    bad = types.SimpleNamespace(**{**hf_config().to_dict(), "feed_forward_proj": "swish-ish"})
    with pytest.raises(ValueError, match="feed_forward_proj"):
        flops.t5_flops(bad, 1, 4, 2)
    with pytest.raises(ValueError, match="d_model"):
        flops.t5_flops(object(), 1, 4, 2)


@pytest.mark.parametrize(
    "gpu,dtype,want",
    [("NVIDIA H200", "bfloat16", 989.5), ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989.5),
     ("NVIDIA H100 PCIe", "float16", 756.5), ("NVIDIA A100-SXM4-80GB", "bfloat16", 312.0),
     ("NVIDIA L4", "bfloat16", 121.0), ("Tesla T4", "float16", 65.0),
     ("Tesla T4", "bfloat16", None),
     # an L40S is not an L4 (121 would overstate its MFU): unlisted, so None
     ("NVIDIA L40S", "bfloat16", None), ("NVIDIA L40", "float32", None),
     ("Some Other GPU", "bfloat16", None), (None, "bfloat16", None)],
)  # fmt: skip
def test_vendor_peak(gpu, dtype, want):
    assert flops.vendor_peak_tflops(gpu, dtype) == want


def test_mfu():
    assert flops.mfu(1e12, 2.0, 1e12) == 0.5
    with pytest.raises(ValueError, match="step_time_s"):
        flops.mfu(1e12, 0.0, 1e12)


def test_measured_peak_small():
    p = flops.measured_peak_flops("cpu", torch.float32, n=64, repeats=2)
    assert p["n"] == 64 and p["dtype"] == "float32"
    assert p["flops_per_s"] == pytest.approx(2 * 64**3 / p["median_s"])


# ------------------------------------------------------------------------------------ timing


def test_timing_statistics():
    t = timing.Timing("x", [4.0, 1.0, 3.0, 2.0, 5.0])
    assert (t.median_s, t.q1_s, t.q3_s, t.min_s, t.max_s, t.iqr_s) == (3, 2, 4, 1, 5, 2)
    d = t.to_dict()
    assert d["repeats"] == 5 and d["iqr_s"] == 2
    with pytest.raises(ValueError, match="times_s"):
        timing.Timing("x", [])


def test_time_alternating_rotates_order():
    calls = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    out = timing.time_alternating(fns, warmup=1, repeats=3)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == list("abc") + list("bca") + list("cab")  # nobody always first
    assert list(out) == ["a", "b", "c"] and all(len(t.times_s) == 3 for t in out.values())


def test_time_alternating_number_calibration():
    out = timing.time_alternating({"f": lambda: None}, warmup=0, repeats=1, min_sample_s=1e-4)
    assert out["f"].number > 1


@pytest.mark.parametrize(
    "kw,arg", [({"fns": {}}, "fns"), ({"repeats": 0}, "repeats"), ({"warmup": -1}, "warmup")]
)
def test_time_alternating_bad_args(kw, arg):
    args = {"fns": {"f": lambda: None}, **kw}
    with pytest.raises(ValueError, match=arg):
        timing.time_alternating(args.pop("fns"), **args)


def test_paired_ratio():
    a, b = timing.Timing("a", [2.0, 4.0, 6.0]), timing.Timing("b", [1.0, 1.0, 3.0])
    assert timing.paired_ratio(a, b) == {"median": 2.0, "min": 2.0, "max": 4.0}
    with pytest.raises(ValueError, match="rounds"):
        timing.paired_ratio(a, timing.Timing("c", [1.0]))


def test_peak_memory_cpu_counts_one_tensor():
    n = 1 << 20  # 4 MiB of float32, freed before the call returns

    def fn():
        x = torch.ones(n)
        y = x * 2  # another 4 MiB while x is alive
        return float(y[0])

    got = timing.peak_memory(fn, "cpu")
    assert got["method"] == "torch.profiler"
    assert 8 * n <= got["peak_bytes"] <= 8 * n + 64 * 1024


def test_peak_memory_cpu_ignores_frees_of_memory_from_before_the_call():
    """Freeing memory that was live before the call must not offset what the call allocates.
    The profiler reports such a free when the block was allocated under an earlier profiling
    window (it then knows the size): so the bench, measuring one backend after another, once
    recorded flash at 7.69 MiB while it returns a 128 MiB bias gradient."""
    n = 1 << 20
    kept = {}
    timing.peak_memory(lambda: kept.update(x=torch.ones(2 * n)), "cpu")  # 8 MiB, kept

    def fn():
        del kept["x"]  # an earlier window's 8 MiB, freed inside this one
        return torch.ones(n)  # 4 MiB, allocated and returned (kept alive)

    got = timing.peak_memory(fn, "cpu")
    assert 4 * n <= got["peak_bytes"] <= 4 * n + 64 * 1024


CPU_BACKENDS = [b for b in t5edu.BACKENDS if b not in attn_bench.CUDA_ONLY and b != "auto"]


@pytest.mark.parametrize("learned", [True, False], ids=["bias learned", "bias frozen"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_peak_memory_at_least_the_gradients_returned(backend, learned):
    """Lower-bound guard: a forward+backward returns dq, dk, dv (and the bias gradient when the
    bias is learned), so its measured peak is at least those bytes, with no slack, also when a
    previous measured call left gradients behind (the call clears them first, as in training)."""
    b, h, n, dh = 1, 4, 192, 32
    q, k, v, bias = attn_bench._inputs(b, h, n, dh, torch.device("cpu"), torch.float32, learned)
    grad = torch.ones(b, h, n, dh)
    fn = attn_bench._fwd_bwd(backend, q, k, v, bias, grad)
    lower = attn_bench.gradient_bytes(b, h, n, dh, 4, learned)
    # measured twice: the second call frees gradients the first allocated under the profiler,
    # which must change nothing (64 KiB of slack for the allocator's bookkeeping)
    first, second = (timing.peak_memory(fn, "cpu")["peak_bytes"] for _ in range(2))
    assert abs(second - first) <= 64 * 1024, f"{backend}: {first} B, then {second} B"
    for got in (first, second):
        assert got >= lower, f"{backend}: peak {got} B below the {lower} B of gradients returned"
        # and not absurdly above: naive, the most memory-hungry, keeps a few (H, N, N) tensors
        assert got <= lower + 8 * h * n * n * 4
    assert lower == sum(t.grad.numel() * 4 for t in (q, k, v, bias) if t.grad is not None)


def test_attention_bench_refuses_a_peak_below_the_gradients(monkeypatch):
    stub = {"peak_bytes": 1024, "method": "stub"}
    monkeypatch.setattr(timing, "peak_memory", lambda fn, device: stub)
    with pytest.raises(RuntimeError, match="below the .* gradients"):
        attn_bench.run("cpu", lengths=[16], repeats=1, quick=True)


def test_attention_bench_records_the_lower_bound_beside_each_peak():
    res = attn_bench.run("cpu", lengths=[32], repeats=1, quick=True)
    for r in res["rows"]:
        assert r["gradient_bytes"] == attn_bench.gradient_bytes(1, 8, 32, 64, 4, True)
        assert r["gradient_bytes_frozen_bias"] == attn_bench.gradient_bytes(1, 8, 32, 64, 4, False)
        assert r["peak_bytes"] >= r["gradient_bytes"]
        assert r["peak_bytes_frozen_bias"] >= r["gradient_bytes_frozen_bias"]


# ---------------------------------------------------------------------- machine and report


def test_machine_record():
    rec = machine.machine_record("cpu")
    for key in ("cpu_model", "cpu_count", "torch", "transformers", "date_utc", "load_average"):
        assert key in rec
    assert rec["torch"] == torch.__version__ and rec["device"] == "cpu"
    assert machine.machine_slug(rec).startswith("cpu-")
    assert machine.machine_slug({"device": "cuda", "gpu_name": "NVIDIA H200"}) == "cuda-nvidia-h200"


def test_report_table():
    out = report.table(["a", "bb"], [["1", "2"], ["333", "4"]])
    assert out.splitlines() == ["| a   | bb |", "|-----|----|", "| 1   | 2  |", "| 333 | 4  |"]
    assert report.fmt_bytes(3 * 2**20) == "3.0 MiB"
    assert report.fmt_time(0.0123) == "12.3 ms"
    # a pipe inside a cell is escaped, or Markdown ends the cell there and the row breaks
    piped = report.table(["|dloss|"], [["max |diff|"]]).splitlines()
    assert piped[0] == "| \\|dloss\\|    |" and piped[2] == "| max \\|diff\\| |"


# ----------------------------------------------------------------------------- CLI end to end
# Each subcommand runs for real through the CLI at micro sizes (a 1-layer, 32-wide T5), so the
# whole path (probing backends, alternating timing, memory, tables, JSON) is exercised in seconds.

MICRO = dict(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_heads=4, num_layers=1,
             num_decoder_layers=1)  # fmt: skip


@pytest.fixture
def tiny_sizes(monkeypatch):
    """Shrink every benchmark below even --quick, so each CLI run takes seconds."""
    real_pair = model.build_pair

    def micro_pair(preset, device, seed=0, **overrides):
        return real_pair(preset, device, seed, **{**MICRO, **overrides})

    monkeypatch.setattr(model, "build_pair", micro_pair)
    monkeypatch.setattr(generate, "build_pair", micro_pair)
    tiny_model = {"preset": "tiny", "batch": 1, "src_len": 12, "tgt_len": 5}
    monkeypatch.setattr(model, "default_shape", lambda device, quick: dict(tiny_model))
    tiny_gen = {"preset": "tiny", "batch": 2, "src_len": 8, "max_new_tokens": 4,
                "uncached_new_tokens": 3, "num_beams": 2}  # fmt: skip
    monkeypatch.setattr(generate, "default_shape", lambda device, quick: dict(tiny_gen))
    sweep = {"batch": 1, "heads": 2, "head_dim": 16, "lengths": [16, 40]}
    monkeypatch.setattr(attn_bench, "default_sweep", lambda device, quick: dict(sweep))
    monkeypatch.setattr(norm, "default_shape", lambda device, quick: (2, 8, 32))
    real_peak = flops.measured_peak_flops
    monkeypatch.setattr(
        model, "measured_peak_flops", lambda d, t, n=None: real_peak(d, t, 32, 2, min_sample_s=0)
    )


def run_cli(tmp_path, bench, *extra):
    """Run `python -m t5edu.bench <bench> --quick ...` in-process; the JSON it wrote, parsed."""
    out = tmp_path / f"{bench}.json"
    cli.main([bench, "--quick", "--no-compile", "--repeats", "2", *extra, "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["schema"] == "t5edu.bench/1" and data["settings"]["bench"] == bench
    assert data["settings"]["quick"] is True and data["command"].startswith("python -m")
    mach = data["machine"]
    assert mach["torch"] == torch.__version__ and mach["transformers"] == transformers.__version__
    assert mach["device"] == "cpu" and mach["cpu_model"] and mach["cpu_count"] >= 1
    want = {"model", "generate", "attention", "norm"} if bench == "all" else {bench}
    assert set(data["results"]) == want == set(data["seconds"])
    return data


def test_cli_model(tmp_path, tiny_sizes, capsys):
    mod = run_cli(tmp_path, "model")["results"]["model"]
    names = [r["name"] for r in mod["rows"]]
    assert names[:2] == ["hf", "hf-eager"] and "t5edu[naive]" in names
    assert all(r["loss_diff_vs_hf"] < 1e-5 for r in mod["rows"])  # same weights, same batch
    micro = t5edu.T5Config.get_config("tiny", **MICRO)
    assert mod["flops"]["training"] == flops.t5_flops(micro, 1, 12, 5).training
    assert all(r["tokens_per_s"] > 0 for r in mod["rows"])
    # every peak sits above its lower bound, the bytes of the parameters' gradients
    assert all(r["peak_bytes"] >= r["gradient_bytes"] > 0 for r in mod["rows"])
    ladder = mod["ladder"]
    names = [r["name"] for r in ladder["rows"]]
    assert names[0] == "naive eager, fp32" and names[-1] == "+ FastRMSNorm"
    assert "+ torch.compile" in ladder["skipped"]  # --no-compile: recorded, not silently dropped
    assert ladder["reference"]["name"] == model.HF_REFERENCE
    assert all("speed_vs_hf" in r for r in ladder["rows"])
    printed = capsys.readouterr().out
    assert "speed ladder" in printed and "wrote " in printed


def test_cli_generate(tmp_path, tiny_sizes):
    data = run_cli(tmp_path, "generate", "--backends", "naive,sdpa")
    assert data["settings"]["backends"] == ["naive", "sdpa"]
    gen = data["results"]["generate"]
    assert gen["skipped"]["flash"] == "not selected (--backends)"  # recorded, not dropped
    modes = {r["mode"] for r in gen["rows"]}
    assert modes == {"greedy, cached", "greedy, uncached", "beam 2, cached", "beam 2, uncached"}
    ours = [r for r in gen["rows"] if r["name"] != "hf"]
    assert ours and all(r["equal_to_hf"] for r in ours)  # same tokens as HF's generate


def test_cli_attention(tmp_path, tiny_sizes):
    att = run_cli(tmp_path, "attention", "--lengths", "16,24")["results"]["attention"]
    assert {r["seq_len"] for r in att["rows"]} == {16, 24}
    assert "naive" in att["backends"] and "sdpa" in att["backends"]
    assert "triton" in att["skipped"]  # CPU: recorded with its reason, not silently dropped
    assert att["memory_check"]["seq_len"] == 24


def test_cli_norm(tmp_path, tiny_sizes):
    nrm = run_cli(tmp_path, "norm")["results"]["norm"]
    assert [r["variant"] for r in nrm["rows"]][:3] == [
        "t5edu.RMSNorm", "t5edu.FastRMSNorm", "torch.nn.RMSNorm"]  # fmt: skip
    assert "torch.compile(t5edu.RMSNorm)" in nrm["skipped"]
    assert all(r["peak_bytes"] >= r["gradient_bytes"] > nrm["input_bytes"] for r in nrm["rows"])


def test_cli_bias_table(tmp_path, tiny_sizes):
    """Issue 14's figure: with the table learned, t5_flash's peak stays near its gradients while
    a materialised bias costs an (H, N, N) gradient; every peak above its lower bound."""
    res = run_cli(tmp_path, "bias-table", "--lengths", "64,768")["results"]["bias-table"]
    assert res["max_abs_diff_vs_naive"] <= 1e-4
    rows = {(r["side"], r["seq_len"]): r for r in res["rows"]}
    assert set(rows) == {(s, n) for s in bias_table.SIDES for n in (64, 768)}
    for r in res["rows"]:
        assert r["gradient_bytes"] == bias_table.gradient_bytes(1, 8, r["seq_len"], 64, 4, 32)
        assert r["peak_bytes"] >= r["gradient_bytes"]
    # at N=768 the (H, N, N) bias gradient alone (18 MiB) exceeds all that t5_flash holds
    assert rows[("t5_flash, bias table", 768)]["peak_bytes"] < 8 * 768 * 768 * 4
    assert rows[("naive, materialised bias", 768)]["peak_bytes"] > 8 * 768 * 768 * 4


def test_cli_all_runs_every_bench(tmp_path, tiny_sizes, monkeypatch):
    """`all` runs each subcommand once (each is tested above; here stubbed, to stay fast) and
    writes them into one file named after the machine when --out is a folder."""
    calls = []
    stub = {n: (lambda n=n, **kw: calls.append((n, kw)) or {"rows": []}) for n in cli.BENCHES}
    monkeypatch.setattr(cli, "BENCHES", stub)
    monkeypatch.setattr(cli, "TABLES", {n: (lambda res: "table") for n in stub})
    cli.main(["all", "--quick", "--out", str(tmp_path) + "/"])
    assert [n for n, _ in calls] == ["model", "generate", "attention", "norm", "bias-table"]
    assert all(kw["quick"] is True for _, kw in calls)
    (path,) = tmp_path.iterdir()
    assert path.name.startswith("cpu-") and path.name.endswith("-float32-quick.json")
    data = json.loads(path.read_text())
    assert set(data["results"]) == set(stub) and data["machine"]["device"] == "cpu"


def test_cli_rejects_bad_args(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["model", "--repeats", "0"])
    assert "--repeats" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.parse_args(["nonsense"])
    for flag, value in (("--backends", "naive,nope"), ("--lengths", "16,x"), ("--lengths", "0")):
        with pytest.raises(SystemExit):
            cli.parse_args(["model", flag, value])
        assert flag in capsys.readouterr().err


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "r.json"
    cli.write_json(str(path), {"a": 1})
    with pytest.raises(TypeError):
        cli.write_json(str(path), {"a": object()})  # fails half-way through serialising
    assert json.loads(path.read_text()) == {"a": 1}  # the last good file is still there
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind
