"""Datasets that ship with every install: nothing is downloaded at run time.

- load_digits_sequences: scikit-learn's 8x8 handwritten digits (from the UCI
  optical recognition data set, bundled with scikit-learn), each image read as
  a sequence of 8 rows of 8 pixels, with the digit's English name as caption.
- load_text: the help topics of Python's own documentation, shipped in the
  standard library as ``pydoc_data.topics`` (what ``help('if')`` prints).
- mackey_glass: the Mackey-Glass chaotic time series, generated here by
  integrating its delay differential equation.
- make_dates, make_addition: sequence-to-sequence pairs generated here (date
  normalisation to ISO dates; digit-string addition).
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


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
DATE_FORMATS = ("day month year", "dd/mm/yy", "month day, year", "dd.mm.yyyy", "mon day year")


def _ordinal(day):
    if day in (11, 12, 13):
        return f"{day}th"
    return f"{day}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(day % 10, 'th') }"


def _format_date(year, month, day, style):
    name = MONTHS[month - 1]
    if style == "day month year":      # 3 March 2021
        return f"{day} {name} {year}"
    if style == "dd/mm/yy":            # 03/03/21 (years 1950-2049)
        return f"{day:02d}/{month:02d}/{year % 100:02d}"
    if style == "month day, year":     # March 3rd, 2021
        return f"{name} {_ordinal(day)}, {year}"
    if style == "dd.mm.yyyy":          # 03.03.2021
        return f"{day:02d}.{month:02d}.{year}"
    return f"{name[:3]} {day} {year}"  # Mar 3 2021


def make_dates(n_samples=10000, random_state=None):
    """Date normalisation pairs, generated here: (X, Y) lists of strings, X a
    date written in one of DATE_FORMATS ("3 March 2021", "03/03/21" (day
    first), "March 3rd, 2021", "03.03.2021", "Mar 3 2021"), Y the ISO date
    "2021-03-03". Dates are uniform over 1950-2049 (so a two-digit year is
    unambiguous)."""
    import datetime
    rng = np.random.default_rng(random_state)
    start = datetime.date(1950, 1, 1).toordinal()
    days = rng.integers(0, datetime.date(2049, 12, 31).toordinal() - start + 1, n_samples)
    styles = rng.integers(0, len(DATE_FORMATS), n_samples)
    X, Y = [], []
    for offset, style in zip(days, styles):
        d = datetime.date.fromordinal(start + int(offset))
        X.append(_format_date(d.year, d.month, d.day, DATE_FORMATS[style]))
        Y.append(d.isoformat())
    return X, Y


def make_addition(n_samples=10000, max_digits=4, random_state=None):
    """Digit-string addition pairs, generated here: X "123+4567", Y "4690".
    Each operand has 1..max_digits digits (the digit count uniform, then the
    number uniform among those with that many digits)."""
    rng = np.random.default_rng(random_state)

    def operands():
        digits = rng.integers(1, max_digits + 1, n_samples)
        low = np.where(digits == 1, 0, 10 ** (digits - 1))
        return rng.integers(low, 10 ** digits)

    a, b = operands(), operands()
    return [f"{x}+{y}" for x, y in zip(a, b)], [str(x + y) for x, y in zip(a, b)]
