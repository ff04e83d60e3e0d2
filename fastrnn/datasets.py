"""Datasets that ship with every install: nothing is downloaded at run time.

- load_digits_sequences: scikit-learn's 8x8 handwritten digits (from the UCI
  optical recognition data set, bundled with scikit-learn), each image read as
  a sequence of 8 rows of 8 pixels, with the digit's English name as caption.
- load_text: the help topics of Python's own documentation, shipped in the
  standard library as ``pydoc_data.topics`` (what ``help('if')`` prints).
- mackey_glass: the Mackey-Glass chaotic time series, generated here by
  integrating its delay differential equation.
"""
import numpy as np

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def load_digits_sequences():
    """(X, y, captions): X (1797, 8, 8) floats in [0, 1], one image row per
    step; y the digit (0-9); captions its English name ("seven")."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)
    y = digits.target
    return X, y, [DIGIT_NAMES[d] for d in y]


def load_text(max_chars=None):
    """English text (about 465k characters): Python's help topics from the
    standard library's ``pydoc_data.topics``, in sorted topic order. max_chars
    keeps only the beginning."""
    from pydoc_data.topics import topics
    text = "\n\n".join(topics[name].strip() for name in sorted(topics))
    return text if max_chars is None else text[:max_chars]


def mackey_glass(n_samples=2000, tau=17, beta=0.2, gamma=0.1, power=10, dt=0.1,
                 sample_every=1.0, x0=1.2, discard=500, seed=None):
    """The Mackey-Glass series dx/dt = beta x(t-tau) / (1 + x(t-tau)^power) - gamma x(t).

    Integrated with 4th-order Runge-Kutta at step dt (the delayed term
    interpolated linearly between grid points), sampled every ``sample_every``
    time units after dropping ``discard`` samples of transient. tau=17 gives
    the classic chaotic regime. seed adds a small random perturbation of the
    constant initial history, for distinct series.
    """
    lag = int(round(tau / dt))
    stride = int(round(sample_every / dt))
    total = (n_samples + discard) * stride + lag + 1
    history = np.full(total, x0, dtype=np.float64)
    if seed is not None:
        history[:lag + 1] += 0.01 * np.random.default_rng(seed).normal(size=lag + 1)

    def rate(x, delayed):
        return beta * delayed / (1.0 + delayed ** power) - gamma * x

    for i in range(lag, total - 1):
        x = history[i]
        d0, d1 = history[i - lag], history[i - lag + 1]
        dh = 0.5 * (d0 + d1)
        k1 = rate(x, d0)
        k2 = rate(x + 0.5 * dt * k1, dh)
        k3 = rate(x + 0.5 * dt * k2, dh)
        k4 = rate(x + dt * k3, d1)
        history[i + 1] = x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    series = history[lag::stride]
    return series[discard:discard + n_samples]
