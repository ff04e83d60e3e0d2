"""Attributions: which time steps and features drove a prediction.

    >>> import numpy as np
    >>> from fastrnn import FastLSTMClassifier
    >>> from fastrnn.explain import explain
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(64, 6, 3)).astype(np.float32)
    >>> y = (X[:, 2, 0] > 0).astype(int)           # only step 2, feature 0 matters
    >>> clf = FastLSTMClassifier(hidden_size=8, max_iter=30, random_state=0).fit(X, y)
    >>> explain(clf, X[:4], method="integrated_gradients", n_steps=32).shape
    (4, 6, 3)

Every method explains one scalar per sample, ``explained_output``:

- classifiers: the logit of the target class (the predicted class unless
  ``target`` names one), or its probability with ``output="probability"``;
  with two classes the network has one logit z and the target class's logit is
  z (the second class) or -z (the first);
- regressors: the prediction of output ``target`` (in y's units; an index, 0
  when there is one output);
- per-step models: that output at step ``step`` (default: each sequence's last
  valid step; a negative step counts back from it).

The gradients come from the C backward pass in its dX-only mode (no parameter
gradient is computed), on batches of many samples (integrated gradients: all
interpolation points of many samples in one batch; occlusion: every occluded
copy), split into calls of bounded memory: no Python loop per sample or step.

Attributions have X's shape: (n, T, F) for 3-D X, (n, T) for 2-D (univariate)
X, a list of (T_i, F) arrays for a list of sequences of different lengths, and
(n, T) (a list of (T_i,)) for token ids, where the attribution of a token is
the sum over the embedding dimensions of its embedding's attribution (the
gradient with respect to the embedding times the embedding, for
input_x_gradient; integrated gradients runs on the embeddings).
"""
import numbers

import numpy as np
from sklearn.utils.validation import check_is_fitted

METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "occlusion")
CALL_BYTES = 4 * 2 ** 20  # memory of one forward/backward call: its buffers stay in cache


def explain(estimator, X, method="integrated_gradients", target=None, baseline=None,
            n_steps=50, *, step=None, window=1, output="logit"):
    """Attributions of a fitted estimator's output to every step and feature of X.

    Parameters
    ----------
    estimator : a fitted fastrnn estimator (``model_`` set)
    X : the estimator's input form (2-D, 3-D, list of sequences, token ids)
    method : {"integrated_gradients", "saliency", "input_x_gradient", "occlusion"}
        "saliency": |d f / d x|; "input_x_gradient": x * d f / d x;
        "integrated_gradients": (x - x') times the mean gradient on the straight
        path from the baseline x' to x (trapezoid rule over n_steps intervals,
        n_steps + 1 gradients; Sundararajan et al. 2017); "occlusion": f(x) -
        f(x with `window` consecutive steps set to the baseline), averaged over
        the windows that cover a step (every feature of a step gets its value).
    target : class label (classifiers) or output index (regressors), or an
        array of one per sample; None: the predicted class, output 0.
    baseline : None (zeros; for tokens a zero embedding), or an array that
        broadcasts to X's padded shape (n, T, F) (a list for ragged X); token
        ids for token input.
    n_steps : int, default=50
        Integrated gradients' number of intervals.
    step : int or None
        Per-step models: the step whose output is explained.
    window : int, default=1
        Occlusion's number of consecutive steps.
    output : {"logit", "probability"}, default="logit"
        Classifiers: explain the target class's logit or its probability.

    Returns
    -------
    attributions : array of X's shape (floats), or a list for ragged X.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    _check_positive_int("n_steps", n_steps)
    _check_positive_int("window", window)
    problem = _Problem(estimator, X, target, step, output)
    if method == "saliency":
        attributions = np.abs(problem.gradient(problem.inputs, np.arange(problem.n)))
    elif method == "input_x_gradient":
        attributions = problem.inputs * problem.gradient(problem.inputs, np.arange(problem.n))
    elif method == "integrated_gradients":
        attributions = _integrated_gradients(problem, problem.baseline(baseline), n_steps)
    else:
        attributions = _occlusion(problem, problem.baseline(baseline), window)
    return problem.in_input_form(attributions)


def explained_output(estimator, X, target=None, *, step=None, output="logit",
                     baseline=False):
    """The scalar per sample that ``explain`` attributes (see the module's
    docstring), (n,) floats: at X, or with ``baseline`` (None: zeros, or an
    array as in explain) at the baseline, the target still chosen at X.
    Integrated gradients' attributions of a sample sum to the value at X minus
    the value at the baseline."""
    problem = _Problem(estimator, X, target, step, output)
    inputs = problem.inputs if baseline is False else problem.baseline(baseline)
    return problem.value(inputs, np.arange(problem.n))


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _chunks(n, size):
    """Index arrays of consecutive blocks of at most size of range(n)."""
    return [np.arange(start, min(start + size, n)) for start in range(0, n, size)]


class _Problem:
    """A fitted network, X as the stack's inputs (embedded tokens for token
    input), and the scalar f each sample explains (_Target)."""

    def __init__(self, estimator, X, target, step, output):
        check_is_fitted(estimator, "model_")
        self.estimator = estimator
        self.net = estimator.model_
        if self.net.config["condition_size"] is not None:
            raise ValueError("explain does not support conditioned networks")
        data = estimator._prepare_X(X, reset=False)
        self.lengths = data.lengths
        self.tokens = self.net.config["vocab_size"] is not None
        self.inputs = self._embed(data.values) if self.tokens else data.values
        self.n, self.T, self.I = self.inputs.shape
        # 2-D numeric X holds univariate sequences: attributions (n, T) like X
        self.univariate = not self.tokens and self.lengths is None and np.ndim(X) == 2
        self.rows_per_call = self._rows_per_call()
        self.target = _Target(estimator, self._raw_outputs(), target, step, self._ends(),
                              output)

    def _embed(self, tokens):
        return self.net.params["embedding.weight"][tokens]

    def _rows_per_call(self):
        c, stack = self.net.config, self.net.stack
        layer_width = stack.num_directions * c["hidden_size"]
        per_step = self.I + c["num_layers"] * layer_width * (stack.n_gates + 4)
        return max(1, CALL_BYTES // (self.T * per_step * self.net.dtype.itemsize))

    def _ends(self):
        """Each sample's number of valid steps."""
        return np.full(self.n, self.T) if self.lengths is None else self.lengths

    def _lengths_of(self, idx):
        return None if self.lengths is None else self.lengths[idx]

    def _raw_outputs(self):
        return np.concatenate([
            self.net.forward(self.inputs[idx], lengths=self._lengths_of(idx),
                             embedded=self.tokens)
            for idx in _chunks(self.n, self.rows_per_call)])

    def value(self, inputs, idx):
        """f of rows `inputs` (any number), row r belonging to sample idx[r]."""
        values = []
        for rows in _chunks(len(idx), self.rows_per_call):
            out = self.net.forward(inputs[rows], lengths=self._lengths_of(idx[rows]),
                                   embedded=self.tokens)
            values.append(self.target.value_and_grad(out, idx[rows])[0])
        return np.concatenate(values)

    def gradient(self, inputs, idx):
        """d f / d inputs of rows `inputs`, row r belonging to sample idx[r]."""
        grads = np.empty(inputs.shape, self.net.dtype)
        for rows in _chunks(len(idx), self.rows_per_call):
            out = self.net.forward(inputs[rows], lengths=self._lengths_of(idx[rows]),
                                   keep_for_backward=True, embedded=self.tokens)
            d_out = self.target.value_and_grad(out, idx[rows])[1]
            grads[rows] = self.net.input_gradient(d_out)
        return grads

    def baseline(self, baseline):
        """The baseline as the stack's inputs, (n, T, I)."""
        if baseline is None:
            return np.zeros_like(self.inputs)
        if self.tokens:
            ids = np.broadcast_to(np.asarray(baseline), (self.n, self.T))
            if ids.dtype.kind not in "iu" or ids.min() < 0 or \
                    ids.max() >= self.net.config["vocab_size"]:
                raise ValueError("for token input, baseline must be token ids in the vocabulary")
            return self._embed(ids)
        if isinstance(baseline, (list, tuple)) and self.lengths is not None:
            baseline = self.estimator._prepare_X(baseline, reset=False).values
        values = np.asarray(baseline, dtype=self.net.dtype)
        if self.univariate and values.ndim >= 1:
            values = values[..., None]
        try:
            return np.ascontiguousarray(np.broadcast_to(values, self.inputs.shape))
        except ValueError:
            raise ValueError(f"baseline of shape {values.shape} does not broadcast to X's "
                             f"shape {self.inputs.shape}") from None

    def in_input_form(self, attributions):
        """(n, T, I) or per-step (n, T) attributions in X's form."""
        if attributions.ndim == 3 and self.tokens:
            attributions = attributions.sum(axis=-1)
        elif attributions.ndim == 2 and not self.tokens:
            attributions = np.repeat(attributions[..., None], self.I, axis=-1)
        attributions = attributions.astype(np.float64, copy=False)
        if self.univariate:
            attributions = attributions[..., 0]
        if self.lengths is not None:
            return [a[:length] for a, length in zip(attributions, self.lengths)]
        return attributions


class _Target:
    """The scalar f each sample explains, as a function of the head's output:
    at the explained step (per-step models), the target class's logit or
    probability, or the target output's prediction."""

    def __init__(self, estimator, out, target, step, ends, output):
        n, self.per_step = len(out), estimator.model_.config["per_step"]
        if step is not None and not self.per_step:
            raise ValueError("step is only for per-step models")
        self.steps = _explained_steps(step, ends) if self.per_step else None
        out_at = self._at_step(out, np.arange(n))
        self.classification = estimator.task_ == "classification"
        if output not in ("logit", "probability"):
            raise ValueError(f"output must be 'logit' or 'probability', got {output!r}")
        if output == "probability" and not self.classification:
            raise ValueError("output='probability' is only for classifiers")
        self.probability = output == "probability"
        if self.classification:
            self.index = (_predicted_class(out_at) if target is None
                          else _class_index(estimator.classes_, target, n))
        else:
            self.index = _output_index(target, out_at.shape[1], n)
            self.scale = np.asarray(estimator.y_scale_, np.float64)[self.index]
            self.mean = np.asarray(estimator.y_mean_, np.float64)[self.index]

    def _at_step(self, out, idx):
        """The outputs of the explained step, (rows, k)."""
        if self.steps is None:
            return out
        return out[np.arange(len(idx)), self.steps[idx]]

    def value_and_grad(self, out, idx):
        """f (rows,) of the head's outputs `out`, row r explaining sample idx[r],
        and d f / d out (out's shape)."""
        z = self._at_step(out, idx).astype(np.float64)
        rows, index = np.arange(len(idx)), self.index[idx]
        grad_at = np.zeros_like(z)
        if not self.classification:
            value = z[rows, index] * self.scale[idx] + self.mean[idx]
            grad_at[rows, index] = self.scale[idx]
        elif z.shape[1] == 1:  # one logit z: the second class's log-odds, -z the first's
            sign = 2.0 * index - 1.0
            value = sign * z[:, 0]
            grad_at[:, 0] = sign
            if self.probability:
                value = 0.5 * (1 + np.tanh(0.5 * value))
                grad_at[:, 0] *= value * (1 - value)
        else:
            value = z[rows, index]
            grad_at[rows, index] = 1.0
            if self.probability:
                p = np.exp(z - z.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                value = p[rows, index]
                grad_at = value[:, None] * (grad_at - p)
        if self.steps is None:
            return value, grad_at.astype(out.dtype)
        grad = np.zeros_like(out)
        grad[rows, self.steps[idx]] = grad_at
        return value, grad


def _explained_steps(step, ends):
    """Per-step models: the explained step of every sample."""
    if step is None:
        return ends - 1
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise ValueError(f"step must be an int or None, got {step!r}")
    steps = ends + step if step < 0 else np.full(len(ends), step)
    if steps.min() < 0 or np.any(steps >= ends):
        raise ValueError(f"step {step} lies outside a sequence (shortest length "
                         f"{ends.min()})")
    return steps


def _predicted_class(out):
    return (out[:, 0] > 0).astype(int) if out.shape[1] == 1 else out.argmax(axis=1)


def _output_index(target, k, n):
    if target is None:
        if k > 1:
            raise ValueError(f"this regressor has {k} outputs: pass target=the output index")
        return np.zeros(n, int)
    index = np.broadcast_to(np.asarray(target), (n,))
    if index.dtype.kind not in "iu" or index.min() < 0 or index.max() >= k:
        raise ValueError(f"target must be output indices in [0, {k}), got {target!r}")
    return index


def _class_index(classes, target, n):
    labels = np.broadcast_to(np.asarray(target), (n,))
    index = np.clip(np.searchsorted(classes, labels), 0, len(classes) - 1)
    unknown = classes[index] != labels
    if np.any(unknown):
        raise ValueError(f"target {labels[unknown][0]!r} is not one of the classes "
                         f"{list(classes)}")
    return index


def _integrated_gradients(problem, baseline, n_steps):
    """(x - x') times the trapezoid-rule mean of the gradient at x' + a (x - x'),
    a = 0, 1/n_steps, ..., 1: every point of a block of samples in one batch."""
    alphas = np.linspace(0.0, 1.0, n_steps + 1).astype(problem.net.dtype)
    trapezoid = np.full(n_steps + 1, 1.0 / n_steps)
    trapezoid[[0, -1]] /= 2
    n_points = n_steps + 1
    attributions = np.empty(problem.inputs.shape, np.float64)
    for idx in _chunks(problem.n, max(1, problem.rows_per_call // n_points)):
        x, x0 = problem.inputs[idx], baseline[idx]
        path = x0[:, None] + alphas[None, :, None, None] * (x - x0)[:, None]
        grads = problem.gradient(path.reshape(-1, problem.T, problem.I),
                                 np.repeat(idx, n_points))
        mean_grad = np.einsum("s,msti->mti", trapezoid,
                              grads.reshape(len(idx), n_points, problem.T, problem.I))
        attributions[idx] = (x - x0) * mean_grad
    return attributions


def _occlusion(problem, baseline, window):
    """Per step: f(x) - f(x with steps [p, p + window) from the baseline),
    averaged over the windows p that cover the step; (n, T)."""
    T = problem.T
    window = min(window, T)
    starts = np.arange(T - window + 1)
    covers = (np.arange(T) >= starts[:, None]) & (np.arange(T) < starts[:, None] + window)
    f_x = problem.value(problem.inputs, np.arange(problem.n))
    attributions = np.empty((problem.n, T))
    for idx in _chunks(problem.n, max(1, problem.rows_per_call // len(starts))):
        occluded = np.where(covers[None, :, :, None], baseline[idx, None],
                            problem.inputs[idx, None])
        f_occluded = problem.value(occluded.reshape(-1, T, problem.I),
                                   np.repeat(idx, len(starts))).reshape(len(idx), -1)
        attributions[idx] = ((f_x[idx, None] - f_occluded) @ covers) / covers.sum(axis=0)
    return attributions
