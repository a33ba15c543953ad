"""The T5 model compiles to one graph: no graph break, no recompilation while decoding.

Input is checked once, where it enters (`T5Model.forward`, `generate`); stacks, blocks, layers
and decoding steps check nothing and read nothing back from the device. Before that change
`torch._dynamo.explain` found 28 graph breaks in a t5-small forward with labels and a padding
mask (`.item()` in `check_ids`/`drop_full_mask`, a data-dependent branch in
`check_mask_values` in every layer, `torch.is_inference_mode_enabled` in the bucket cache).
Tiny configs: each test runs in seconds on a CPU.
"""

import importlib

import pytest
import torch
import torch._dynamo as dynamo
from torch._dynamo.utils import counters

from t5edu.config import T5Config
from t5edu.generation import _Decoder
from t5edu.kv_cache import T5Cache
from t5edu.t5_model import T5ForConditionalGeneration

CFG = dict(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, dropout_rate=0.0)
BACKENDS = ["naive", "sdpa", "flash"]
# AOTAutograd traces forward and backward into graphs as inductor does, without generating C++
# (which takes minutes on a loaded CPU). Inductor itself was checked by hand: same results.
COMPILER = "aot_eager"


def tiny(backend="naive", seed=0):
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(T5Config(**CFG, attention_backend=backend))


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 96, (2, 9), generator=g)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0  # padding: the masks reach every layer
    labels = torch.randint(2, 96, (2, 5), generator=g)
    labels[1, 3:] = -100
    return ids, mask, labels


@pytest.fixture(autouse=True)
def fresh_dynamo():
    dynamo.reset()
    counters.clear()
    yield
    dynamo.reset()


def assert_one_graph(explained):
    reasons = [r.reason.splitlines()[0] for r in explained.break_reasons]
    assert explained.graph_break_count == 0, reasons
    assert explained.graph_count == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_with_labels_and_padding_mask_has_no_graph_break(backend):
    model = tiny(backend)
    ids, mask, labels = batch()
    model.train()  # the training path: one embedding lookup for both sides
    assert_one_graph(dynamo.explain(model)(input_ids=ids, attention_mask=mask, labels=labels))
    dynamo.reset()
    model.eval()
    with torch.no_grad():
        explained = dynamo.explain(model)(input_ids=ids, attention_mask=mask, labels=labels)
    assert_one_graph(explained)


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_step_with_backward_has_no_graph_break(backend):
    model = tiny(backend).train()
    ids, mask, labels = batch()

    def step(ids, mask, labels):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        return loss

    assert_one_graph(dynamo.explain(step)(ids, mask, labels))


@pytest.mark.parametrize("backend", BACKENDS + ["t5_flash"])
def test_cached_decoding_step_has_no_graph_break(backend):
    model = tiny(backend).eval()
    ids, mask, _ = batch()
    tokens = torch.zeros(2, 1, dtype=torch.long)
    with torch.no_grad():
        enc = model.encoder(ids, mask)
        cache = T5Cache(len(model.decoder.block), max_length=8, preallocate=True)
        kwargs = dict(encoder_outputs=enc, attention_mask=mask, past_key_values=cache)
        model(decoder_input_ids=tokens, **kwargs)  # step one fills the cross-attention cache
        assert_one_graph(dynamo.explain(model)(decoder_input_ids=tokens, **kwargs))


def test_compiled_training_forward_and_backward_match_eager():
    """fullgraph=True: any graph break would raise. fp32: the traced graph runs decomposed ops
    (inductor would also fuse and reorder reductions), so the results agree to rounding (1e-5
    relative and absolute on a loss near 30 and gradients of order 1), not bit for bit."""
    ids, mask, labels = batch()
    eager, compiled = tiny("sdpa").train(), tiny("sdpa").train()
    loss = eager(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    fn = torch.compile(compiled, fullgraph=True, backend=COMPILER)
    got = fn(input_ids=ids, attention_mask=mask, labels=labels).loss
    got.backward()
    torch.testing.assert_close(got, loss, rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-5, msg=name)


def test_static_cache_decoding_compiles_once():
    """A preallocated cache (`_Decoder(static=True)`, `T5Cache(preallocate=True)`): the first
    step has no cross-attention cache and the second makes the cached length symbolic; after
    that no step recompiles. The doubling cache recompiles at every doubling instead."""
    model = tiny("sdpa").eval()
    ids, mask, _ = batch()
    steps = 20  # past T5Cache's first doubling (MIN_CAPACITY = 16)
    tokens = torch.zeros(2, 1, dtype=torch.long)
    with torch.no_grad():
        want = _Decoder(model, ids, mask.bool(), steps + 1, True)
        dec = _Decoder(model, ids, mask.bool(), steps + 1, True, static=True)
        step = torch.compile(dec.step, fullgraph=True, backend=COMPILER)
        graphs = []
        for _ in range(steps):
            got = step(tokens)
            graphs.append(counters["stats"]["unique_graphs"])
            # fp32 traced vs eager: rounding only (logits of order 1)
            torch.testing.assert_close(got, want.step(tokens), rtol=1e-5, atol=1e-5)
    assert graphs[:2] == [1, 2] and graphs[-1] == 2, graphs


def count_host_reads(monkeypatch):
    """Count Tensor.__bool__, .item() and .tolist() calls: each is a device-to-host sync."""
    reads = []
    for name in ("__bool__", "item", "tolist"):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return reads


def test_eager_forward_checks_once_with_one_host_read(monkeypatch):
    """Labels, input_ids, both masks' values and the masks' all-ones test are read back in one
    `tolist`; no layer checks its input (the attention checks are never called)."""
    model = tiny("sdpa").train()
    ids, mask, labels = batch()
    calls = []
    for name in ("attention", "backends", "flash_attention", "t5_flash"):
        module = importlib.import_module(f"t5edu.{name}")  # t5edu.attention is also a function
        monkeypatch.setattr(module, "check_attention_inputs", lambda *a: calls.append(a))
    reads = count_host_reads(monkeypatch)
    model(input_ids=ids, attention_mask=mask, labels=labels, decoder_attention_mask=None)
    assert reads == ["tolist"] and calls == []


def test_eager_decoding_steps_read_nothing_back(monkeypatch):
    model = tiny("naive").eval()
    ids, mask, _ = batch()
    tokens = torch.zeros(2, 1, dtype=torch.long)
    with torch.no_grad():
        dec = _Decoder(model, ids, mask.bool(), 6, True)
        reads = count_host_reads(monkeypatch)
        for _ in range(5):
            dec.step(tokens)
    assert reads == []


def test_bad_values_still_raise_clear_errors_in_eager():
    """One host read for all value checks, but the message names the argument and the value."""
    model = tiny("sdpa").eval()
    ids, mask, labels = batch()
    with pytest.raises(ValueError, match=r"labels must be in \[0, vocab_size=96\) or -100; got"):
        model(input_ids=ids, labels=labels.masked_fill(labels == -100, -7))
    bad = mask.clone()
    bad[0, 0] = 2
    with pytest.raises(ValueError, match=r"attention_mask must hold only 0/1.*\[2\]"):
        model(input_ids=ids, attention_mask=bad, labels=labels)
    with pytest.raises(ValueError, match=r"input_ids must be in \[0, vocab_size=96\); got 96"):
        model.generate(ids.masked_fill(ids == ids[0, 0], 96), max_new_tokens=2)
