"""Every chapter in the book follows the template: label, Colab badge, a setup cell that installs
t5edu on Colab, cell ids, captioned figures. nbval checks the outputs; this checks the frame."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IN_BOOK = re.findall(r"file:\s*chapters/(\S+)", (ROOT / "_toc.yml").read_text())
INSTALL = '%pip install -q "t5edu[reader] @ git+https://github.com/t5-from-scratch/t5-from-scratch"'


def load(stem):
    return json.loads((ROOT / "chapters" / f"{stem}.ipynb").read_text())


def test_every_chapter_file_is_in_the_book_and_numbered_as_its_position():
    files = sorted(p.stem for p in (ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
    assert IN_BOOK == files, "chapters/*.ipynb and _toc.yml disagree"
    assert [int(s[:2]) for s in IN_BOOK] == list(range(1, len(IN_BOOK) + 1))


@pytest.mark.parametrize("stem", IN_BOOK)
def test_first_cells_follow_the_template(stem):
    cells = load(stem)["cells"]
    title = "".join(cells[0]["source"])
    assert re.match(r"\(ch-[a-z0-9-]+\)=\n# ", title), "label, then the title"
    assert (
        f"colab.research.google.com/github/t5-from-scratch/t5-from-scratch/blob/main/chapters/{stem}.ipynb"
        in title
    )
    setup = "".join(cells[1]["source"]).splitlines()
    assert setup[0] == "# NBVAL_IGNORE_OUTPUT"
    # The install line must be live code: a commented-out one leaves Colab readers stuck.
    assert any(line.strip() == INSTALL for line in setup), "setup cell lacks the live %pip line"
    assert any("t5edu.setup(" in line for line in setup)


@pytest.mark.parametrize("stem", IN_BOOK)
def test_cells_have_unique_ids_and_figures_have_captions(stem):
    cells = load(stem)["cells"]
    ids = [c.get("id") for c in cells]
    assert None not in ids and len(set(ids)) == len(ids)
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code":  # committed outputs come from a top-to-bottom run
            assert cell["execution_count"] is not None, f"cell {i} was never executed"
        has_image = any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
        if has_image:
            figure = cell["metadata"].get("mystnb", {}).get("figure", {})
            assert figure.get("caption") and figure.get("name"), f"cell {i}: figure needs a caption"
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"cell {i} has an error output"
            assert out.get("name") != "stderr", f"cell {i} printed to stderr"


# Control characters other than newline and tab: a "\b" or "\f" typed into a Python string that
# wrote a cell turns "\bigl" into a backspace byte and "\frac" into a form feed, and the equation
# renders broken without any error.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@pytest.mark.parametrize("stem", IN_BOOK)
def test_cell_sources_hold_no_control_characters(stem):
    for i, cell in enumerate(load(stem)["cells"]):
        source = "".join(cell["source"])
        found = [
            f"{m.group()!r} at {m.start()} near {source[max(0, m.start() - 20) : m.end() + 20]!r}"
            for m in CONTROL.finditer(source)
        ]
        assert not found, f"{stem} cell {i} ({cell['cell_type']}): control characters: {found}"


@pytest.mark.parametrize("stem", IN_BOOK)
def test_chapters_are_cited_by_number(stem):
    # {ref} to a chapter label renders the chapter's title ("chapter Tokenizer and data's");
    # {numref}`chapter %s <ch-...>` renders its number, as the book writes it everywhere.
    for i, cell in enumerate(load(stem)["cells"]):
        found = re.findall(r"\{ref\}`[^`]*ch-[^`]*`", "".join(cell["source"]))
        assert not found, f"{stem} cell {i}: use {{numref}}`chapter %s <label>` for {found}"


@pytest.mark.parametrize("stem", IN_BOOK)
def test_slider_cells_are_followed_by_a_static_figure(stem):
    # The rendered book removes a slider cell's output (a widget needs a live kernel), so the
    # next cell must draw what the sliders show, or the page has only code there.
    cells = load(stem)["cells"]
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code" and "viz.interact(" in "".join(cell["source"]):
            after = cells[i + 1] if i + 1 < len(cells) else {}
            shown = [o for o in after.get("outputs", []) if "image/png" in o.get("data", {})]
            assert shown, f"{stem} cell {i}: a slider cell needs a static figure in the next cell"
