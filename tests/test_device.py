"""t5edu.device: the device, precision, MPS refusals and the memory check, tested on the CPU by
faking what torch reports about CUDA GPUs (a T4 is 7.5, an A100 8.0) and Apple's MPS."""

from types import SimpleNamespace

import pytest
import torch

import t5edu.device as dev
from t5edu.bench.timing import peak_memory
from t5edu.config import T5Config
from t5edu.t5_model import T5ForConditionalGeneration
from t5edu.train.trainer import resolve_precision


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA GPU of the given compute capability and memory, as torch would describe it."""

    def install(capability=(8, 0), total_memory=80 * 2**30, count=1):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        props = SimpleNamespace(total_memory=total_memory)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)

    return install


@pytest.fixture
def fake_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: True)


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch, fake_gpu):
    fake_gpu()
    assert dev.get_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: True)
    assert dev.get_device() == torch.device("mps")
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    assert dev.get_device() == torch.device("cpu")


def test_chapters_trainer_and_cli_ask_the_same_place(fake_mps):
    from t5edu.train.distributed import init_distributed
    from t5edu.utils import get_device

    assert get_device() == torch.device("mps")
    assert init_distributed().device == torch.device("mps")


@pytest.mark.parametrize(
    ("requested", "words"),
    [
        ("tpu", "expected auto, cpu, cuda, cuda:N or mps; got 'tpu'"),
        ("cuda", "got 'cuda', but no CUDA GPU is visible"),
        ("mps", "got 'mps', but MPS is not available"),
        ("meta", "expected auto, cpu, cuda, cuda:N or mps; got 'meta'"),
    ],
)
def test_a_device_torch_cannot_see_is_refused_by_name(monkeypatch, requested, words):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    with pytest.raises(ValueError, match="^device: ") as err:
        dev.get_device(requested)
    assert words in str(err.value)


def test_a_gpu_index_past_the_gpus_is_refused(fake_gpu):
    fake_gpu(count=2)
    assert dev.get_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"torch sees 2 CUDA GPU\(s\), indices 0..1"):
        dev.get_device("cuda:2")


@pytest.mark.parametrize(
    ("capability", "precision"),
    [((7, 5), "fp16"), ((7, 0), "fp16"), ((8, 0), "bf16"), ((8, 9), "bf16"), ((9, 0), "bf16")],
    ids=["T4", "V100", "A100", "L4", "H100"],
)
def test_auto_precision_is_fp16_where_bf16_is_only_emulated(fake_gpu, capability, precision):
    fake_gpu(capability=capability)
    # torch itself says bf16 is "supported" on a T4 (by emulation): that must not decide
    assert dev.auto_precision(torch.device("cuda")) == precision
    assert resolve_precision("auto", torch.device("cuda")) == precision
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_auto_precision_is_fp32_on_cpu_and_mps(device):
    assert dev.auto_precision(torch.device(device)) == "fp32"
    assert not dev.native_bf16(torch.device(device))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"attention_backend": "triton"}, "attention_backend=triton cannot run on mps"),
        ({"attention_backend": "flex"}, "use sdpa"),
        ({"strategy": "ddp"}, "strategy=ddp cannot run on mps"),
        ({"strategy": "fsdp"}, "strategy=none"),
        ({"dtype": torch.float64}, "float64 cannot run on mps"),
    ],
)
def test_mps_refuses_what_it_cannot_run(kwargs, words):
    with pytest.raises(ValueError, match="cannot run on mps") as err:
        dev.check_supported(torch.device("mps"), **kwargs)
    assert words in str(err.value)
    dev.check_supported(torch.device("cpu"), **kwargs)  # the CPU runs all of them
    dev.check_supported(torch.device("mps"), attention_backend="sdpa")


def test_cli_refuses_ddp_on_mps_before_any_work(fake_mps, tmp_path, capsys):
    from t5edu.train.__main__ import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", "toy", "--strategy", "ddp", "--out-dir", str(out)])
    assert exit_info.value.code == 2
    assert "strategy=ddp cannot run on mps" in capsys.readouterr().err
    assert not out.exists()


def _tiny():
    torch.manual_seed(0)
    config = T5Config.get_config("tiny", vocab_size=64)
    return T5ForConditionalGeneration(config)


def test_training_bytes_is_a_lower_bound_of_a_measured_step():
    """Everything a first AdamW step allocates (gradients, both moments, activations, logits) is
    at least the estimate minus the weights, which were allocated before the measurement."""
    model = _tiny()
    n = model.num_parameters()
    batch, src, tgt = 4, 24, 12
    ids = torch.randint(2, 64, (batch, src), generator=torch.Generator().manual_seed(0))
    labels = ids[:, :tgt].clone()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        model(input_ids=ids, labels=labels).loss.backward()
        opt.step()

    measured = peak_memory(step, "cpu")["peak_bytes"]
    need = dev.training_bytes(model.config, n, batch_size=batch, src_len=src, tgt_len=tgt)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert n * 16 < need  # the states alone, plus something for the activations
    assert need - weights <= measured, (need, weights, measured)


def test_training_bytes_counts_precision_and_optimizer():
    config = T5Config.get_config("t5-small")
    n = 60_506_624
    kw = dict(batch_size=8, src_len=512, tgt_len=128)
    fp32 = dev.training_bytes(config, n, **kw)
    bf16 = dev.training_bytes(config, n, precision="bf16", **kw)
    adafactor = dev.training_bytes(config, n, optimizer="adafactor", **kw)
    saved = 2 * 6 * 8 * 512 * 512 + 3 * 6 * 8 * 128 * 512
    assert fp32 - bf16 == 2 * saved  # activations in 2 bytes instead of 4
    assert fp32 - adafactor == 8 * n  # no per-parameter moments


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"optimizer": "sgd"}, "optimizer: expected one of"),
        ({"precision": "fp8"}, "precision: expected fp32, bf16 or fp16; got 'fp8'"),
        ({"batch_size": 0}, "batch_size: expected an int >= 1; got 0"),
        ({"src_len": 1.5}, "src_len: expected an int >= 1; got 1.5"),
        ({"num_parameters": 0}, "num_parameters: expected an int >= 1; got 0"),
        ({"num_parameters": True}, "num_parameters: expected an int >= 1; got True"),
        ({"num_parameters": "60M"}, "num_parameters: expected an int >= 1; got '60M'"),
        ({"config": "t5-small"}, "config: expected a T5Config (with an int d_model); got str"),
    ],
)
def test_training_bytes_names_a_bad_argument(kwargs, words):
    args = dict(config=T5Config.get_config("tiny"), num_parameters=1000) | kwargs
    args = dict(batch_size=2, src_len=8, tgt_len=8) | args
    with pytest.raises(ValueError) as err:
        dev.training_bytes(**args)
    assert words in str(err.value)


def test_a_run_that_cannot_fit_on_a_t4_is_refused_with_what_to_change(fake_gpu):
    fake_gpu(capability=(7, 5), total_memory=15 * 2**30)  # a Colab T4: 15 GiB
    config = T5Config.get_config("t5-large")
    need = dev.training_bytes(config, 737_668_096, batch_size=64, src_len=512, tgt_len=128)
    with pytest.raises(ValueError) as err:
        dev.check_training_fits(need, torch.device("cuda"), "lower --batch-size")
    msg = str(err.value)
    assert "cannot fit on cuda" in msg and "more than the 15.0 GiB there; lower --batch-size" in msg
    dev.check_training_fits(need, torch.device("meta"), "unknown memory passes")
    fake_gpu(capability=(8, 0), total_memory=640 * 2**30)
    dev.check_training_fits(need, torch.device("cuda"), "fits")


def test_cli_refuses_a_run_the_device_cannot_hold(monkeypatch, tmp_path, capsys):
    from t5edu.train.__main__ import main

    monkeypatch.setattr(dev, "device_memory_bytes", lambda device: 2**20)  # a 1 MiB device
    argv = ["--data", "toy", "--steps", "3", "--batch-size", "4", "--no-progress",
            "--device", "cpu", "--out-dir", str(tmp_path / "run")]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "cannot fit on cpu" in err and "lower --batch-size" in err
