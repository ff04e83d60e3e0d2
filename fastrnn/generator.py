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

from fastrnn import _kernels, persistence
from fastrnn._quantize import reduced_generation_args, reduced_network
from fastrnn._threads import resolve_n_threads, single_threaded_blas
from fastrnn.estimators import check_wrapped_estimator, estimator_class, training_options
from fastrnn.layers import generation_args

BOUNDARY = 0  # token id 0 marks where a sequence starts and ends


class SequenceGenerator(BaseEstimator):
    """Learn to continue sequences: text (characters) or integer token ids.

    fit(sequences) trains a next-token model on a str, a list of str, or a list
    of integer sequences. Each sequence is framed by a boundary token, so the
    model also learns where sequences start and end; generation stops at an end.
    With ``conditions`` (one feature vector per sequence), a learned projection
    of the features sets the initial state: generate(..., condition=f) then
    describes f (captioning). The sampling loop (embedding, recurrent steps,
    head, softmax, sampling) runs in C without Python per token.

    Parameters
    ----------
    cell : {"lstm", "gru", "rnn"}, default="lstm"
        The recurrent cell.

    hidden_size : int, default=128
        Units per recurrent layer.

    num_layers : int, default=1
        Recurrent layers stacked on each other.

    embedding_dim : int, default=32
        Size of the learned token embedding.

    seq_len : int, default=64
        Training window length (steps of backpropagation through time) when no
        conditions are given; conditioned sequences are used whole.

    dropout : float, default=0.0
        Dropout between recurrent layers (num_layers > 1).

    solver : {"adam", "sgd", "rmsprop", "adagrad"}, default="adam"
        The optimizer, as in FastLSTMClassifier.

    learning_rate_init : float, default=0.003
        The initial learning rate.

    batch_size : int or "auto", default=64
        Training windows per mini-batch.

    max_iter : int, default=10
        Epochs (passes over the training windows).

    alpha : float, default=0.0
        L2 penalty on weights.

    clip_norm : float or None, default=5.0
        Clip the gradient to this global norm; None: no clipping.

    early_stopping : bool, default=False
        Hold out part of the windows and stop when their score stops
        improving, as in FastLSTMClassifier.

    n_iter_no_change : int, default=10
        Epochs without an improvement of more than tol before training stops.

    tol : float, default=1e-4
        Improvement that counts.

    random_state : int, RandomState, Generator or None, default=None
        Makes training reproducible (generate takes its own seed).

    verbose : bool or int, default=False
        Progress per epoch.

    n_threads : int or None, default=None
        None: what OpenMP allows; -1: every CPU.

    dtype : {"float32", "float64"}, default="float32"
        Precision of the network.

    inference_dtype : {"float32", "bfloat16", "int8"} or None, default=None
        Precision of the weights in generate, score and perplexity (None or
        "float32": the fitted weights), as the estimators' inference_dtype:
        int8 or bfloat16 weights converted once (the recurrent ones in 16-bit
        fixed point with either), float32 activations, gate math and
        sampling; settable after fit. Needs dtype="float32".

    Attributes
    ----------
    vocabulary_ : list of str or list of int
        The sorted distinct characters (text) or token ids seen in fit; the
        model's internal id of ``vocabulary_[i]`` is i + 1 (0 is the boundary).

    token_index_ : dict
        Token -> internal id.

    text_ : bool
        Whether fit saw text (generate returns str) or token ids (arrays).

    n_condition_features_ : int or None
        Features per condition vector, None when fitted without conditions.

    classifier_ : FastLSTMClassifier, FastGRUClassifier or FastRNNClassifier
        The per-step next-token classifier that was trained.

    loss_curve_ : list of float
        Training loss (mean cross entropy per token) of every epoch.

    n_iter_ : int
        Epochs run.

    Examples
    --------
    >>> from fastrnn import SequenceGenerator
    >>> text = "the cat sat on the mat. the dog sat on the log. " * 5
    >>> gen = SequenceGenerator(hidden_size=16, embedding_dim=8, seq_len=16, max_iter=2,
    ...                         random_state=0).fit(text)
    >>> len(gen.vocabulary_), gen.n_iter_
    (14, 2)
    >>> sample = gen.generate(20, prompt="the ", random_state=0)[0]
    >>> isinstance(sample, str) and len(sample) <= 20
    True
    >>> bool(gen.perplexity(text[:30]) > 1)
    True
    """

    def __init__(self, cell="lstm", hidden_size=128, num_layers=1, embedding_dim=32, seq_len=64,
                 dropout=0.0, solver="adam", learning_rate_init=0.003, batch_size=64,
                 max_iter=10, alpha=0.0, clip_norm=5.0, early_stopping=False,
                 n_iter_no_change=10, tol=1e-4, random_state=None, verbose=False, n_threads=None,
                 dtype="float32", inference_dtype=None):
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
        self.inference_dtype = inference_dtype

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
        self._remember_vocabulary(tokens)
        self.n_condition_features_ = None if conditions is None else conditions.shape[1]
        X, y = self._training_samples(docs, conditions)
        classifier = self._classifier()
        classifier._fit_conditioned(X, y, conditions)
        self._keep_classifier(classifier)
        return self

    def _remember_vocabulary(self, tokens):
        self.vocabulary_ = tokens
        self.token_index_ = {t: i + 1 for i, t in enumerate(tokens)}

    def _keep_classifier(self, classifier):
        self.classifier_ = classifier
        self.loss_curve_ = classifier.loss_curve_
        self.n_iter_ = classifier.n_iter_

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
        reduced = reduced_network(net, self.inference_dtype)
        if reduced is None:
            run = _kernels.generate
        else:
            args, run = reduced_generation_args(args, net.stack, reduced), _kernels.qgenerate
        with single_threaded_blas():
            ids = run(**args, prompt=feed, h0=h0, c0=None, n_new=n_tokens,
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

    # ----- attributions ------------------------------------------------------------------
    def explain(self, prompt, method="integrated_gradients", target=None, n_steps=50, *,
                window=1, output="logit"):
        """Attribute the next-token distribution after ``prompt`` to the
        prompt's tokens.

        prompt : text (or token ids), as in generate.
        method, n_steps, window : as in the estimators' explain; integrated
            gradients runs on the token embeddings from zero embeddings.
        target : the next token (a character or id) whose logit (or
            probability, output="probability") is explained; None: the most
            likely one.

        Returns (len(prompt),) attributions, one per prompt token (the
        boundary token that starts every sequence is left out).

        >>> from fastrnn import SequenceGenerator
        >>> gen = SequenceGenerator(hidden_size=16, max_iter=1, random_state=0)
        >>> gen.fit("the cat sat on the mat. " * 20).explain("the ca").shape
        (6,)
        """
        check_is_fitted(self, "classifier_")
        if self.n_condition_features_ is not None:
            raise ValueError("explain does not support conditioned generators")
        feed = np.concatenate([[BOUNDARY], self._encode(prompt)])[None]
        label = None if target is None else self._encode([target])[0]
        attributions = self.classifier_.explain(feed, method, target=label, n_steps=n_steps,
                                                window=window, output=output)
        return attributions[0, 1:]

    # ----- evaluation --------------------------------------------------------------------
    def score(self, sequences, conditions=None):
        """Mean log-likelihood per token (higher is better), end markers included."""
        check_is_fitted(self, "classifier_")
        docs, _ = self._as_documents(sequences)
        clf = self.classifier_
        framed = self._framed(docs)
        if conditions is None and self.n_condition_features_ is not None:
            raise ValueError("this generator was fitted with conditions: pass conditions=")
        clf.set_params(inference_dtype=self.inference_dtype)
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

    # ----- persistence -------------------------------------------------------------------
    _FITTED_NAMES = ("text_", "vocabulary_", "n_condition_features_")

    def save(self, path):
        """Write the fitted generator to ``path``: a .npz without pickle (the
        classifier's file plus the vocabulary), read back with
        ``fastrnn.load(path)``, which checks the whole file first."""
        persistence.save_wrapper(self, path)

    def _get_fitted_state(self):
        """(attributes, arrays, estimator) for persistence: the vocabulary and
        conditioning as JSON values, no arrays, and the trained classifier."""
        check_is_fitted(self, "classifier_")
        return {name: getattr(self, name) for name in self._FITTED_NAMES}, {}, self.classifier_

    def _set_fitted_state(self, attributes, arrays, estimator):
        """Restore what _get_fitted_state gave, after checking it against the
        classifier (which persistence has checked against its network);
        anything inconsistent raises ValueError."""
        if set(attributes) != set(self._FITTED_NAMES) or arrays:
            raise ValueError(f"a SequenceGenerator stores exactly {list(self._FITTED_NAMES)}")
        text, vocabulary = attributes["text_"], attributes["vocabulary_"]
        n_conditions = attributes["n_condition_features_"]
        self._check_vocabulary(text, vocabulary)
        check_wrapped_estimator(self, estimator, "classification",
                                ("hidden_size", "num_layers", "embedding_dim", "dropout", "dtype"))
        # n_tokens_ is the network's embedding size (persistence checked it)
        if not estimator.per_step_ or estimator.n_tokens_ != len(vocabulary) + 1:
            raise ValueError("the classifier is not a next-token model of the vocabulary")
        classes = estimator.classes_
        if classes.dtype.kind not in "iu" or classes.min() < 0 or classes.max() > len(vocabulary):
            raise ValueError("the classifier's classes are not token ids of the vocabulary")
        if n_conditions != estimator.model_.config["condition_size"]:
            raise ValueError("n_condition_features_ disagrees with the network")
        self.text_, self.n_condition_features_ = text, n_conditions
        self._remember_vocabulary(vocabulary)
        self._keep_classifier(estimator)
        return self

    @staticmethod
    def _check_vocabulary(text, vocabulary):
        """Sorted distinct characters (text) or token ids >= 0."""
        if not isinstance(text, bool) or not isinstance(vocabulary, list) or not vocabulary:
            raise ValueError("text_ must be a bool and vocabulary_ a non-empty list")
        if text:
            ok = all(isinstance(t, str) and len(t) == 1 for t in vocabulary)
        else:
            ok = all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                     for t in vocabulary)
        if not ok or sorted(set(vocabulary)) != vocabulary:
            raise ValueError("vocabulary_ must hold sorted distinct characters or token ids")
