"""Sequence to sequence with attention: ``fastrnn.Seq2Seq``.

Maps sequences to sequences of other lengths (translation-style tasks) with an
encoder-decoder network and attention (fastrnn.seq2seq_network)::

    >>> from fastrnn import Seq2Seq
    >>> X = ["ab", "ba", "abb", "bba"] * 25
    >>> Y = [x[::-1] for x in X]
    >>> model = Seq2Seq(hidden_size=32, embedding_dim=16, max_iter=60,
    ...                 learning_rate_init=0.01, random_state=0).fit(X, Y)
    >>> model.predict(["abb", "ba"])
    ['bba', 'ab']

X and Y are lists of strings (one token per character) or of integer token-id
sequences, of any lengths. X may also hold sequences of feature vectors (an
(n, S, F) array or a list of (S_i, F) arrays): captioning with attention, the
decoder attending over, say, the 8 rows of a digit image. That lives here and
not in SequenceGenerator because it is exactly this model with the source
embedding left out: the encoder, the C attention kernels and the C greedy and
beam decoders apply unchanged, whereas SequenceGenerator is a next-token
classifier whose only handle on the features is its initial state.

Training uses teacher forcing; prediction decodes greedily (beam_width=1) or
with a length-normalised beam search, both in C (csrc/decode.h);
greedy_decode and beam_search below are the same algorithms in NumPy, one
Python step at a time: the reference the tests hold the C decoder to, and the
greedy decoding that attention_weights records.
"""
import time
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from fastrnn import _data, persistence
from fastrnn._base import BaseFastRNN, TrainingDivergedError
from fastrnn._threads import resolve_n_threads, single_threaded_blas
from fastrnn.layers import State, as_float_dtype
from fastrnn.losses import softmax_cross_entropy
from fastrnn.optim import LearningRateSchedule, Optimizer
from fastrnn.seq2seq_network import Seq2SeqNetwork

PREDICT_BATCH = 512  # samples decoded together: bounded memory on large X

_TRAINING_PARAMETERS = (
    "hidden_size", "num_layers", "bidirectional", "embedding_dim", "solver", "learning_rate",
    "learning_rate_init", "lr_decay", "lr_decay_every", "momentum", "nesterovs_momentum",
    "beta_1", "beta_2", "epsilon", "rho", "batch_size", "max_iter", "shuffle", "alpha",
    "clip_norm", "early_stopping", "validation_fraction", "n_iter_no_change", "tol",
    "warm_start", "random_state", "verbose", "n_threads", "dtype")


# ----- sequences <-> id arrays ----------------------------------------------------------------
def _side_kind(seqs, name):
    """"str" when every item is a string, "features" when every item is 2-D
    (a sequence of feature vectors), else "tokens" (1-D integer ids)."""
    if isinstance(seqs, (str, bytes)) or not hasattr(seqs, "__len__") or len(seqs) == 0:
        raise ValueError(f"{name} must be a non-empty list of strings or of token-id "
                         "sequences")
    if all(isinstance(s, str) for s in seqs):
        return "str"
    if any(isinstance(s, str) for s in seqs):
        raise ValueError(f"{name} mixes strings and token sequences")
    if isinstance(seqs, np.ndarray) and seqs.ndim == 3 or all(np.ndim(s) == 2 for s in seqs):
        return "features"
    return "tokens"


def _to_features(seqs, n_features, name):
    """A list of float64 (length, n_features) arrays of finite values."""
    out = []
    for s in seqs:
        a = np.asarray(s, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != n_features:
            raise ValueError(f"each sequence of {name} must be an array of (length, "
                             f"{n_features}) feature vectors, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} holds NaN or inf")
        out.append(a)
    return out


def _to_ids(seqs, kind, vocab, name):
    """A list of int32 id arrays. Strings map through vocab (sorted characters);
    token ids must lie in [0, vocab)."""
    out = []
    if kind == "str":
        index = {ch: i for i, ch in enumerate(vocab)}
        for s in seqs:
            try:
                out.append(np.array([index[ch] for ch in s], dtype=np.int32))
            except KeyError as exc:
                raise ValueError(f"{name} holds the character {exc.args[0]!r}, not seen in "
                                 "fit") from None
        return out
    for s in seqs:
        a = np.asarray(s)
        if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
            raise ValueError(f"each sequence of {name} must be a 1-D sequence of integer "
                             "token ids")
        if a.size and (a.min() < 0 or a.max() >= vocab):
            raise ValueError(f"{name} holds token id {a.min() if a.min() < 0 else a.max()}, "
                             f"outside [0, {vocab})")
        out.append(a.astype(np.int32))
    return out


def _pad_ids(seqs):
    """(n, max len) int32 ids (or (n, max len, F) feature vectors) right-padded
    with 0, and the lengths."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int32)
    out = np.zeros((len(seqs), max(1, lengths.max())) + seqs[0].shape[1:], seqs[0].dtype)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out, lengths


class _Pairs:
    """Training pairs as arrays: source ids (n, S) and lengths; decoder input
    (BOS, y...) and output (y..., EOS) (n, T) with lengths len(y) + 1."""

    def __init__(self, source, target, bos, eos):
        self.source, self.source_lengths = _pad_ids(source)
        if self.source_lengths.min() < 1:
            raise ValueError("every source sequence needs at least one token")
        self.target_lengths = np.array([len(t) + 1 for t in target], dtype=np.int32)
        T = self.target_lengths.max()
        self.decoder_input = np.full((len(target), T), eos, np.int32)
        self.decoder_output = np.full((len(target), T), eos, np.int32)
        for i, t in enumerate(target):
            self.decoder_input[i, 0] = bos
            self.decoder_input[i, 1:len(t) + 1] = t
            self.decoder_output[i, :len(t)] = t

    def __len__(self):
        return len(self.source)

    def batch(self, idx):
        """The samples idx, trimmed to their longest source and target."""
        S, T = self.source_lengths[idx].max(), self.target_lengths[idx].max()
        return (self.source[idx, :S], self.source_lengths[idx], self.decoder_input[idx, :T],
                self.decoder_output[idx, :T], self.target_lengths[idx])


# ----- decoding -----------------------------------------------------------------------------
def greedy_decode(net, M, source_lengths, state, max_len, keep_alignments=False):
    """Greedy decoding of every sample: (tokens list, log-likelihoods,
    alignments list or None). Python per step, batched over samples."""
    n = M.shape[0]
    tokens = np.full(n, net.bos)
    out = np.zeros((n, max_len), np.int64)
    lengths = np.full(n, max_len)
    logp_total = np.zeros(n)
    done = np.zeros(n, bool)
    aligns = []
    for t in range(max_len):
        logp, state, align = net.decode_step(tokens, state, M, source_lengths)
        tokens = np.argmax(logp, axis=1)
        logp_total += np.where(done, 0.0, logp[np.arange(n), tokens])
        finished_now = ~done & (tokens == net.eos)
        lengths[finished_now] = t
        out[:, t] = tokens
        aligns.append(align)
        done |= finished_now
        if done.all():
            break
    seqs = [out[i, :lengths[i]] for i in range(n)]
    alignments = None
    if keep_alignments and aligns[0] is not None:
        stacked = np.stack(aligns, axis=1)  # (n, steps, S)
        alignments = [stacked[i, :min(lengths[i] + 1, stacked.shape[1]), :source_lengths[i]]
                      for i in range(n)]
    return seqs, logp_total, alignments


def _take_state(state, rows):
    return State(np.ascontiguousarray(state.h[:, rows]),
                 None if state.c is None else np.ascontiguousarray(state.c[:, rows]))


def beam_search(net, M, source_length, state, width, max_len):
    """Beam search for one sample (M (1, S, D*H)): the hypothesis with the best
    length-normalised log-likelihood (sum of token log-probabilities, EOS
    included, over the token count; a hypothesis cut at max_len counts
    max_len tokens). Per step, the ``width`` best expansions by raw
    log-likelihood are kept; EOS ones finish. Stops early once no live
    hypothesis can beat the best finished one (a live log-likelihood L can at
    best end at L / max_len). Returns (tokens, normalised score)."""
    V, eos = net.n_outputs, net.eos
    live_tokens, live_logp = [[]], np.zeros(1)
    finished = []  # (score, tokens)
    lengths = np.array([source_length], np.int32)
    for t in range(1, max_len + 1):
        n = len(live_tokens)
        last = np.array([seq[-1] if seq else net.bos for seq in live_tokens])
        logp, state, _ = net.decode_step(last, state, np.repeat(M, n, axis=0),
                                         np.repeat(lengths, n))
        cand = (live_logp[:, None] + logp).ravel()
        order = np.argsort(-cand, kind="stable")[:width]
        keep_rows, keep_tokens, keep_logp = [], [], []
        for idx in order:
            row, tok = divmod(int(idx), V)
            if tok == eos:
                finished.append((cand[idx] / t, live_tokens[row]))
            elif t == max_len:
                finished.append((cand[idx] / max_len, live_tokens[row] + [tok]))
            else:
                keep_rows.append(row)
                keep_tokens.append(live_tokens[row] + [tok])
                keep_logp.append(cand[idx])
        if not keep_rows:
            break
        live_tokens, live_logp = keep_tokens, np.array(keep_logp)
        state = _take_state(state, np.array(keep_rows))
        if finished and max(f[0] for f in finished) >= live_logp.max() / max_len:
            break
    best = max(range(len(finished)), key=lambda i: (finished[i][0], -i))
    return np.array(finished[best][1], np.int64), float(finished[best][0])


# ----- the estimator --------------------------------------------------------------------------
class Seq2Seq(BaseEstimator):
    """Encoder-decoder with attention, for sequences to sequences of other lengths.

    Parameters
    ----------
    cell : {"lstm", "gru"}, default="lstm"
        Cell of the encoder and the decoder.
    hidden_size : int, default=128
        Units per layer (and encoder direction).
    num_layers : int, default=1
        Layers of the encoder and of the decoder.
    bidirectional : bool, default=True
        Bidirectional encoder (the decoder starts from both directions' sum).
    embedding_dim : int, default=16
        Size of the source and target token embeddings.
    attention : {"luong", "bahdanau"} or None, default="luong"
        Luong's general score h W m, Bahdanau's additive score v.tanh(W h + U m)
        (both from the decoder's output at the same step), or no attention.
    solver : {"adam", "sgd", "rmsprop", "adagrad"}, default="adam"
        The fused optimizer (as in FastLSTMClassifier).
    learning_rate : {"constant", "exponential", "step", "plateau"}, default="constant"
        The learning-rate schedule.
    learning_rate_init : float, default=0.01
        The initial step size.
    lr_decay : float, default=0.5
        Factor of the exponential, step and plateau schedules.
    lr_decay_every : int, default=10
        Epochs between the step schedule's decays.
    momentum : float, default=0.9
        sgd's momentum.
    nesterovs_momentum : bool, default=True
        Nesterov's momentum for sgd.
    beta_1, beta_2 : float, default=0.9, 0.999
        Adam's moment decay rates.
    epsilon : float, default=1e-8
        Adam's, rmsprop's and adagrad's numerical guard.
    rho : float, default=0.9
        rmsprop's decay rate.
    batch_size : int, default=128
        Source-target pairs per mini-batch.
    max_iter : int, default=15
        Epochs.
    shuffle : bool, default=True
        Shuffle the pairs every epoch.
    alpha : float, default=0.0
        L2 penalty on the weights.
    clip_norm : float or None, default=5.0
        Clip the gradient's global norm.
    early_stopping : bool, default=False
        Stop when the exact-match accuracy of a held-out validation_fraction
        (or of X_val/Y_val passed to fit) stops improving; keep the best epoch.
    validation_fraction : float, default=0.1
        The held-out share for early stopping.
    n_iter_no_change : int, default=5
        Epochs without an improvement of more than tol before stopping.
    tol : float, default=1e-4
        The improvement that counts.
    warm_start : bool, default=False
        Continue from the fitted network.
    random_state : int, RandomState, Generator or None, default=None
        Seeds initialisation, shuffling and dropout.
    verbose : bool, default=False
        A line per epoch.
    n_threads : int or None, default=None
        None: what OpenMP allows; -1: every CPU.
    dtype : {"float32", "float64"}, default="float32"
        Precision.

    Attributes
    ----------
    model_ : Seq2SeqNetwork
        The encoder-attention-decoder network.
    source_vocab_, target_vocab_ : list of str or None
        The characters of string input (None for token ids).
    n_source_tokens_, n_target_tokens_ : int or None
        Token ids per side (the end token comes on top for targets); None for
        a source of feature vectors.
    n_source_features_ : int or None
        Features per source vector when X holds feature vectors, else None.
    max_target_length_ : int
        The longest target seen in fit (predict's default length bound).
    loss_curve_ : list of float
        Training loss per epoch.
    validation_scores_ : list of float or None
        Exact-match accuracy per epoch on the validation data.
    best_loss_ : float
        The lowest training loss.
    n_iter_ : int
        Epochs run.
    t_ : int
        Optimizer steps taken.

    Examples
    --------
    >>> from fastrnn import Seq2Seq
    >>> X = ["ab", "ba", "abb", "bba"] * 10
    >>> Y = [x[::-1] for x in X]                       # learn to reverse a string
    >>> model = Seq2Seq(hidden_size=16, max_iter=2, random_state=0).fit(X, Y)
    >>> len(model.predict(["ab", "abb"])), len(model.attention_weights(["ab"]))
    (2, 1)
    """

    _parameter_constraints = {
        **{name: BaseFastRNN._parameter_constraints[name] for name in _TRAINING_PARAMETERS},
        "cell": [StrOptions({"lstm", "gru"})],
        "attention": [StrOptions({"luong", "bahdanau"}), None],
        "embedding_dim": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, *, cell="lstm", hidden_size=128, num_layers=1, bidirectional=True,
                 embedding_dim=16, attention="luong", solver="adam", learning_rate="constant",
                 learning_rate_init=0.01, lr_decay=0.5, lr_decay_every=10, momentum=0.9,
                 nesterovs_momentum=True, beta_1=0.9, beta_2=0.999, epsilon=1e-8, rho=0.9,
                 batch_size=128, max_iter=15, shuffle=True, alpha=0.0, clip_norm=5.0,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=5,
                 tol=1e-4, warm_start=False, random_state=None, verbose=False,
                 n_threads=None, dtype="float32"):
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.embedding_dim = embedding_dim
        self.attention = attention
        self.solver = solver
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.lr_decay = lr_decay
        self.lr_decay_every = lr_decay_every
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.rho = rho
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.alpha = alpha
        self.clip_norm = clip_norm
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose
        self.n_threads = n_threads
        self.dtype = dtype

    # ----- data ---------------------------------------------------------------------------
    def _learn_vocabularies(self, X, Y):
        self.source_kind_, self.target_kind_ = _side_kind(X, "X"), _side_kind(Y, "Y")
        self.n_source_features_ = None
        if self.target_kind_ == "features":
            raise ValueError("Y must be strings or token-id sequences, not feature vectors")
        if self.source_kind_ == "features":
            self.n_source_features_ = int(np.shape(X[0])[1])
            self.source_vocab_, self.n_source_tokens_ = None, None
        for side, seqs, kind in (("source", X, self.source_kind_),
                                 ("target", Y, self.target_kind_)):
            if kind == "features":
                continue
            if kind == "str":
                vocab = sorted(set("".join(seqs)))
                setattr(self, f"{side}_vocab_", vocab)
                setattr(self, f"n_{side}_tokens_", max(1, len(vocab)))
            else:
                top = max((int(np.max(s)) for s in seqs if len(s)), default=0)
                setattr(self, f"{side}_vocab_", None)
                setattr(self, f"n_{side}_tokens_", top + 1)

    def _source_ids(self, X):
        if _side_kind(X, "X") != self.source_kind_:
            raise ValueError(f"X must be of the kind seen in fit ({self.source_kind_})")
        if self.source_kind_ == "features":
            ids = _to_features(X, self.n_source_features_, "X")
        else:
            vocab = self.source_vocab_ if self.source_kind_ == "str" else self.n_source_tokens_
            ids = _to_ids(X, self.source_kind_, vocab, "X")
        if min(len(s) for s in ids) < 1:
            raise ValueError("every source sequence needs at least one token")
        return ids

    def _target_ids(self, Y):
        if _side_kind(Y, "Y") != self.target_kind_:
            raise ValueError(f"Y must be of the kind seen in fit ({self.target_kind_})")
        vocab = self.target_vocab_ if self.target_kind_ == "str" else self.n_target_tokens_
        return _to_ids(Y, self.target_kind_, vocab, "Y")

    def _pairs(self, X, Y):
        if len(X) != len(Y):
            raise ValueError(f"X has {len(X)} sequences, Y {len(Y)}")
        eos = self.n_target_tokens_  # Seq2SeqNetwork's EOS; BOS follows it
        return _Pairs(self._source_ids(X), self._target_ids(Y), eos + 1, eos)

    def _to_output(self, ids):
        if self.target_kind_ == "str":
            return "".join(self.target_vocab_[i] for i in ids)
        return np.asarray(ids, dtype=np.int64)

    # ----- fit ----------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, Y, *, X_val=None, Y_val=None):
        """Train on pairs (X[i], Y[i]) with teacher forcing.

        X : a list of strings or of 1-D integer token-id sequences; or
            sequences of feature vectors, an (n, S, F) array or a list of
            (S_i, F) arrays (e.g. the rows of images, for captioning: the
            decoder attends over them).
        Y : a list of strings or of 1-D integer token-id sequences.
        X_val, Y_val : optional held-out pairs; their exact-match accuracy is
            recorded per epoch in validation_scores_ (and drives early stopping).
        """
        if Y is None:
            raise ValueError("Seq2Seq requires Y")
        first = not (self.warm_start and hasattr(self, "model_"))
        if first:
            self._rng = np.random.default_rng(self.random_state)
            self._learn_vocabularies(X, Y)
        train = self._pairs(X, Y)
        if first:
            self.model_ = self._new_network()
        if first or getattr(self, "_optimizer", None) is None:  # a loaded model has none
            self._optimizer = self._new_optimizer()
        self.max_target_length_ = max(getattr(self, "max_target_length_", 0),
                                      int(train.target_lengths.max()) - 1)
        train_idx, val = np.arange(len(train)), None
        if X_val is not None or Y_val is not None:
            if X_val is None or Y_val is None:
                raise ValueError("pass both X_val and Y_val")
            val = (list(X_val), list(Y_val))
        elif self.early_stopping:
            train_idx, val = self._validation_split(X, Y)
        self._start_curves(val is not None)
        self._run_epochs(train, train_idx, val)
        return self

    def _new_network(self):
        return Seq2SeqNetwork(
            self.cell, self.n_source_tokens_, self.n_target_tokens_, self.embedding_dim,
            self.hidden_size, self.num_layers, self.bidirectional, self.attention,
            dtype=as_float_dtype(self.dtype), n_threads=self.n_threads, random_state=self._rng,
            source_features=self.n_source_features_)

    def _new_optimizer(self):
        schedule = LearningRateSchedule(self.learning_rate, self.learning_rate_init,
                                        self.lr_decay, self.lr_decay_every, self.tol)
        return Optimizer(self.solver, self.model_.flat_params.size, self.model_.dtype,
                         momentum=self.momentum, nesterov=self.nesterovs_momentum,
                         beta1=self.beta_1, beta2=self.beta_2, epsilon=self.epsilon,
                         rho=self.rho, schedule=schedule)

    def _validation_split(self, X, Y):
        n = len(X)
        n_val = max(1, int(round(self.validation_fraction * n)))
        if n - n_val < 1:
            raise ValueError("too few pairs to hold out a validation set; set "
                             "early_stopping=False")
        perm = self._rng.permutation(n)
        val_idx = np.sort(perm[:n_val])
        return np.sort(perm[n_val:]), ([X[i] for i in val_idx], [Y[i] for i in val_idx])

    def _start_curves(self, track_validation):
        if not hasattr(self, "loss_curve_") or not self.warm_start:
            self.loss_curve_, self.n_iter_, self.t_, self.best_loss_ = [], 0, 0, np.inf
        self.validation_scores_ = [] if track_validation else None
        self._best_val, self._best_params = -np.inf, None

    def _run_epochs(self, train, train_idx, val):
        no_improvement = 0
        with single_threaded_blas():
            for _ in range(self.max_iter):
                started = time.perf_counter()
                loss = self._train_epoch(train, train_idx)
                if loss is None:
                    return
                no_improvement = self._end_epoch(loss, val, no_improvement, started)
                if no_improvement >= self.n_iter_no_change and (
                        val is not None or self.early_stopping):
                    if self.verbose:
                        print(f"no improvement for {self.n_iter_no_change} epochs: stopping")
                    break
            else:
                warnings.warn(f"Stochastic optimizer: maximum iterations ({self.max_iter}) "
                              "reached and the optimization hasn't converged yet.",
                              ConvergenceWarning)
        if self._best_params is not None:
            self.model_.flat_params[:] = self._best_params
        self._best_params = None

    def _train_epoch(self, train, train_idx):
        """One pass in mini-batches: the mean token loss, or None on Ctrl-C
        (the weights of the last finished epoch are kept)."""
        net = self.model_
        snapshot = net.flat_params.copy()
        lr = self._optimizer.schedule.rate(self.n_iter_)
        order = self._rng.permutation(train_idx) if self.shuffle else train_idx
        size = min(int(self.batch_size), len(order))
        n_batches = -(-len(order) // size)
        total, count = 0.0, 0
        bar = tqdm(total=n_batches, desc=f"epoch {self.n_iter_ + 1}", leave=False,
                   disable=not self.verbose, unit="batch")
        try:
            for b in range(n_batches):
                loss, rows = self._train_batch(train, order[b * size:(b + 1) * size], lr,
                                               snapshot)
                total, count = total + loss * rows, count + rows
                bar.update()
                bar.set_postfix(loss=f"{total / count:.4g}")
        except KeyboardInterrupt:
            net.flat_params[:] = snapshot
            warnings.warn(f"fit interrupted in epoch {self.n_iter_ + 1}; keeping the weights "
                          "of the last finished epoch", RuntimeWarning)
            return None
        finally:
            bar.close()
        return total / count

    def _train_batch(self, train, idx, lr, snapshot):
        """Forward with teacher forcing, token cross entropy over the valid
        target steps, backward, one optimizer step. Returns (mean loss, rows)."""
        net = self.model_
        source, source_lengths, dec_in, dec_out, target_lengths = train.batch(idx)
        logits, _ = net.forward(source, source_lengths, dec_in, target_lengths, training=True)
        mask = _data.step_mask(target_lengths, *dec_in.shape)
        rows = int(mask.sum())
        loss_sum, d_rows = softmax_cross_entropy(logits[mask].astype(np.float64),
                                                 dec_out[mask], np.ones(rows))
        loss = loss_sum / rows
        if not np.isfinite(loss):
            net.flat_params[:] = snapshot
            raise TrainingDivergedError(
                f"the training loss became {loss} in epoch {self.n_iter_ + 1}; lower "
                f"learning_rate_init (now {self.learning_rate_init}) or set clip_norm")
        d_logits = np.zeros(logits.shape, net.dtype)
        d_logits[mask] = d_rows
        net.zero_grad()
        net.backward(d_logits)
        self.t_ += 1
        self._optimizer.step(net.flat_params, net.flat_grads, lr, l2=self.alpha / len(idx),
                             grad_scale=1.0 / rows, clip_norm=self.clip_norm,
                             decay_mask=net.decay_mask, n_threads=1)
        return loss, rows

    def _end_epoch(self, loss, val, no_improvement, started):
        """Curves, validation accuracy, the schedule, the verbose line; returns
        the count of epochs without improvement."""
        self.loss_curve_.append(float(loss))
        self.n_iter_ += 1
        message = f"epoch {self.n_iter_}: loss {loss:.6g}"
        if val is not None:
            score = self.score(*val)
            self.validation_scores_.append(score)
            message += f", validation exact match {score:.4f}"
            improved = score > self._best_val + self.tol
            if score > self._best_val:
                self._best_val, self._best_params = score, self.model_.flat_params.copy()
        else:
            improved = loss < self.best_loss_ - self.tol
        self.best_loss_ = min(self.best_loss_, float(loss))
        monitored = loss if val is None else -self.validation_scores_[-1]
        self._optimizer.schedule.end_epoch(monitored)
        if self.verbose:
            print(f"{message} ({time.perf_counter() - started:.2f}s)")
        return 0 if improved else no_improvement + 1

    # ----- prediction ---------------------------------------------------------------------
    def _encoded_batches(self, X):
        """(sample indices, memory, source lengths, initial state) per batch."""
        check_is_fitted(self, "model_")
        source = self._source_ids(X)
        for start in range(0, len(source), PREDICT_BATCH):
            idx = np.arange(start, min(start + PREDICT_BATCH, len(source)))
            ids, lengths = _pad_ids([source[i] for i in idx])
            M, state = self.model_.encode(ids, lengths)
            yield idx, M, lengths, state

    def _max_len(self, max_len):
        if max_len is None:
            return 2 * self.max_target_length_ + 2
        if isinstance(max_len, bool) or not isinstance(max_len, Integral) or max_len < 1:
            raise ValueError(f"max_len must be a positive int or None, got {max_len!r}")
        return int(max_len)

    def predict(self, X, beam_width=1, max_len=None):
        """Decoded sequences: strings for string targets, else id arrays.

        beam_width : 1 decodes greedily; more runs a beam search keeping that
            many hypotheses, scored by log-likelihood over length.
        max_len : most tokens per output (default: twice the longest target
            seen in fit, plus 2).
        """
        if isinstance(beam_width, bool) or not isinstance(beam_width, Integral) or \
                beam_width < 1:
            raise ValueError(f"beam_width must be a positive int, got {beam_width!r}")
        max_len = self._max_len(max_len)
        n_threads = resolve_n_threads(self.n_threads)
        out = [None] * len(X)
        with single_threaded_blas():
            for idx, M, lengths, state in self._encoded_batches(X):
                tokens, counts, _ = self.model_.decode(M, lengths, state, beam_width, max_len,
                                                       n_threads=n_threads)
                for i, row, count in zip(idx, tokens, counts):
                    out[i] = self._to_output(row[:count])
        return out

    def attention_weights(self, X, Y=None):
        """Alignment matrices, one (output steps, source length) array per
        sample: for the greedy decoding of X (the step emitting EOS included),
        or for the given targets Y with teacher forcing (len(y) + 1 rows)."""
        check_is_fitted(self, "model_")
        if self.attention is None:
            raise ValueError("this model has no attention (attention=None)")
        out = []
        with single_threaded_blas():
            if Y is not None:
                pairs = self._pairs(X, Y)
                _, A = self.model_.forward(pairs.source, pairs.source_lengths,
                                           pairs.decoder_input, pairs.target_lengths)
                return [A[i, :pairs.target_lengths[i], :pairs.source_lengths[i]]
                        for i in range(len(pairs))]
            for _, M, lengths, state in self._encoded_batches(X):
                out += greedy_decode(self.model_, M, lengths, state, self._max_len(None),
                                     keep_alignments=True)[2]
        return out

    def score_samples(self, X, Y):
        """Log-likelihood log p(Y[i] | X[i]) of every pair (EOS included)."""
        check_is_fitted(self, "model_")
        pairs = self._pairs(X, Y)
        out = np.empty(len(pairs))
        with single_threaded_blas():
            for start in range(0, len(pairs), PREDICT_BATCH):
                idx = np.arange(start, min(start + PREDICT_BATCH, len(pairs)))
                source, source_lengths, dec_in, dec_out, target_lengths = pairs.batch(idx)
                logits, _ = self.model_.forward(source, source_lengths, dec_in, target_lengths)
                logits = logits.astype(np.float64)
                z = logits - logits.max(axis=-1, keepdims=True)
                logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
                picked = np.take_along_axis(logp, dec_out[..., None].astype(np.int64), -1)[..., 0]
                mask = _data.step_mask(target_lengths, *dec_in.shape)
                out[idx] = np.where(mask, picked, 0.0).sum(axis=1)
        return out

    def score(self, X, Y, beam_width=1):
        """Exact-match accuracy of predict(X) against Y."""
        pred = self.predict(X, beam_width=beam_width)
        if len(pred) != len(Y):
            raise ValueError(f"X has {len(pred)} sequences, Y {len(Y)}")
        return float(np.mean([_same(p, y) for p, y in zip(pred, Y)]))

    # ----- persistence -------------------------------------------------------------------
    _network_class = "Seq2SeqNetwork"  # persistence.NETWORKS builds and checks it
    _FITTED_NAMES = ("source_kind_", "target_kind_", "source_vocab_", "target_vocab_",
                     "n_source_tokens_", "n_target_tokens_", "n_source_features_",
                     "max_target_length_",
                     "loss_curve_", "validation_scores_", "best_loss_", "n_iter_", "t_")

    def save(self, path):
        """Write the fitted model to path: a .npz without pickle, read back
        with ``fastrnn.load(path)``, which checks the whole file first."""
        persistence.save(self, path)

    def _get_fitted_state(self):
        """(attributes, arrays, network) for persistence: vocabularies, the
        target length bound and the training record as JSON values, no arrays."""
        check_is_fitted(self, "model_")
        attributes = {name: getattr(self, name) for name in self._FITTED_NAMES}
        for name in ("loss_curve_", "validation_scores_"):
            curve = attributes[name]
            attributes[name] = None if curve is None else [float(v) for v in curve]
        attributes["best_loss_"] = float(self.best_loss_)
        return attributes, {}, self.model_

    def _set_fitted_state(self, attributes, arrays, network):
        """Restore what _get_fitted_state gave (persistence has checked it
        against the network); the optimizer and random generator start afresh."""
        if set(attributes) != set(self._FITTED_NAMES) or arrays:
            raise ValueError(f"a Seq2Seq stores exactly {list(self._FITTED_NAMES)}")
        for name, value in attributes.items():
            setattr(self, name, value)
        self.model_, self._optimizer = network, None
        self._rng = np.random.default_rng(self.random_state)
        return self


def _same(pred, y):
    if isinstance(pred, str):
        return pred == y
    return np.array_equal(pred, np.asarray(y))
