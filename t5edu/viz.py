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
    """Apply the house style and render inline figures as PNG (stable under nbval)."""
    mpl.rcParams.update(STYLE)
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")
    except ImportError:  # outside IPython there is nothing to configure
        pass


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
