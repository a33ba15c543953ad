"""nbval executes the chapters that are in the book (`_toc.yml`); a draft joins CI with the TOC."""

import re
from pathlib import Path

_here = Path(__file__).parent
_in_book = set(re.findall(r"file:\s*chapters/(\S+)", (_here.parent / "_toc.yml").read_text()))
collect_ignore = [p.name for p in _here.glob("*.ipynb") if p.stem not in _in_book]
