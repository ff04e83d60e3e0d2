"""fastrnn.forecaster: windows, forecasts against a naive baseline, missing
values, multivariate and exogenous series."""
import pickle

import numpy as np
import pytest

from fastrnn import Forecaster, make_windows
from fastrnn.datasets import mackey_glass

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def test_make_windows():
    X, Y = make_windows(np.arange(12.0).reshape(6, 2), lookback=2, horizon=3)
    assert X.shape == (2, 2, 2) and Y.shape == (2, 3, 2)
    np.testing.assert_array_equal(Y[1, 0], [6, 7])
    with pytest.raises(ValueError, match="too short"):
        make_windows(np.arange(3.0), lookback=3)


@pytest.mark.parametrize("strategy,horizon", [("recursive", 1), ("direct", 10)])
def test_mackey_glass_forecast_beats_naive(strategy, horizon):
    series = mackey_glass(1100)
    train, test = series[:1000], series[1000:1030]
    fc = Forecaster(lookback=24, horizon=horizon, strategy=strategy, max_iter=30,
                    hidden_size=32, random_state=0).fit(train)
    pred = fc.predict(len(test))
    assert pred.shape == test.shape
    mse = np.mean((pred - test) ** 2)
    naive = np.mean((train[-1] - test) ** 2)
    assert mse < 0.05 * naive, (mse, naive)


def test_forecaster_missing_values_multivariate_and_exogenous():
    series = mackey_glass(400)
    gappy = series.copy()
    gappy[::13] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Forecaster(lookback=8, max_iter=1).fit(gappy)
    fc = Forecaster(lookback=8, max_iter=2, missing="interpolate", random_state=0).fit(gappy)
    assert np.all(np.isfinite(fc.predict(3)))
    both = np.stack([series, np.roll(series, 5)], axis=1)
    exog = np.arange(400.0)[:, None]
    mv = Forecaster(lookback=8, max_iter=2, random_state=0).fit(both, X=exog)
    assert mv.predict(4, X_future=np.arange(400.0, 404.0)[:, None]).shape == (4, 2)
    with pytest.raises(ValueError, match="X_future"):
        mv.predict(4)
    assert mv.predict(2, series=both[:50], X=exog[:50],
                      X_future=np.zeros((2, 1))).shape == (2, 2)


def test_forecaster_pickle():
    fc = Forecaster(lookback=8, max_iter=2, random_state=0).fit(mackey_glass(200))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fc)).predict(5), fc.predict(5))
