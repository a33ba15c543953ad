"""A corpus that ships with every Python: the standard library's prose and functions (chapter 10).

Two kinds of text come out of the installed standard library, read from its source files with
`ast` (nothing is imported or executed) and from `pydoc_data.topics` (the language reference
pages that `help()` shows):

- documents for pre-training (span corruption): module and class docstrings, the reference
  topics, and the full source of every function;
- `(function source, docstring summary)` pairs for the supervised `summarize` and `name` tasks.

Splits are made by hashing the *module name* (or `pydoc_data.topics/<topic>`), never by rows, so
no module, and hence no function, is in two splits; functions whose source repeats an earlier
module's function verbatim are dropped so a duplicate cannot leak across splits. The corpus
records the Python version it was read from, because another version has other text. Building it
parses ~700 files (a few seconds), so the result is cached as gzipped JSON under
`default_cache_dir()` keyed by the Python version and the build options.
"""

from __future__ import annotations

import ast
import dataclasses
import gzip
import hashlib
import json
import os
import platform
import re
import sysconfig
import tempfile
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

CORPUS_FORMAT = 2  # bump when the extraction changes, so old caches are not reused
SPLITS = ("train", "validation", "test")
DEFAULT_SPLIT_FRACTIONS = (0.9, 0.05, 0.05)  # train, validation, test
# Directories of the standard library that hold tests, demos, vendored or generated files.
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "turtledemo"}
_SKIP_DIR_PREFIXES = ("config-", "__phello__", "pydoc_data")
_SENTENCE_END = re.compile(r"^(.+?[.!?])(?:\s|$)")


@dataclass(frozen=True)
class Document:
    """One pre-training text: `source` is its module (or topic) name, `kind` one of
    `module_doc`, `class_doc`, `function`, `topic`."""

    source: str
    kind: str
    split: str
    text: str


@dataclass(frozen=True)
class FunctionExample:
    """A standard-library function for the supervised tasks.

    `source` is the dedented `def` with its docstring removed (the `summarize` input), `summary`
    the docstring's first sentence (its target), `docstring` the cleaned docstring (the `name`
    input) and `name` the function's name (its target).
    """

    module: str
    qualname: str
    name: str
    split: str
    source: str
    docstring: str
    summary: str


@dataclass
class StdlibCorpus:
    """Documents and function examples from one Python installation's standard library.

    Build it with `stdlib_corpus()`. `python_version` records where the text came from;
    `config` the options it was built with; `stats` counts what was read and skipped.
    """

    python_version: str
    config: dict
    documents: list[Document]
    functions: list[FunctionExample]
    stats: dict = field(default_factory=dict)

    def texts(self, split: str, kinds: tuple[str, ...] | None = None) -> list[str]:
        """The pre-training texts of `split`, optionally only the document `kinds` given."""
        _check_split(split)
        return [
            d.text
            for d in self.documents
            if d.split == split and (kinds is None or d.kind in kinds)
        ]

    def examples(self, split: str) -> list[FunctionExample]:
        """The function examples of `split`."""
        _check_split(split)
        return [f for f in self.functions if f.split == split]

    def sources(self, split: str) -> set[str]:
        """The module (and topic) names whose text is in `split`."""
        _check_split(split)
        return {d.source for d in self.documents if d.split == split}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")


def split_of(name: str, fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS) -> str:
    """The split a module (or topic) `name` belongs to, from a hash of the name alone.

    The hash (SHA-256, not Python's salted `hash`) makes the assignment the same on every machine
    and run, and independent of which other modules exist.
    """
    u = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "validation" if u < fractions[0] + fractions[1] else "test"


def default_cache_dir() -> Path:
    """Where t5edu caches built corpora and tokenizers: `$T5EDU_CACHE`, else
    `$XDG_CACHE_HOME/t5edu`, else `~/.cache/t5edu`."""
    if os.environ.get("T5EDU_CACHE"):
        return Path(os.environ["T5EDU_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "t5edu"


def stdlib_module_files(stdlib_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Map each standard-library module name to its source file, tests and demos excluded."""
    root = Path(stdlib_dir or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise ValueError(f"stdlib_dir must be a directory of Python sources; got {str(root)!r}")
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(_SKIP_DIR_PREFIXES)
        )
        rel = Path(dirpath).relative_to(root)
        if any(not part.isidentifier() for part in rel.parts):
            continue  # e.g. `lib-dynload`: not importable packages
        for name in sorted(filenames):
            if not name.endswith(".py") or not name[:-3].isidentifier():
                continue
            parts = [*rel.parts, name[:-3]]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts:
                files[".".join(parts)] = Path(dirpath) / name
    return files


def _dedent(lines: list[str], indent: int) -> str:
    """Remove the def's own indentation from each line that has it.

    `textwrap.dedent` gives up when a multi-line string inside the function starts a line at
    column 0; lines shorter in indentation than the def (string contents) are kept as they are.
    """
    return "".join(
        line[indent:] if line[:indent].isspace() or not line.strip() else line for line in lines
    )


def _summary(docstring: str) -> str:
    """The docstring's first sentence, whitespace collapsed (PEP 257's summary)."""
    first_paragraph = " ".join(docstring.strip().split("\n\n")[0].split())
    m = _SENTENCE_END.match(first_paragraph)
    return m.group(1) if m else first_paragraph


def _is_trivial(body: list[ast.stmt]) -> bool:
    """A body that is only `pass`, `...` or `raise NotImplementedError` teaches nothing."""
    for s in body:
        if isinstance(s, ast.Pass):
            continue
        if isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant):
            continue
        if isinstance(s, ast.Raise) and "NotImplementedError" in ast.dump(s):
            continue
        return False
    return True


def _function_example(node, lines, module, qualname, split, max_source_chars):
    """Build a FunctionExample from a def node, or None when it does not make a good pair."""
    doc = ast.get_docstring(node, clean=True)
    if not doc or _is_trivial(node.body[1:]):
        return None
    d = node.body[0]
    # The docstring must sit on its own lines so removing them leaves valid code.
    if d.lineno == node.lineno or lines[d.end_lineno - 1][d.end_col_offset :].strip():
        return None
    kept = lines[node.lineno - 1 : d.lineno - 1] + lines[d.end_lineno : node.end_lineno]
    source = _dedent(kept, node.col_offset).rstrip() + "\n"
    summary = _summary(doc)
    if len(source) > max_source_chars or len(summary.split()) < 3:
        return None
    name = node.name
    return FunctionExample(module, qualname, name, split, source, doc, summary)


def _read_module(module, path, fractions, max_source_chars, seen_sources, stats):
    """Documents and function examples of one module file."""
    try:
        with tokenize.open(path) as f:  # honours PEP 263 encoding cookies
            text = f.read()
        tree = ast.parse(text)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        stats["unparsable_files"] += 1
        return [], []
    split = split_of(module, fractions)
    lines = text.splitlines(keepends=True)
    docs, functions = [], []
    module_doc = ast.get_docstring(tree, clean=True)
    if module_doc:
        docs.append(Document(module, "module_doc", split, module_doc))

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                class_doc = ast.get_docstring(child, clean=True)
                if class_doc:
                    docs.append(Document(module, "class_doc", split, class_doc))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                code = _dedent(lines[child.lineno - 1 : child.end_lineno], child.col_offset)
                docs.append(Document(module, "function", split, code))
                stats["functions_seen"] += 1
                ex = _function_example(
                    child, lines, module, prefix + child.name, split, max_source_chars
                )
                if ex is not None:
                    if ex.source in seen_sources:
                        stats["duplicate_functions"] += 1
                    else:
                        seen_sources.add(ex.source)
                        functions.append(ex)
                visit(child, f"{prefix}{child.name}.<locals>.")

    visit(tree, "")
    return docs, functions


def _topic_documents(fractions) -> list[Document]:
    from pydoc_data.topics import topics

    return [
        Document(
            f"pydoc_data.topics/{k}", "topic", split_of(f"pydoc_data.topics/{k}", fractions), v
        )
        for k, v in sorted(topics.items())
        if v.strip()
    ]


def build_stdlib_corpus(
    *,
    max_modules: int | None = None,
    split_fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS,
    max_source_chars: int = 2000,
    stdlib_dir: str | os.PathLike | None = None,
) -> StdlibCorpus:
    """Read the standard library into a `StdlibCorpus` (no cache; see `stdlib_corpus`).

    Args:
        max_modules: read only this many modules, chosen by the hash order of their names (so
            every split keeps its share); None reads all (~700 on CPython 3.11).
        split_fractions: (train, validation, test) fractions of module names, summing to 1.
        max_source_chars: function examples with longer source (docstring removed) are left out
            of `functions` (they stay in the pre-training documents); the count is in `stats`.
        stdlib_dir: the directory to read; defaults to this interpreter's standard library.

    Raises:
        ValueError: if `max_modules` < 1, `split_fractions` is not three non-negative numbers
            summing to 1 with a positive train share, or the directory holds no modules.
    """
    if max_modules is not None and max_modules < 1:
        raise ValueError(f"max_modules must be None or >= 1; got {max_modules}")
    fr = tuple(float(x) for x in split_fractions)
    if len(fr) != 3 or min(fr) < 0 or fr[0] <= 0 or abs(sum(fr) - 1.0) > 1e-9:
        raise ValueError(
            f"split_fractions must be (train, validation, test) >= 0 with train > 0 summing to 1; "
            f"got {split_fractions}"
        )
    if max_source_chars < 1:
        raise ValueError(f"max_source_chars must be >= 1; got {max_source_chars}")
    files = stdlib_module_files(stdlib_dir)
    if not files:
        raise ValueError(f"empty corpus: no Python modules found under stdlib_dir={stdlib_dir!r}")
    names = sorted(files)
    if max_modules is not None:
        # A hash other than split_of's, so the sample is not biased towards one split.
        chosen = set(
            sorted(names, key=lambda n: hashlib.sha256(f"pick/{n}".encode()).digest())[:max_modules]
        )
        names = [n for n in names if n in chosen]
    stats = {
        "modules": len(names),
        "unparsable_files": 0,
        "functions_seen": 0,
        "duplicate_functions": 0,
    }
    documents, functions, seen = [], [], set()
    for name in names:  # sorted order: which duplicate is kept does not depend on the OS
        docs, fns = _read_module(name, files[name], fr, max_source_chars, seen, stats)
        documents += docs
        functions += fns
    if max_modules is None and stdlib_dir is None:
        documents += _topic_documents(fr)
    stats["documents"] = len(documents)
    stats["function_examples"] = len(functions)
    config = _config(max_modules, fr, max_source_chars, stdlib_dir)
    return StdlibCorpus(platform.python_version(), config, documents, functions, stats)


def _config(max_modules, split_fractions, max_source_chars, stdlib_dir) -> dict:
    return {
        "format": CORPUS_FORMAT,
        "max_modules": max_modules,
        "split_fractions": [float(x) for x in split_fractions],
        "max_source_chars": max_source_chars,
        "stdlib_dir": None if stdlib_dir is None else str(stdlib_dir),
    }


def _cache_path(cache_dir: Path, config: dict) -> Path:
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    impl = platform.python_implementation().lower()
    return cache_dir / f"stdlib-corpus-{impl}{platform.python_version()}-{key}.json.gz"


def save_corpus(corpus: StdlibCorpus, path: str | os.PathLike) -> None:
    """Write `corpus` as gzipped JSON atomically (temp file + `os.replace`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "python_version": corpus.python_version,
        "config": corpus.config,
        "stats": corpus.stats,
        "documents": [dataclasses.astuple(d) for d in corpus.documents],
        "functions": [dataclasses.astuple(f) for f in corpus.functions],
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
            f.write(json.dumps(payload).encode())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cache may be shared by users of one machine
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_corpus(path: str | os.PathLike) -> StdlibCorpus:
    """Read a corpus written by `save_corpus`.

    Raises:
        ValueError: if the file is not a t5edu corpus (truncated, corrupted or another format).
    """
    try:
        with gzip.open(path, "rb") as f:
            payload = json.loads(f.read())
        return StdlibCorpus(
            payload["python_version"],
            payload["config"],
            [Document(*d) for d in payload["documents"]],
            [FunctionExample(*f) for f in payload["functions"]],
            payload["stats"],
        )
    except (OSError, EOFError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"path {str(path)!r} is not a readable t5edu corpus file: {e}") from e


def stdlib_corpus(
    *,
    max_modules: int | None = None,
    split_fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS,
    max_source_chars: int = 2000,
    cache_dir: str | os.PathLike | None = None,
    cache: bool = True,
) -> StdlibCorpus:
    """The standard-library corpus of this Python, built once and then read from the cache.

    The cache file name holds the Python implementation and version and a hash of the options,
    so another interpreter never reads this one's corpus. An unwritable cache directory only
    costs the rebuild. See `build_stdlib_corpus` for the arguments and errors.
    """
    corpus = None
    path = None
    if cache:
        config = _config(max_modules, split_fractions, max_source_chars, None)
        path = _cache_path(Path(cache_dir) if cache_dir else default_cache_dir(), config)
        if path.exists():
            try:
                corpus = load_corpus(path)
            except ValueError:
                corpus = None  # a damaged cache is rebuilt, never trusted
    if corpus is None:
        corpus = build_stdlib_corpus(
            max_modules=max_modules,
            split_fractions=split_fractions,
            max_source_chars=max_source_chars,
        )
        if cache:
            try:
                save_corpus(corpus, path)
            except OSError:
                pass  # read-only home: the corpus still works, it is just rebuilt next time
    return corpus
