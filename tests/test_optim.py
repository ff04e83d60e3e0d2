"""fastrnn.optim: one fused step of every solver against NumPy, and the
learning-rate schedules."""
import numpy as np
import pytest

from fastrnn.optim import LearningRateSchedule, Optimizer

HYPER = dict(momentum=0.8, nesterov=True, beta1=0.85, beta2=0.99, epsilon=1e-6, rho=0.7)


def numpy_step(solver, hyper, w, g, m, v, t, lr, l2, grad_scale, mask):
    """The update written out in NumPy (float64): returns w, m, v after it."""
    w, m, v = w.copy(), None if m is None else m.copy(), None if v is None else v.copy()
    gi = grad_scale * g + l2 * mask * w
    if solver == "sgd":
        if m is None:
            return w - lr * gi, m, v
        m = hyper["momentum"] * m - lr * gi
        w = w + (hyper["momentum"] * m - lr * gi if hyper["nesterov"] else m)
    elif solver in ("rmsprop", "adagrad"):
        rho = 1.0 if solver == "adagrad" else hyper["rho"]
        v = rho * v + (1.0 if solver == "adagrad" else 1 - rho) * gi ** 2
        w = w - lr * gi / (np.sqrt(v) + hyper["epsilon"])
    else:
        b1, b2 = hyper["beta1"], hyper["beta2"]
        m = b1 * m + (1 - b1) * gi
        v = b2 * v + (1 - b2) * gi ** 2
        lr_t = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        w = w - lr_t * m / (np.sqrt(v) + hyper["epsilon"])
    return w, m, v


CASES = [("sgd", dict(momentum=0.0)), ("sgd", dict(nesterov=False)), ("sgd", dict(nesterov=True)),
         ("rmsprop", {}), ("adagrad", {}), ("adam", {})]


@pytest.mark.parametrize("solver,options", CASES)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("clip_norm", [None, 0.5])
def test_two_steps_match_numpy(solver, options, dtype, rtol, clip_norm):
    rng = np.random.default_rng(0)
    n = 257
    w = rng.normal(size=n)
    mask = (rng.random(n) < 0.7).astype(np.float64)  # L2 on some entries only
    hyper = dict(HYPER, **options)
    opt = Optimizer(solver, n, dtype, **hyper)
    params = w.astype(dtype)
    ref_w = params.astype(np.float64)
    ref_m = None if opt.m is None else np.zeros(n)  # no momentum buffer at momentum=0
    ref_v = None if opt.v is None else np.zeros(n)
    lr, l2, grad_scale = 0.05, 0.01, 0.25
    for t in (1, 2):
        g = rng.normal(size=n).astype(dtype)
        norm = opt.step(params, g, lr, l2=l2, grad_scale=grad_scale, clip_norm=clip_norm,
                        decay_mask=mask.astype(dtype), n_threads=1)
        expected_norm = np.linalg.norm(g.astype(np.float64)) * grad_scale
        np.testing.assert_allclose(norm, expected_norm, rtol=1e-6)
        scale = grad_scale
        if clip_norm is not None and expected_norm > clip_norm:
            scale = grad_scale * clip_norm / expected_norm
        ref_w, ref_m, ref_v = numpy_step(solver, hyper, ref_w, g.astype(np.float64), ref_m,
                                         ref_v, t, lr, l2, scale, mask)
        np.testing.assert_allclose(params, ref_w, rtol=rtol, atol=rtol)
    assert opt.t == 2


def test_clipping_bounds_the_step_and_masks_exempt_entries():
    n = 10
    opt = Optimizer("sgd", n, np.float64, momentum=0.0)
    w = np.ones(n)
    g = np.full(n, 100.0)
    norm = opt.step(w, g, lr=1.0, clip_norm=1.0)
    assert norm == pytest.approx(np.sqrt(n) * 100)
    np.testing.assert_allclose(np.linalg.norm(1.0 - w), 1.0)  # the step has norm clip_norm
    mask = np.zeros(n)
    mask[:5] = 1
    w = np.ones(n)
    Optimizer("sgd", n, np.float64, momentum=0.0).step(w, np.zeros(n), lr=0.1, l2=1.0,
                                                      decay_mask=mask)
    np.testing.assert_array_equal(w, [0.9] * 5 + [1.0] * 5)  # decay only where mask is 1


def test_unknown_solver_is_refused():
    with pytest.raises(ValueError, match="solver"):
        Optimizer("lbfgs", 3, np.float64)


def test_exponential_and_step_schedules():
    exp = LearningRateSchedule("exponential", 0.1, decay=0.5, every=3)
    np.testing.assert_allclose([exp.rate(e) for e in range(4)], [0.1, 0.05, 0.025, 0.0125])
    step = LearningRateSchedule("step", 0.1, decay=0.5, every=3)
    np.testing.assert_allclose([step.rate(e) for e in range(7)],
                               [0.1] * 3 + [0.05] * 3 + [0.025])
    const = LearningRateSchedule("constant", 0.1)
    for loss in (3.0, 3.0, 3.0):
        const.end_epoch(loss)
    assert const.rate(10) == 0.1


def test_plateau_schedule_decays_after_every_epochs_without_improvement():
    sched = LearningRateSchedule("plateau", 1.0, decay=0.5, every=2, tol=0.1)
    rates = []
    for loss in (5.0, 4.0, 3.95, 3.95, 3.0, 3.0, 3.0, 3.0):
        sched.end_epoch(loss)
        rates.append(sched.rate(0))
    # improvements of more than tol reset the wait; two flat epochs halve the rate
    assert rates == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    sched.configure("plateau", 1.0, decay=0.1, every=2, tol=0.1)  # warm start keeps the state
    assert sched.rate(0) == 0.25
    with pytest.raises(ValueError, match="learning_rate"):
        LearningRateSchedule("cosine")
