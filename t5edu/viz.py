"""The book's figure style and small plotting helpers reused across chapters.

matplotlib is imported here only, so the package itself does not need it.
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt

STYLE = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.frameon": False,
    "image.cmap": "viridis",
}


def use_style() -> None:
    """Apply the house style and render inline figures as PNG (stable under nbval).

    Inside a Jupyter kernel this also selects the inline backend: an inherited
    ``MPLBACKEND=Agg`` (set by CI scripts and some servers) would otherwise make ``plt.show()``
    display nothing, and the figures would vanish from the page.
    """
    mpl.rcParams.update(STYLE)
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # outside IPython there is nothing to configure
        return
    shell = get_ipython()
    if shell is not None and hasattr(shell, "kernel") and "inline" not in mpl.get_backend():
        shell.run_line_magic("matplotlib", "inline")
    set_matplotlib_formats("png")


def heatmap(
    ax,
    matrix,
    title: str,
    xlabel: str = "key position j",
    ylabel: str = "query position i",
    cbar_label: str | None = None,
    **kwargs,
):
    """Draw a 2-D tensor as an image with labelled axes and a colour bar; returns the image."""
    im = ax.imshow(matrix.detach().cpu().float().numpy(), aspect="auto", **kwargs)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(False)
    cb = plt.colorbar(im, ax=ax)
    if cbar_label:
        cb.set_label(cbar_label)
    return im


def interact(draw, **sliders) -> None:
    """Redraw a figure under sliders in a live notebook (Colab, JupyterLab); chapters 2 and 7.

    Args:
        draw: draws one figure on the current pyplot state from keyword arguments whose defaults
            are the values shown first.
        sliders: `name=(min, max, step)`: integer slider when all three are ints, else float.

    Without ipywidgets (a plain Python run, or the rendered book, which keeps the static figure
    drawn above the call) it draws once with the defaults and says how to get the sliders.

    Raises:
        ValueError: when a slider is not a `(min, max, step)` triple with min < max and step > 0,
            or names no parameter of `draw`.
    """
    import inspect

    params = inspect.signature(draw).parameters
    for name, spec in sliders.items():
        if name not in params:
            raise ValueError(f"slider {name!r} is not a parameter of draw; has {list(params)}")
        if not (isinstance(spec, tuple) and len(spec) == 3 and spec[0] < spec[1] and spec[2] > 0):
            raise ValueError(
                f"slider {name} must be (min, max, step) with min < max, step > 0; got {spec!r}"
            )
    try:
        import ipywidgets
    except ImportError:
        print("ipywidgets is not installed: the figure at its defaults (pip install ipywidgets)")
        draw()
        plt.show()
        return

    def show(**values):
        draw(**values)
        plt.show()

    controls = {}
    for name, (lo, hi, step) in sliders.items():
        default = params[name].default
        is_int = all(isinstance(x, int) for x in (lo, hi, step))
        widget = ipywidgets.IntSlider if is_int else ipywidgets.FloatSlider
        value = default if default is not inspect.Parameter.empty else lo
        # Redraw on release only: a matplotlib redraw per pixel of drag is slow on Colab.
        controls[name] = widget(value=value, min=lo, max=hi, step=step, description=name,
                                continuous_update=False)  # fmt: skip
    ipywidgets.interact(show, **controls)
