"""Optimizers over a network's flat parameter buffer; the update runs in C
(csrc/optim_impl.h) in one fused pass."""
import numpy as np

from fastrnn import _kernels

SOLVERS = ("sgd", "rmsprop", "adagrad", "adam")


class Optimizer:
    """State (moments) for one flat buffer and the fused step.

    step() takes the learning rate of this step, the L2 strength, a scale for
    the gradient (loss normalisation) and clips the scaled gradient to a global
    norm of at most clip_norm; it returns the gradient norm before clipping.
    """

    def __init__(self, solver, size, dtype, momentum=0.9, nesterov=True, beta1=0.9,
                 beta2=0.999, epsilon=1e-8, rho=0.9):
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

    def step(self, params, grads, lr, l2=0.0, grad_scale=1.0, clip_norm=None, decay_mask=None,
             n_threads=1):
        norm = np.sqrt(_kernels.sumsq(grads, n_threads)) * abs(grad_scale)
        if clip_norm is not None and norm > clip_norm:
            grad_scale = grad_scale * clip_norm / norm
        self.t += 1
        _kernels.optim_step(self.solver, params, grads, self.m, self.v, decay_mask, lr, l2,
                            grad_scale, self.momentum, self.nesterov, self.rho, self.beta1,
                            self.beta2, self.epsilon, self.t, n_threads)
        return norm
