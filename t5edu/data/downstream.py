"""Downstream tasks a small T5 can learn on a CPU, from the standard-library corpus (ch. 11, 14).

`summarize` and `name` (`t5edu.data.tasks`) ask a 2M-parameter model for open-ended English:
after a few hundred steps it gets exact match 0. The tasks here ask for short answers read off
the code. The default three (`DEFAULT_DOWNSTREAM_TASKS`):

- `verb`: "verb: <function source without docstring>" -> the first word of its docstring
  summary (`Return`, `Set`, `Create`, ...).
- `params`: "params: <function body, def line removed>" -> the parameter names of its
  signature, `"self, key, *args, **kwargs"` (defaults and annotations left out; functions
  without parameters left out). The body uses the parameters, so they can be copied from it,
  but not every name it uses is one, and their order is not the order of first use.
- `returns`: "returns: <function source without docstring>" -> "yes" if the function itself (not
  a nested def or lambda) has a `return <value>` other than `return None`, else "no";
  generators left out. Inputs too long to show whole are dropped (the return is often last).

Measured (tiny preset, 200 steps of batch 16, adamw_scale lr 1e-2, 1 thread, validation split,
seed 0; pre-trained = 3500 steps of span corruption at batch 32): `verb` exact match 0.14 from
random init, 0.28 pre-trained, beside 0.21 for the most frequent train target; `params` 0.08 /
0.19 beside 0.15; `returns` 0.98 for both after only 60 steps, beside 0.60 (a check that
fine-tuning works, at its ceiling, not a test of transfer). Two more tasks are defined but did
not work at this budget (left out by default):

- `raises`: "raises: <source>" -> the exception of its first `raise X` / `raise X(...)`
  (`ValueError`, `errors.HeaderParseError`); only 373 train and 19 validation functions
  raise within 128 tokens, too few to measure.
- `body_name`: "body_name: <function body, def line removed>" -> the function's name (dunder
  methods left out, as in `name`): open-ended like `name`; 0.01 even pre-trained (2000
  steps), beside 0.006 for the most frequent target.

Each task is held out by module as the corpus is (`StdlibCorpus.examples(split)`), and is a
`SupervisedTask`, so `Mixture`, `collate` and the trainer take it as they take `summarize`; its
prefix is registered in `t5edu.data.tasks.DOWNSTREAM_PREFIXES`. `baseline_predictions` gives
what a model-free rule scores, to print beside a model's exact match
(`t5edu.train.exact_match`): the train split's most frequent target, or the input's first
identifier.
"""

from __future__ import annotations

import ast
import keyword
import re
from collections import Counter
from collections.abc import Sequence

from t5edu.data.corpus import SPLITS, FunctionExample, _dedent
from t5edu.data.tasks import DOWNSTREAM_PREFIXES, SupervisedTask

DOWNSTREAM_TASKS = tuple(DOWNSTREAM_PREFIXES)  # params, verb, raises, body_name, returns
DEFAULT_DOWNSTREAM_TASKS = ("verb", "params", "returns")  # the ones that learn (see above)
BASELINES = ("most_frequent", "first_identifier")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# Names a function body uses that are never the function's own name: the first_identifier
# baseline skips them (it would otherwise answer "self" for most methods).
_NOT_A_NAME = frozenset(keyword.kwlist) | {"self", "cls"}


def _function_node(source: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    tree = ast.parse(source)
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        raise ValueError(f"source must hold one def; got {source[:60]!r}")
    return node


def function_body(source: str) -> str:
    """`source` (one `def`, as in `FunctionExample.source`) without its def line(s), dedented.

    Everything from the first statement of the body on is kept; a signature spread over several
    lines goes whole, as do comments between it and the first statement.

    Raises:
        ValueError: if `source` does not parse to one function definition.
    """
    node = _function_node(source)
    first = node.body[0]
    lines = source.splitlines(keepends=True)[first.lineno - 1 :]
    return _dedent(lines, first.col_offset).rstrip() + "\n"


def parameter_names(source: str) -> str:
    """The parameters of the `def` in `source`, as `"a, b, *args, c, **kwargs"` (signature order;
    no defaults, annotations, bare `*` or `/`); "" for a function without parameters."""
    a = _function_node(source).args
    names = [x.arg for x in a.posonlyargs + a.args]
    names += [f"*{a.vararg.arg}"] if a.vararg else []
    names += [x.arg for x in a.kwonlyargs]
    names += [f"**{a.kwarg.arg}"] if a.kwarg else []
    return ", ".join(names)


def first_raised(source: str) -> str | None:
    """The exception of the first `raise X` or `raise X(...)` in source order (`ast.unparse` of
    X: `"ValueError"`, `"errors.HeaderParseError"`), or None if there is none (a bare `raise` or
    `raise x` re-raising a caught exception counts as none)."""
    raises = [
        n
        for n in ast.walk(_function_node(source))
        if isinstance(n, ast.Raise) and n.exc is not None
    ]
    for r in sorted(raises, key=lambda n: (n.lineno, n.col_offset)):
        exc = r.exc.func if isinstance(r.exc, ast.Call) else r.exc
        text = ast.unparse(exc)
        # A lower-case bare name is a variable (`raise err`); its type is not in the text.
        if isinstance(exc, ast.Attribute) or (isinstance(exc, ast.Name) and text[:1].isupper()):
            return text
        return None
    return None


def _own_nodes(node):
    """The nodes of a function's own body: nested defs, lambdas and classes are not entered."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        n = stack.pop()
        yield n
        if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            stack.extend(ast.iter_child_nodes(n))


def returns_value(source: str) -> str | None:
    """ "yes" if the `def` in `source` has a `return <value>` of its own (not `return None`, not in
    a nested def), "no" if not, None for a generator (its `return` means something else)."""
    own = list(_own_nodes(_function_node(source)))
    if any(isinstance(n, ast.Yield | ast.YieldFrom) for n in own):
        return None
    values = [n.value for n in own if isinstance(n, ast.Return) and n.value is not None]
    has = any(not (isinstance(v, ast.Constant) and v.value is None) for v in values)
    return "yes" if has else "no"


def summary_verb(summary: str) -> str | None:
    """The summary's first word (letters, digits, `_`), e.g. "Return" for "Return the path."; None
    if it does not start with a letter."""
    m = _WORD.match(summary.strip())
    return m.group(0) if m else None


def first_identifier(text: str) -> str:
    """The first identifier of `text` that is not a keyword nor `self`/`cls`; "" if none."""
    for m in _IDENTIFIER.finditer(text):
        if m.group(0) not in _NOT_A_NAME:
            return m.group(0)
    return ""


def downstream_pairs(task: str, functions: Sequence[FunctionExample]) -> list[tuple[str, str]]:
    """(input text without prefix, target text) of `task` for each function that has one.

    Raises:
        ValueError: if `task` is not one of `DOWNSTREAM_TASKS`.
    """
    if task not in DOWNSTREAM_TASKS:
        raise ValueError(f"task must be one of {DOWNSTREAM_TASKS}; got {task!r}")
    pairs = []
    for f in functions:
        if task == "params":
            pair = (function_body(f.source), parameter_names(f.source))
        elif task == "verb":
            pair = (f.source, summary_verb(f.summary))
        elif task == "raises":
            pair = (f.source, first_raised(f.source))
        elif task == "returns":
            pair = (f.source, returns_value(f.source))
        elif not (f.name.startswith("__") and f.name.endswith("__")):  # body_name
            pair = (function_body(f.source), f.name)
        else:
            continue
        if pair[1]:
            pairs.append(pair)
    return pairs


class DownstreamTask(SupervisedTask):
    """A `SupervisedTask` that keeps its (input, target) texts: `pairs[i]` is example `i`'s.

    Pairs whose target is longer than `targets_length` tokens are dropped (`num_dropped`);
    inputs longer than `inputs_length` are cut to it, eos kept last (`num_truncated`), or,
    with `truncate_inputs=False`, dropped too (`raises`, where the raise may lie in the cut).
    """

    def __init__(
        self,
        name: str,
        pairs: Sequence[tuple[str, str]],
        tokenizer,
        *,
        inputs_length: int = 128,
        targets_length: int = 32,
        truncate_inputs: bool = True,
    ):
        kept, dropped, truncated = [], 0, 0
        if name not in DOWNSTREAM_PREFIXES:
            raise ValueError(f"name must be one of {DOWNSTREAM_TASKS}; got {name!r}")
        prefix = DOWNSTREAM_PREFIXES[name]
        for source, target in pairs:
            too_long_input = len(tokenizer.encode(prefix + source)) > inputs_length
            if len(tokenizer.encode(target)) > targets_length or (
                too_long_input and not truncate_inputs
            ):
                dropped += 1
                continue
            truncated += too_long_input
            kept.append((source, target))
        if not kept:
            raise ValueError(
                f"empty corpus: task {name!r} has no examples ({len(pairs)} pairs given, "
                f"{dropped} dropped as too long)"
            )
        # Every kept pair fits once cut, so SupervisedTask drops nothing: examples[i] is pairs[i].
        super().__init__(
            name,
            kept,
            tokenizer,
            inputs_length=inputs_length,
            targets_length=targets_length,
            too_long="truncate",
        )
        self.pairs = kept
        self.num_dropped = dropped
        self.num_truncated = truncated


def build_downstream_tasks(
    corpus,
    tokenizer,
    split: str,
    *,
    tasks: Sequence[str] = DEFAULT_DOWNSTREAM_TASKS,
    inputs_length: int = 128,
    targets_length: int = 32,
) -> dict[str, DownstreamTask]:
    """The downstream tasks of one split of `corpus` (a `StdlibCorpus`), keyed by name.

    Args:
        split: one of `SPLITS`; functions come from `corpus.examples(split)`, so no module is in
            two splits.
        tasks: names from `DOWNSTREAM_TASKS` (default `DEFAULT_DOWNSTREAM_TASKS`).
        inputs_length, targets_length: token budgets, eos included (see `DownstreamTask`).

    Raises:
        ValueError: for an unknown split or task name, or a task left without examples.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    if isinstance(tasks, str):
        raise ValueError(f"tasks must be a list of task names, not one str; got {tasks!r}")
    unknown = [t for t in tasks if t not in DOWNSTREAM_TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks must be names from {DOWNSTREAM_TASKS}; got {list(tasks)}")
    functions = corpus.examples(split)
    return {
        name: DownstreamTask(
            name,
            downstream_pairs(name, functions),
            tokenizer,
            inputs_length=inputs_length,
            targets_length=targets_length,
            truncate_inputs=name not in ("raises", "returns"),
        )
        for name in tasks
    }


def baseline_predictions(
    baseline: str, train_targets: Sequence[str], eval_inputs: Sequence[str]
) -> list[str]:
    """What a model-free rule predicts for each of `eval_inputs`.

    Args:
        baseline: "most_frequent": the most frequent of `train_targets` for every input (ties go
            to the target seen first); "first_identifier": `first_identifier(input)`.
        train_targets: the train split's targets (`[t for _, t in task.pairs]`).
        eval_inputs: the evaluated inputs, without prefix (`[s for s, _ in task.pairs]`).

    Returns:
        One prediction per input; score them with `t5edu.train.exact_match`.

    Raises:
        ValueError: for an unknown `baseline`, or "most_frequent" with no train targets.
    """
    if baseline == "most_frequent":
        if not train_targets:
            raise ValueError("most_frequent needs train_targets; got an empty list")
        top = Counter(train_targets).most_common(1)[0][0]
        return [top] * len(eval_inputs)
    if baseline == "first_identifier":
        return [first_identifier(x) for x in eval_inputs]
    raise ValueError(f"baseline must be one of {BASELINES}; got {baseline!r}")
