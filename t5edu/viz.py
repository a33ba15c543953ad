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
