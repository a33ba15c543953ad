"""Plain-text tables of benchmark results (Markdown pipe tables: readable in a terminal, and
rendered as tables when a chapter prints them as Markdown)."""

from __future__ import annotations


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:,.1f} MiB"


def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def fmt_spread(t: dict) -> str:
    """Median with the inter-quartile range, e.g. `12.3 ms [12.1-12.9]`."""
    return f"{fmt_time(t['median_s'])} [{fmt_time(t['q1_s'])}-{fmt_time(t['q3_s'])}]"


def fmt_ratio(r: dict | None) -> str:
    """A paired speed ratio: median with min-max over rounds, e.g. `1.31x (1.25-1.40)`."""
    if not r:
        return "-"
    return f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown pipe table with columns padded to equal width; a `|` inside a cell (`|dloss|`)
    is escaped, since a bare one would end the cell and break the row."""
    cells = [[str(c).replace("|", "\\|") for c in r] for r in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def _skipped(skipped: dict) -> str:
    """Skipped items as a list under the table (a blank line first, so Markdown renders it)."""
    if not skipped:
        return ""
    return "\n\nSkipped:\n" + "".join(f"\n- {k}: {v}" for k, v in skipped.items())


def fmt_peak(peak_bytes: int, gradient_bytes: int | None = None) -> str:
    """A measured peak with, when recorded, its lower bound: the bytes of the gradients the
    measured call returns (older result files have none)."""
    grads = "" if gradient_bytes is None else f" (grads {fmt_bytes(gradient_bytes)})"
    return fmt_bytes(peak_bytes) + grads


def model_table(res: dict) -> str:
    cfg = res["config"]
    head = (
        f"Training step, {cfg['preset']}, batch {cfg['batch']}, {cfg['src_len']} -> "
        f"{cfg['tgt_len']} tokens, {cfg['dtype']} ({cfg['precision']}); HF attention "
        f"'{cfg['hf_attn_implementation']}'; {res['flops']['training'] / 1e9:,.1f} GFLOP/step; "
        f"measured peak {res['peak']['tflops']:.3g} TFLOP/s"
    )
    rows = [
        [
            r["name"],
            fmt_spread(r["time"]),
            f"{r['tokens_per_s']:,.0f}",
            fmt_ratio(r.get("speed_vs_hf")),
            fmt_peak(r["peak_bytes"], r.get("gradient_bytes")),
            fmt_pct(r.get("mfu_measured")),
            fmt_pct(r.get("mfu_vendor")),
            f"{r['loss_diff_vs_hf']:.1e}",
        ]
        for r in res["rows"]
    ]
    hdr = ["side", "step [IQR]", "tokens/s", "vs HF", "peak mem", "MFU meas.", "MFU vendor",
           "|dloss|"]  # fmt: skip
    out = head + "\n\n" + table(hdr, rows) + _skipped(res.get("skipped"))
    if "ladder" in res:
        out += "\n\n" + ladder_table(res["ladder"])
    return out


def ladder_table(lad: dict) -> str:
    ref = [lad["reference"]] if lad.get("reference") else []
    rows = [
        [
            r["name"],
            fmt_spread(r["time"]),
            f"{r['tokens_per_s']:,.0f}",
            fmt_ratio(r.get("speed_vs_naive eager, fp32")),
            fmt_ratio(r.get("speed_vs_hf")),
            fmt_pct(r.get("mfu_measured")),
            "-" if r.get("compile_s") is None else f"{r['compile_s']:.0f} s",
        ]
        for r in lad["rows"] + ref
    ]
    hdr = ["speed ladder (one change per row)", "step [IQR]", "tokens/s", "vs naive", "vs HF",
           "MFU meas.", "compile"]  # fmt: skip
    return table(hdr, rows) + _skipped(lad.get("skipped"))


def generate_table(res: dict) -> str:
    cfg = res["config"]
    head = (
        f"Generation, {cfg['preset']}, batch {cfg['batch']}, {cfg['src_len']} input tokens, "
        f"{cfg['max_new_tokens']} new tokens, {cfg['dtype']}"
    )
    rows = [
        [
            r["mode"],
            r["name"],
            fmt_spread(r["time"]),
            f"{r['tokens_per_s']:,.0f}",
            fmt_ratio(r.get("speed_vs_hf")),
            "-" if r.get("equal_to_hf") is None else ("yes" if r["equal_to_hf"] else "NO"),
        ]
        for r in res["rows"]
    ]
    hdr = ["mode", "side", "time [IQR]", "new tokens/s", "vs HF", "same tokens"]
    return head + "\n\n" + table(hdr, rows) + _skipped(res.get("skipped"))


def attention_table(res: dict) -> str:
    cfg = res["config"]
    head = (
        f"Attention forward+backward with a learned T5 bias {cfg['bias']}, batch {cfg['batch']}, "
        f"{cfg['heads']} heads, head dim {cfg['head_dim']}, {cfg['dtype']}; each peak is beside "
        "the bytes of the gradients the call returns, the least any true peak can be"
    )
    rows = [
        [
            str(r["seq_len"]),
            r["backend"],
            fmt_spread(r["time"]),
            fmt_peak(r["peak_bytes"], r.get("gradient_bytes")),
            fmt_peak(r["peak_bytes_frozen_bias"], r.get("gradient_bytes_frozen_bias")),
        ]
        for r in res["rows"]
    ]
    hdr = ["N", "backend", "fwd+bwd [IQR]", "peak (bias learned)", "peak (bias frozen)"]
    out = head + "\n\n" + table(hdr, rows) + _skipped(res.get("skipped"))
    chk = res.get("memory_check") or {}
    if chk.get("backends"):
        out += "\n"
    for name, f in chk.get("backends", {}).items():
        out += (
            f"\n- peak memory of {name} / naive at N={chk['seq_len']}: "
            f"{f['fraction_learned_bias']:.3f} (bias learned), "
            f"{f['fraction_frozen_bias']:.3f} (bias frozen)"
        )
    return out


def bias_table_table(res: dict) -> str:
    cfg = res["config"]
    head = (
        f"T5's relative bias learned from its ({cfg['num_buckets']}, H) table, attention "
        f"forward+backward, batch {cfg['batch']}, {cfg['heads']} heads, head dim "
        f"{cfg['head_dim']}, {cfg['dtype']}; each peak beside the bytes of dq, dk, dv and the "
        f"table gradient (sides agree within {res['max_abs_diff_vs_naive']:.1e})"
    )
    rows = [
        [
            str(r["seq_len"]),
            r["side"],
            fmt_spread(r["time"]),
            fmt_peak(r["peak_bytes"], r["gradient_bytes"]),
        ]
        for r in res["rows"]
    ]
    return head + "\n\n" + table(["N", "side", "fwd+bwd [IQR]", "peak"], rows)


def norm_table(res: dict) -> str:
    cfg = res["config"]
    head = (
        f"RMSNorm forward+backward on {tuple(cfg['shape'])} {cfg['dtype']} "
        f"(input itself: {fmt_bytes(res['input_bytes'])})"
    )
    rows = [
        [
            r["variant"],
            fmt_spread(r["time"]),
            fmt_bytes(r["saved_bytes"]),
            fmt_peak(r["peak_bytes"], r.get("gradient_bytes")),
            f"{r['max_abs_diff_vs_rmsnorm']:.1e}",
            "-" if r.get("compile_s") is None else f"{r['compile_s']:.0f} s",
        ]
        for r in res["rows"]
    ]
    hdr = ["variant", "fwd+bwd [IQR]", "saved for bwd", "peak", "max |diff|", "compile"]
    return head + "\n\n" + table(hdr, rows) + _skipped(res.get("skipped"))


TABLES = {
    "model": model_table,
    "generate": generate_table,
    "attention": attention_table,
    "norm": norm_table,
    "bias-table": bias_table_table,
}


def render(results: dict) -> str:
    """All tables of a result file's `results` section, in the order run."""
    return "\n\n".join(TABLES[k](v) for k, v in results.items() if k in TABLES)
