"""Pictures of attributions (needs matplotlib: ``pip install 'fastrnn[plot]'``).

    >>> import numpy as np, os, tempfile
    >>> from fastrnn.plot import attributions
    >>> A = np.random.default_rng(0).normal(size=(8, 3))        # one sample: (T, F)
    >>> path = attributions(A, os.path.join(tempfile.mkdtemp(), "a.png"))
    >>> os.path.getsize(path) > 0
    True
"""
import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("fastrnn.plot needs matplotlib: pip install 'fastrnn[plot]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def attributions(values, path, *, inputs=None, tokens=None, feature_names=None, title=None):
    """Draw one sample's attributions to a PNG file and return its path.

    values : (T, F) attributions (a time x feature heatmap), or (T,) (one row;
        with ``tokens``, the tokens coloured by their attribution).
    path : file to write (PNG).
    inputs : (T, F) or (T,) input values, optional: drawn as lines above the
        heatmap, so a peak of attribution can be read against the series.
    tokens : T strings (token input): text coloured red (for) / blue (against).
    feature_names : F names for the heatmap's rows.
    title : str, optional.

    The colour scale is symmetric around 0 (red: pushes the explained output
    up, blue: down).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim not in (1, 2) or values.size == 0:
        raise ValueError(f"values must be (T,) or (T, F) attributions of one sample, got shape "
                         f"{values.shape}")
    if tokens is not None and (values.ndim != 1 or len(tokens) != len(values)):
        raise ValueError("tokens need (T,) attributions, one per token")
    plt = _pyplot()
    limit = float(np.abs(values).max()) or 1.0
    if tokens is not None:
        fig = _token_figure(plt, values, [str(t) for t in tokens], limit)
    else:
        fig = _heatmap_figure(plt, values.reshape(len(values), -1), inputs, feature_names, limit)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _heatmap_figure(plt, values, inputs, feature_names, limit):
    T, F = values.shape
    names = list(feature_names) if feature_names is not None else [f"feature {j}"
                                                                   for j in range(F)]
    if len(names) != F:
        raise ValueError(f"{len(names)} feature names for {F} features")
    rows = 2 if inputs is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(max(6, 0.35 * T + 2), 1.2 + 0.35 * F * rows + rows),
                             sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [1, max(1, F / 3)][-rows:]})
    if inputs is not None:
        _draw_inputs(axes[0, 0], np.asarray(inputs, dtype=np.float64).reshape(T, -1), names)
    ax = axes[-1, 0]
    image = ax.imshow(values.T, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit,
                      interpolation="nearest", extent=(-0.5, T - 0.5, F - 0.5, -0.5))
    ax.set_yticks(range(F))
    ax.set_yticklabels(names)
    ax.set_xlabel("time step")
    fig.colorbar(image, ax=axes[:, 0].tolist(), label="attribution", fraction=0.04, pad=0.02)
    return fig


def _draw_inputs(ax, series, names):
    """A few features as lines; many (an image's rows) as a grey image."""
    T, F = series.shape
    if F > 3:
        ax.imshow(series.T, aspect="auto", cmap="Greys", interpolation="nearest",
                  extent=(-0.5, T - 0.5, F - 0.5, -0.5))
        ax.set_yticks([])
    else:
        for j in range(F):
            ax.plot(np.arange(T), series[:, j], label=names[j])
        if F > 1:
            ax.legend(fontsize="small", loc="upper right")
    ax.set_ylabel("input")


def _token_figure(plt, values, tokens, limit):
    """Tokens laid out left to right in lines, each on a box coloured by its
    attribution."""
    cmap = plt.get_cmap("RdBu_r")
    per_line = 16
    n_lines = (len(tokens) + per_line - 1) // per_line
    fig, ax = plt.subplots(figsize=(min(len(tokens), per_line) * 0.7 + 1, 0.6 * n_lines + 0.6))
    for i, (token, value) in enumerate(zip(tokens, values)):
        line, col = divmod(i, per_line)
        colour = cmap(0.5 + 0.5 * value / limit)
        ax.text(col, -line, token.replace(" ", "\u2423"), ha="center", va="center",
                fontsize=12, family="monospace",
                bbox=dict(boxstyle="round,pad=0.3", facecolor=colour, edgecolor="none"))
    ax.set_xlim(-0.7, min(len(tokens), per_line) - 0.3)
    ax.set_ylim(-n_lines + 0.4, 0.6)
    ax.axis("off")
    return fig
