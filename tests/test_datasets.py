"""fastrnn.datasets: the embedded data sets are what their docstrings say."""
import numpy as np
import pytest
from pydoc_data.topics import topics
from sklearn.datasets import load_digits

from fastrnn.datasets import DIGIT_NAMES, load_digits_sequences, load_text, mackey_glass


def test_digit_sequences_are_the_digit_images_row_by_row():
    X, y, captions = load_digits_sequences()
    digits = load_digits()
    assert X.shape == (1797, 8, 8) and X.dtype == np.float32
    np.testing.assert_allclose(X * 16, digits.images, rtol=1e-6)
    np.testing.assert_array_equal(y, digits.target)
    assert captions == [DIGIT_NAMES[d] for d in digits.target]
    assert captions[0] == "zero" and len(set(captions)) == 10


def test_text_is_the_python_help_topics_in_sorted_order():
    text = load_text()
    first, last = sorted(topics)[0], sorted(topics)[-1]
    assert text.startswith(topics[first].strip()) and text.endswith(topics[last].strip())
    assert topics["if"].strip() in text  # what help('if') prints
    assert len(text) > 100000
    assert load_text(max_chars=500) == text[:500]


def test_mackey_glass_follows_its_delay_equation():
    series = mackey_glass(600)
    assert series.shape == (600,) and 0.2 < series.min() < series.max() < 1.5
    # central differences (one sample = one time unit) against the right-hand side
    # beta x(t - 17) / (1 + x(t - 17)^10) - gamma x(t) with the defaults
    x, delayed = series[17:-1], series[:-18]
    rhs = 0.2 * delayed / (1 + delayed ** 10) - 0.1 * x
    derivative = (series[18:] - series[16:-2]) / 2
    residual = np.abs(derivative[1:] - rhs[1:])
    assert residual.mean() < 0.05 * np.abs(derivative).mean(), residual.mean()
    shifted = mackey_glass(600, tau=30)  # another delay: the equation no longer holds
    x, delayed = shifted[17:-1], shifted[:-18]
    wrong = np.abs((shifted[18:] - shifted[16:-2]) / 2 - (0.2 * delayed / (1 + delayed ** 10)
                                                          - 0.1 * x))
    assert wrong.mean() > 5 * residual.mean()


@pytest.mark.parametrize("seed", [1, 2])
def test_mackey_glass_seeds_give_distinct_series(seed):
    assert not np.allclose(mackey_glass(200, seed=seed), mackey_glass(200, seed=seed + 10))
    np.testing.assert_array_equal(mackey_glass(200, seed=seed), mackey_glass(200, seed=seed))
