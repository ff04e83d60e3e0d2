"""Optimizers over a network's flat parameter buffer; the update runs in C
(csrc/optim_impl.h) in one fused pass."""
import numpy as np

from fastrnn import _kernels, _packed

SOLVERS = ("sgd", "rmsprop", "adagrad", "adam")
SCHEDULES = ("constant", "exponential", "step", "plateau")


class LearningRateSchedule:
    """The learning rate of every epoch.

    "constant": learning_rate_init; "exponential": learning_rate_init *
    decay**epoch; "step": learning_rate_init * decay**(epoch // every);
    "plateau": the current rate times decay after ``every`` epochs in which the
    monitored loss did not improve by more than tol.
    """

    def __init__(self, kind="constant", learning_rate_init=0.001, decay=0.5, every=10, tol=1e-4):
        self.current = float(learning_rate_init)  # the plateau schedule's rate
        self.best, self.waited = np.inf, 0          # the plateau schedule's memory
        self.configure(kind, learning_rate_init, decay, every, tol)

    def configure(self, kind, learning_rate_init, decay, every, tol):
        """Set the hyper-parameters; the plateau state is kept (warm starts)."""
        if kind not in SCHEDULES:
            raise ValueError(f"learning_rate must be one of {SCHEDULES}, got {kind!r}")
        if float(learning_rate_init) != getattr(self, "learning_rate_init", None):
            self.current = float(learning_rate_init)  # a new rate replaces a decayed one
        self.kind, self.learning_rate_init = kind, float(learning_rate_init)
        self.decay, self.every, self.tol = decay, every, tol

    def rate(self, epoch):
        """The learning rate of epoch (0-based, counted over all fits)."""
        if self.kind == "exponential":
            return self.learning_rate_init * self.decay ** epoch
        if self.kind == "step":
            return self.learning_rate_init * self.decay ** (epoch // self.every)
        return self.current  # constant, or plateau (changed on plateaus)

    def end_epoch(self, monitored):
        """Record the epoch's monitored loss (lower is better); the plateau
        schedule decays the rate after ``every`` epochs without improvement."""
        if self.kind != "plateau":
            return
        if monitored < self.best - self.tol:
            self.best, self.waited = monitored, 0
        elif self.waited + 1 >= self.every:
            self.current *= self.decay
            self.waited = 0
        else:
            self.waited += 1


class Optimizer:
    """State (moments) for one flat buffer, the fused step, and the
    learning-rate schedule.

    step() takes the learning rate of this step, the L2 strength, a scale for
    the gradient (loss normalisation) and clips the scaled gradient to a global
    norm of at most clip_norm; it returns the gradient norm before clipping.
    ``schedule`` (a LearningRateSchedule; default: constant 0.001) gives the
    rate of every epoch.
    """

    def __init__(self, solver, size, dtype, momentum=0.9, nesterov=True, beta1=0.9,
                 beta2=0.999, epsilon=1e-8, rho=0.9, schedule=None):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        self.solver = solver
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.beta1, self.beta2, self.epsilon, self.rho = (float(beta1), float(beta2),
                                                          float(epsilon), float(rho))
        needs_m = solver == "adam" or (solver == "sgd" and self.momentum != 0)
        needs_v = solver in ("adam", "rmsprop", "adagrad")
        self.m = np.zeros(size, dtype) if needs_m else None
        self.v = np.zeros(size, dtype) if needs_v else None
        self.t = 0
        self.schedule = LearningRateSchedule() if schedule is None else schedule

    def state(self):
        """A copy of the training state (moments, step count, schedule), for restore."""
        return {"m": None if self.m is None else self.m.copy(),
                "v": None if self.v is None else self.v.copy(),
                "t": self.t, "schedule": dict(vars(self.schedule))}

    def restore(self, state):
        """Return to a state() taken earlier (e.g. before a divergence)."""
        for name in ("m", "v"):
            if state[name] is not None:
                getattr(self, name)[:] = state[name]
        self.t = state["t"]
        vars(self.schedule).update(state["schedule"])

    def step(self, params, grads, lr, l2=0.0, grad_scale=1.0, clip_norm=None, decay_mask=None,
             n_threads=1):
        _packed.written(params)
        norm = np.sqrt(_kernels.sumsq(x=grads, n_threads=n_threads)) * abs(grad_scale)
        if clip_norm is not None and norm > clip_norm:
            grad_scale = grad_scale * clip_norm / norm
        self.t += 1
        _kernels.optim_step(solver=self.solver, w=params, g=grads, m=self.m, v=self.v,
                            decay_mask=decay_mask, lr=lr, l2=l2, grad_scale=grad_scale,
                            momentum=self.momentum, nesterov=self.nesterov, rho=self.rho,
                            beta1=self.beta1, beta2=self.beta2, eps=self.epsilon, step=self.t,
                            n_threads=n_threads)
        return norm
