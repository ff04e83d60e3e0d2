"""Sequence generation: next-token models over characters or token ids, with
the sampling loop in C, optionally conditioned on feature vectors (captioning).

    >>> from fastrnn import SequenceGenerator
    >>> from fastrnn.datasets import load_text
    >>> gen = SequenceGenerator(hidden_size=64, max_iter=1, random_state=0)
    >>> gen = gen.fit(load_text(max_chars=20000))
    >>> text = gen.generate(50, prompt="The ", random_state=0)[0]
    >>> isinstance(text, str)
    True
"""
import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_array
from sklearn.utils.validation import check_is_fitted

from fastrnn import _kernels
from fastrnn._threads import resolve_n_threads, single_threaded_blas
from fastrnn.estimators import estimator_class, training_options
from fastrnn.layers import generation_args

BOUNDARY = 0  # token id 0 marks where a sequence starts and ends


class SequenceGenerator(BaseEstimator):
    """Learn to continue sequences: text (characters) or integer token ids.

    fit(sequences) trains a next-token model on a str, a list of str, or a list
    of integer sequences. Each sequence is framed by a boundary token, so the
    model also learns where sequences start and end; generation stops at an end.
    With ``conditions`` (one feature vector per sequence), a learned projection
    of the features sets the initial state: generate(..., condition=f) then
    describes f (captioning).

    Parameters
    ----------
    cell : {"lstm", "gru", "rnn"}, default="lstm"
    hidden_size, num_layers, dropout : the recurrent stack (default 128, 1, 0).
    embedding_dim : int, default=32
    seq_len : int, default=64
        Training window length (steps of backpropagation through time) when no
        conditions are given; conditioned sequences are used whole.
    solver, learning_rate_init, batch_size, max_iter, alpha, clip_norm,
    early_stopping, n_iter_no_change, tol, random_state, verbose, n_threads, dtype :
        as in the estimators (FastLSTMClassifier); max_iter counts epochs.
    """

    def __init__(self, cell="lstm", hidden_size=128, num_layers=1, embedding_dim=32, seq_len=64,
                 dropout=0.0, solver="adam", learning_rate_init=0.003, batch_size=64,
                 max_iter=10, alpha=0.0, clip_norm=5.0, early_stopping=False,
                 n_iter_no_change=10, tol=1e-4, random_state=None, verbose=False, n_threads=None,
                 dtype="float32"):
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.embedding_dim = embedding_dim
        self.seq_len = seq_len
        self.dropout = dropout
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.alpha = alpha
        self.clip_norm = clip_norm
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose
        self.n_threads = n_threads
        self.dtype = dtype

    # ----- vocabulary ----------------------------------------------------------------------
    @staticmethod
    def _as_documents(sequences):
        if isinstance(sequences, str):
            return [sequences], True
        if isinstance(sequences, np.ndarray) and sequences.ndim == 1 and \
                sequences.dtype.kind in "iu":
            return [sequences], False
        docs = list(sequences)
        if not docs:
            raise ValueError("no sequences to learn from")
        if all(isinstance(d, str) for d in docs):
            return docs, True
        out = []
        for d in docs:
            arr = np.asarray(d)
            if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
                raise ValueError("sequences must be a str, a list of str, or a list of 1-D "
                                 "integer sequences")
            if arr.size and arr.min() < 0:
                raise ValueError("token ids must be >= 0")
            out.append(arr)
        return out, False

    def _encode(self, doc):
        """Internal ids (1..V) of a document's tokens; unknown tokens raise."""
        index = self.token_index_
        ids = [index.get(ch) for ch in doc] if self.text_ else [index.get(int(t)) for t in doc]
        if None in ids:
            unknown = sorted({t for t, i in zip(doc, ids) if i is None})[:5]
            raise ValueError(f"tokens not in the vocabulary: {unknown}")
        return np.asarray(ids, dtype=np.int64)

    def _decode(self, ids):
        items = [self.vocabulary_[i - 1] for i in ids]
        return "".join(items) if self.text_ else np.asarray(items)

    # ----- training ------------------------------------------------------------------------
    def _classifier(self):
        classifier = estimator_class(self.cell, "classification")
        return classifier(hidden_size=self.hidden_size, num_layers=self.num_layers,
                          embedding_dim=self.embedding_dim, vocab_size=len(self.vocabulary_) + 1,
                          dropout=self.dropout, per_step=True, **training_options(self))

    def _framed(self, docs):
        """Each document's ids between boundary tokens."""
        return [np.concatenate([[BOUNDARY], self._encode(d), [BOUNDARY]]) for d in docs]

    def _training_samples(self, docs, conditions):
        framed = self._framed(docs)
        if conditions is not None:  # one sample per conditioned sequence, used whole
            return [f[:-1] for f in framed], [f[1:] for f in framed]
        stream = np.concatenate(framed)
        L = min(int(self.seq_len), len(stream) - 1)
        starts = np.arange(0, len(stream) - 1 - L + 1, L)
        X = np.stack([stream[s:s + L] for s in starts])
        y = np.stack([stream[s + 1:s + L + 1] for s in starts])
        return X, y

    def fit(self, sequences, conditions=None):
        """Learn a next-token model of ``sequences`` (str, list of str, or list
        of integer sequences); ``conditions`` (n_sequences, d) for captioning."""
        estimator_class(self.cell)  # checks the cell name before any work
        if not (isinstance(self.seq_len, (int, np.integer)) and self.seq_len >= 1):
            raise ValueError(f"seq_len must be a positive int, got {self.seq_len!r}")
        docs, self.text_ = self._as_documents(sequences)
        if conditions is not None:
            conditions = check_array(conditions, dtype=np.float64)
            if len(conditions) != len(docs):
                raise ValueError(f"{len(conditions)} conditions for {len(docs)} sequences")
        tokens = sorted({ch for d in docs for ch in d} if self.text_ else
                        {int(t) for d in docs for t in d})
        if not tokens:
            raise ValueError("the sequences are empty")
        self.vocabulary_ = tokens
        self.token_index_ = {t: i + 1 for i, t in enumerate(tokens)}
        self.n_condition_features_ = None if conditions is None else conditions.shape[1]
        X, y = self._training_samples(docs, conditions)
        self.classifier_ = self._classifier()
        self.classifier_._fit_conditioned(X, y, conditions)
        self.loss_curve_ = self.classifier_.loss_curve_
        self.n_iter_ = self.classifier_.n_iter_
        return self

    # ----- generation --------------------------------------------------------------------
    def generate(self, n_tokens, prompt=None, temperature=1.0, top_k=None, top_p=None,
                 n_samples=1, random_state=None, condition=None):
        """Sample continuations; returns a list of n_samples strings (or id arrays).

        n_tokens : most tokens to generate per sample (fewer when the model ends
            the sequence).
        prompt : text (or ids) to continue; default: start a new sequence.
        temperature : softmax temperature; 0 picks the most likely token.
        top_k : sample among the k most likely tokens only.
        top_p : sample among the most likely tokens holding this much probability.
        n_samples : sequences generated together in one batched loop.
        random_state : int seed; the same seed gives the same text.
        condition : (d,) or (n_samples, d) features of a conditioned model.
        """
        check_is_fitted(self, "classifier_")
        n_tokens, n_samples = int(n_tokens), int(n_samples)
        if n_tokens < 0 or n_samples < 1:
            raise ValueError("n_tokens must be >= 0 and n_samples >= 1")
        if temperature < 0 or not np.isfinite(temperature):
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and int(top_k) < 1:
            raise ValueError(f"top_k must be None or >= 1, got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
        prompt_ids = self._encode(prompt) if prompt is not None else np.zeros(0, np.int64)
        feed = np.tile(np.concatenate([[BOUNDARY], prompt_ids]).astype(np.int32), (n_samples, 1))
        net = self.classifier_.model_
        h0 = self._initial_state(net, condition, n_samples)
        if random_state is None:
            seed = int(np.random.default_rng().integers(2**63))
        else:
            seed = int(np.random.default_rng(random_state).integers(2**63))
        args = generation_args(net.stack, net.params["embedding.weight"],
                               net.params["head.weight"], net.params["head.bias"],
                               self.classifier_.classes_, temperature=temperature, top_k=top_k,
                               top_p=top_p, seed=seed)
        with single_threaded_blas():
            ids = _kernels.generate(**args, prompt=feed, h0=h0, c0=None, n_new=n_tokens,
                                    n_threads=resolve_n_threads(self.n_threads))
        results = []
        for row in ids:
            end = np.flatnonzero(row == BOUNDARY)
            results.append(self._decode(row[:end[0]] if end.size else row))
        return results

    def _initial_state(self, net, condition, n_samples):
        """h0 of every sample from the condition of a conditioned model (one
        condition serves every sample), or None."""
        if self.n_condition_features_ is None:
            if condition is not None:
                raise ValueError("this generator was fitted without conditions")
            return None
        if condition is None:
            raise ValueError("this generator was fitted with conditions: pass condition=")
        cond = check_array(np.atleast_2d(np.asarray(condition, dtype=np.float64)),
                           input_name="condition")
        if cond.shape[1] != self.n_condition_features_:
            raise ValueError(f"condition has {cond.shape[1]} features, expected "
                             f"{self.n_condition_features_}")
        if len(cond) == 1:
            cond = np.repeat(cond, n_samples, axis=0)
        if len(cond) != n_samples:
            raise ValueError(f"{len(cond)} conditions for n_samples={n_samples}")
        return net.initial_state(cond)

    # ----- evaluation --------------------------------------------------------------------
    def score(self, sequences, conditions=None):
        """Mean log-likelihood per token (higher is better), end markers included."""
        check_is_fitted(self, "classifier_")
        docs, _ = self._as_documents(sequences)
        clf = self.classifier_
        framed = self._framed(docs)
        if conditions is None and self.n_condition_features_ is not None:
            raise ValueError("this generator was fitted with conditions: pass conditions=")
        proba = clf._predict_proba_conditioned([f[:-1] for f in framed], conditions)
        total, count = 0.0, 0
        for p, f in zip(proba, framed):
            targets = f[1:]
            cls = np.minimum(np.searchsorted(clf.classes_, targets), len(clf.classes_) - 1)
            known = clf.classes_[cls] == targets  # a token never seen as a target: p = 0
            probs = np.where(known, p[np.arange(len(targets)), cls], 0.0)
            total += np.log(np.maximum(probs, 1e-12)).sum()
            count += len(targets)
        return total / count

    def perplexity(self, sequences, conditions=None):
        """exp(-score): the model's average branching factor per token."""
        return float(np.exp(-self.score(sequences, conditions)))
