"""Draw the map of the book's chapters (book/figures/chapter_map.svg), shown on the intro page.

Run from anywhere: `python book/figures/make_chapter_map.py`. The output is deterministic (no
date in the metadata, fixed ids, text drawn as paths), so re-running it on an unchanged script
leaves the committed SVG unchanged. Keep the chapter list in step with `_toc.yml` and README.md.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).with_name("chapter_map.svg")

# (part, colour, [(number, title)]): the parts and chapters of _toc.yml. The table under the
# figure on the intro page says what each chapter builds and links to it.
PARTS = [
    ("Foundations", "#4c72b0", [(1, "Attention")]),
    (
        "T5",
        "#dd8452",
        [(2, "Relative\nposition bias"), (3, "The T5\narchitecture"), (4, "Generation")],
    ),
    (
        "Modern\ntechniques",
        "#55a868",
        [(5, "RMSNorm"), (6, "GLU variants"), (7, "RoPE"), (8, "ALiBi"), (9, "Flash\nattention")],
    ),
    (
        "Training and\nperformance",
        "#8172b3",
        [
            (10, "Tokenizer\nand data"),
            (11, "Training"),
            (12, "Benchmarks"),
            (13, "Scaling out"),
            (14, "SuperGLUE"),
        ],
    ),
]

COL_W, COL_GAP = 1.95, 0.4  # inches: column width and the gap that holds the arrows
BOX_H, BOX_GAP = 0.62, 0.2
HEADER_H = 0.62


def box_xy(col, row):
    """Lower-left corner of chapter box `row` in part column `col` (inches, y up)."""
    x = col * (COL_W + COL_GAP)
    y = -HEADER_H - 0.25 - row * (BOX_H + BOX_GAP) - BOX_H
    return x, y


def draw_chapter(ax, col, row, colour, number, title):
    x, y = box_xy(col, row)
    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            COL_W,
            BOX_H,
            boxstyle="round,pad=0,rounding_size=0.08",
            facecolor=colour + "1f",
            edgecolor=colour,
            linewidth=1.4,
        )
    )
    ax.text(x + 0.27, y + BOX_H / 2, str(number), ha="center", va="center", fontsize=15,
            fontweight="bold", color=colour)  # fmt: skip
    ax.text(x + 0.55, y + BOX_H / 2, title, ha="left", va="center", fontsize=11.5,
            fontweight="bold", color="#222222", linespacing=1.15)  # fmt: skip


def arrow(ax, start, end, colour="#777777", rad=0.0):
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=13,
            linewidth=1.4,
            color=colour,
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=2,
            shrinkB=2,
        )
    )


def main():
    plt.rcParams.update(
        {"svg.fonttype": "path", "svg.hashsalt": "t5-from-scratch", "font.family": "DejaVu Sans"}
    )
    n_rows = max(len(chapters) for _, _, chapters in PARTS)
    width = len(PARTS) * COL_W + (len(PARTS) - 1) * COL_GAP
    height = HEADER_H + 0.25 + n_rows * (BOX_H + BOX_GAP)
    fig = plt.figure(figsize=(width + 0.2, height + 0.2))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-0.1, width + 0.1)
    ax.set_ylim(-height - 0.1, 0.1)
    ax.set_aspect("equal")
    ax.axis("off")

    for col, (part, colour, chapters) in enumerate(PARTS):
        x = col * (COL_W + COL_GAP)
        ax.add_patch(
            FancyBboxPatch(
                (x, -HEADER_H),
                COL_W,
                HEADER_H,
                boxstyle="round,pad=0,rounding_size=0.08",
                facecolor=colour,
                edgecolor="none",
            )  # fmt: skip
        )
        ax.text(x + COL_W / 2, -HEADER_H / 2, part, ha="center", va="center", fontsize=12,
                fontweight="bold", color="white", linespacing=1.1)  # fmt: skip
        for row, (number, title) in enumerate(chapters):
            draw_chapter(ax, col, row, colour, number, title)
        if col + 1 < len(PARTS):  # reading order between parts
            y = -HEADER_H / 2
            arrow(ax, (x + COL_W, y), (x + COL_W + COL_GAP, y), colour="#555555")

    def mid_right(col, row):
        x, y = box_xy(col, row)
        return x + COL_W, y + BOX_H / 2

    def mid_left(col, row):
        x, y = box_xy(col, row)
        return x, y + BOX_H / 2

    def bottom(col, row):
        x, y = box_xy(col, row)
        return x + COL_W / 2, y

    def top(col, row):
        x, y = box_xy(col, row)
        return x + COL_W / 2, y + BOX_H

    # What each chapter builds on (the prerequisites that are not simply "the previous part").
    arrow(ax, mid_right(0, 0), mid_left(1, 0))  # attention -> relative position bias
    arrow(ax, bottom(1, 0), top(1, 1))  # buckets -> architecture
    arrow(ax, bottom(1, 1), top(1, 2))  # architecture -> generation
    arrow(ax, mid_right(1, 1), mid_left(2, 1))  # T5 -> the techniques it swaps in
    # attention -> flash attention: down the empty foundations column, then right
    (x0, y0), (x1, y1) = bottom(0, 0), mid_left(2, 4)
    ax.plot([x0, x0], [y0 - 0.03, y1], color="#777777", linewidth=1.4, solid_capstyle="butt")
    arrow(ax, (x0, y1), (x1, y1))
    arrow(ax, mid_right(2, 4), mid_left(3, 2))  # flash attention -> benchmarks
    arrow(ax, bottom(3, 0), top(3, 1))  # data -> training
    arrow(ax, bottom(3, 1), top(3, 2))  # training -> benchmarks
    x, y = box_xy(1, 2)
    ax.text(x + COL_W / 2, y - 0.55, "chapters 5-9: in any\norder after chapter 3",
            ha="center", va="center", fontsize=10, style="italic", color="#555555")  # fmt: skip

    fig.savefig(OUT, format="svg", metadata={"Date": None, "Creator": None})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
