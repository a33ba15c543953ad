"""t5edu.viz.interact: slider validation and the static fallback without ipywidgets."""

import sys

import matplotlib
import pytest

matplotlib.use("Agg")
from t5edu import viz  # noqa: E402


def test_interact_rejects_unknown_or_malformed_sliders():
    def draw(a=1):
        pass

    with pytest.raises(ValueError, match=r"slider 'b' is not a parameter of draw; has \['a'\]"):
        viz.interact(draw, b=(0, 1, 1))
    with pytest.raises(ValueError, match=r"slider a must be \(min, max, step\).*got \(3, 1, 1\)"):
        viz.interact(draw, a=(3, 1, 1))


def test_interact_without_ipywidgets_draws_the_defaults_once(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # makes `import ipywidgets` fail
    calls = []
    viz.interact(lambda a=7, b=0.5: calls.append((a, b)), a=(0, 10, 1), b=(0.0, 1.0, 0.1))
    assert calls == [(7, 0.5)]
    assert "ipywidgets is not installed" in capsys.readouterr().out


def test_interact_builds_int_and_float_sliders_at_the_defaults(monkeypatch):
    ipywidgets = pytest.importorskip("ipywidgets")
    seen = {}
    monkeypatch.setattr(ipywidgets, "interact", lambda show, **controls: seen.update(controls))
    viz.interact(lambda a=7, b=0.5: None, a=(0, 10, 1), b=(0.0, 1.0, 0.1))
    kinds = {name: (type(w).__name__, w.value, w.min, w.max) for name, w in seen.items()}
    assert kinds == {"a": ("IntSlider", 7, 0, 10), "b": ("FloatSlider", 0.5, 0.0, 1.0)}
    assert not any(w.continuous_update for w in seen.values())
