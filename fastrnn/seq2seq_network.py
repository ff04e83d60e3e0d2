"""The encoder-attention-decoder network behind fastrnn.Seq2Seq.

    source ids -> embedding (or source feature vectors, e.g. image rows)
        -> encoder stack (optionally bidirectional) -> memory M
    [BOS, y_1 .. y_n] -> embedding -> decoder stack (initial state: the encoder's
        final state, directions summed) -> H
    attention (Luong "general" h W m, or Bahdanau's additive v.tanh(Wq h + Wk m),
        both scored from the decoder's output at the same step, so that with
        teacher forcing every step's H comes from one stack call) -> context C
    tanh([C; H] W_c^T + b_c) -> head -> logits over the target tokens and EOS

Every parameter is a view into one flat buffer (``flat_params``, gradients in
``flat_grads``) so the fused optimizer updates them in one call. Attention over
all samples and decoder steps is a few batched matrix products and a masked
softmax: no Python per time step in training.
"""
import numpy as np

from fastrnn import _kernels
from fastrnn._threads import resolve_n_threads
from fastrnn.layers import STACKS, State, as_float_dtype, load_into
from fastrnn.network import Network, glorot_uniform, orthogonal

ATTENTIONS = ("luong", "bahdanau", None)


def masked_softmax(scores, src_lengths):
    """Softmax over the last axis of scores (B, T, S), zero past each
    sample's source length (never looks at padding)."""
    S = scores.shape[-1]
    valid = np.arange(S)[None, None, :] < src_lengths[:, None, None]
    z = np.where(valid, scores, -np.inf)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _rows(a):
    """a (..., n) as a matrix of rows (..., n) -> (-1, n)."""
    return a.reshape(-1, a.shape[-1])


def softmax_backward(A, dA):
    """d(scores) from d(A) for A = softmax(scores) (masked entries stay 0)."""
    return A * (dA - np.sum(dA * A, axis=-1, keepdims=True))


class Seq2SeqNetwork:
    """Embeddings, encoder and decoder stacks, attention, combine layer and head.

    source_vocab, target_vocab: token counts; the decoder's input vocabulary is
    target_vocab + 2 (EOS = target_vocab, BOS = target_vocab + 1) and the head
    predicts target_vocab + 1 classes (the tokens and EOS).
    source_features: instead of source tokens, the source is a sequence of
    feature vectors of this size (e.g. the rows of an image, for captioning);
    then there is no source embedding and source_vocab must be None.
    """

    def __init__(self, cell, source_vocab, target_vocab, embedding_dim, hidden_size,
                 num_layers=1, bidirectional=False, attention="luong", dtype=np.float32,
                 n_threads=None, random_state=None, source_features=None):
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        if (source_vocab is None) == (source_features is None):
            raise ValueError("give exactly one of source_vocab and source_features")
        self.config = dict(cell=cell,
                           source_vocab=None if source_vocab is None else int(source_vocab),
                           target_vocab=int(target_vocab), embedding_dim=int(embedding_dim),
                           hidden_size=int(hidden_size), num_layers=int(num_layers),
                           bidirectional=bool(bidirectional), attention=attention,
                           source_features=None if source_features is None
                           else int(source_features))
        self.dtype = as_float_dtype(dtype)
        self.n_threads = n_threads
        self.rng = np.random.default_rng(random_state)
        self._build()
        self.reset_parameters()

    # ----- structure ----------------------------------------------------------------------
    @property
    def eos(self):
        return self.config["target_vocab"]

    @property
    def bos(self):
        return self.config["target_vocab"] + 1

    @property
    def n_outputs(self):
        return self.config["target_vocab"] + 1

    def _shapes(self):
        c = self.config
        E, H, L = c["embedding_dim"], c["hidden_size"], c["num_layers"]
        D = 2 if c["bidirectional"] else 1
        Stack = STACKS[c["cell"]]
        shapes = []
        if c["source_features"] is None:
            shapes.append(("encoder.embedding.weight", (c["source_vocab"], E)))
        shapes += [("encoder", Stack.n_params(self._encoder_inputs(), H, L, c["bidirectional"])),
                   ("decoder.embedding.weight", (c["target_vocab"] + 2, E)),
                  ("decoder", Stack.n_params(E, H, L, False))]
        if c["attention"] == "luong":
            shapes.append(("attention.weight", (H, D * H)))
        elif c["attention"] == "bahdanau":
            shapes += [("attention.query.weight", (H, H)), ("attention.key.weight", (H, D * H)),
                       ("attention.v", (H,))]
        if c["attention"] is not None:
            shapes += [("combine.weight", (H, D * H + H)), ("combine.bias", (H,))]
        shapes += [("head.weight", (self.n_outputs, H)), ("head.bias", (self.n_outputs,))]
        return shapes

    def _encoder_inputs(self):
        c = self.config
        return c["embedding_dim"] if c["source_features"] is None else c["source_features"]

    def _build(self):
        c = self.config
        shapes = self._shapes()
        sizes = [s if isinstance(s, int) else int(np.prod(s)) for _, s in shapes]
        self.flat_params = np.zeros(sum(sizes), self.dtype)
        self.flat_grads = np.zeros(sum(sizes), self.dtype)
        self.params, self.grads, self.layout = {}, {}, []
        offset = 0
        for (name, shape), size in zip(shapes, sizes):
            p = self.flat_params[offset:offset + size]
            g = self.flat_grads[offset:offset + size]
            if name in ("encoder", "decoder"):
                inputs = self._encoder_inputs() if name == "encoder" else c["embedding_dim"]
                stack = STACKS[c["cell"]](
                    inputs, c["hidden_size"], c["num_layers"],
                    bidirectional=c["bidirectional"] and name == "encoder", dtype=self.dtype,
                    n_threads=self.n_threads, flat_params=p, flat_grads=g)
                setattr(self, name, stack)
                inner = offset
                for stack_name, stack_shape in stack.param_shapes(
                        stack.input_size, stack.hidden_size, stack.num_layers,
                        stack.bidirectional):
                    self.layout.append((f"{name}.{stack_name}", inner, stack_shape))
                    inner += int(np.prod(stack_shape))
            else:
                self.params[name], self.grads[name] = p.reshape(shape), g.reshape(shape)
                self.layout.append((name, offset, shape))
            offset += size
        self.decay_mask = np.ones_like(self.flat_params)  # L2 on weights, not biases
        for name, start, shape in self.layout:
            if "bias" in name:
                self.decay_mask[start:start + int(np.prod(shape))] = 0
        self._cache = None

    def named_params(self):
        """(name, view) of every parameter in flat-buffer order; stack
        parameters are prefixed 'encoder.' / 'decoder.' (PyTorch names after)."""
        return [(name, self.flat_params[start:start + int(np.prod(shape))].reshape(shape))
                for name, start, shape in self.layout]

    def reset_parameters(self):
        """Embeddings U(-0.1, 0.1); Glorot-uniform input, attention, combine and
        head weights; orthogonal recurrent weights per gate; zero biases but an
        LSTM forget-gate bias of 1."""
        rng, H = self.rng, self.config["hidden_size"]
        for stack in (self.encoder, self.decoder):
            for name, view in stack.params.items():
                if name.startswith("weight_ih"):
                    view[:] = glorot_uniform(rng, *view.shape)
                elif name.startswith("weight_hh"):
                    view[:] = np.concatenate([orthogonal(rng, H) for _ in range(stack.n_gates)])
                else:
                    view[:] = 0
                    if stack.cell == "lstm" and name.startswith("bias_ih"):
                        view[H:2 * H] = 1.0
        for name, view in self.params.items():
            if name.endswith("embedding.weight"):
                view[:] = rng.uniform(-0.1, 0.1, view.shape)
            elif view.ndim == 2:
                view[:] = glorot_uniform(rng, *view.shape)
            elif name == "attention.v":
                view[:] = rng.uniform(-1, 1, view.shape) / np.sqrt(view.size)
            else:
                view[:] = 0

    def state_dict(self):
        return {name: view.copy() for name, view in self.named_params()}

    def load_state_dict(self, state):
        load_into(dict(self.named_params()), state, "seq2seq network")

    def zero_grad(self):
        self.flat_grads[:] = 0

    def __getstate__(self):
        return {"config": self.config, "dtype": self.dtype, "n_threads": self.n_threads,
                "rng": self.rng, "flat_params": self.flat_params}

    def __setstate__(self, state):
        flat = state.pop("flat_params")
        # pickles from before feature sources have no source_features
        state["config"] = {"source_features": None, **state["config"]}
        self.__dict__.update(state)
        self._build()
        self.flat_params[:] = flat

    @classmethod
    def from_flat(cls, config, dtype, flat_params, n_threads=None):
        """A network with this configuration and parameters, built without
        initialising anything (as Network.from_flat; persistence uses it)."""
        return Network.from_flat.__func__(cls, config, dtype, flat_params, n_threads)

    # ----- encoder ------------------------------------------------------------------------
    def encode(self, source, source_lengths, training=False):
        """Memory M (B, S, D*H) and the decoder's initial State (encoder final
        states, directions summed per layer). source: token ids (B, S), or
        feature vectors (B, S, source_features)."""
        if self.config["source_features"] is None:
            X = self.params["encoder.embedding.weight"][source]
        else:
            X = np.ascontiguousarray(source, dtype=self.dtype)
        M, state = self.encoder.forward(X, lengths=source_lengths, training=training)
        return M, self._bridge(state)

    def _bridge(self, state):
        L, D = self.config["num_layers"], self.encoder.num_directions

        def fold(s):
            return None if s is None else np.ascontiguousarray(
                s.reshape(L, D, *s.shape[1:]).sum(axis=1))
        return State(fold(state.h), fold(state.c))

    def _bridge_backward(self, dstate):
        D = self.encoder.num_directions

        def unfold(d):
            return None if d is None else np.repeat(d, D, axis=0)
        return unfold(dstate.h), unfold(dstate.c)

    # ----- attention ----------------------------------------------------------------------
    def attend(self, Hd, M, source_lengths):
        """Alignments A (B, T, S) and the attentional hidden states (B, T, H)
        for decoder outputs Hd (B, T, H) over memory M (B, S, D*H); also what
        attend_backward needs. Luong attention runs in C (csrc/attention.h),
        Bahdanau's in batched NumPy (attend_numpy)."""
        if self.config["attention"] != "luong":
            return self.attend_numpy(Hd, M, source_lengths)
        p = self.params
        B, T, H = Hd.shape
        S, F = M.shape[1:]
        Hd, M = np.ascontiguousarray(Hd), np.ascontiguousarray(M)
        lengths = np.ascontiguousarray(source_lengths, dtype=np.int32)
        Q, feat = np.empty((B, T, F), self.dtype), np.empty((B, T, F + H), self.dtype)
        A, out = np.empty((B, T, S), self.dtype), np.empty((B, T, H), self.dtype)
        _kernels.luong_forward(Hd=Hd, M=M, W_a=p["attention.weight"], W_c=p["combine.weight"],
                               b_c=p["combine.bias"], src_lengths=lengths, Q=Q, feat=feat, A=A,
                               out=out, n_threads=self._threads())
        return A, out, (A, Q, feat, out, lengths)

    def _threads(self):
        return resolve_n_threads(self.n_threads)

    def attend_numpy(self, Hd, M, source_lengths):
        """attend in batched NumPy: both scores (the reference for the C kernel)."""
        p, kind = self.params, self.config["attention"]
        if kind == "luong":
            Q = Hd @ p["attention.weight"]                       # (B, T, D*H)
            scores, extra = Q @ M.transpose(0, 2, 1), Q
        else:
            Kp = M @ p["attention.key.weight"].T                 # (B, S, H)
            Qp = Hd @ p["attention.query.weight"].T              # (B, T, H)
            U = np.tanh(Qp[:, :, None, :] + Kp[:, None, :, :])   # (B, T, S, H)
            scores, extra = U @ p["attention.v"], U
        A = masked_softmax(scores, source_lengths).astype(self.dtype, copy=False)
        C = A @ M                                                # (B, T, D*H)
        features = np.concatenate([C, Hd], axis=-1)
        out = np.tanh(features @ p["combine.weight"].T + p["combine.bias"])
        return A, out, (A, extra, features, out)

    def attend_backward(self, d_out, Hd, M, cache):
        """Gradients of attend: adds the parameter gradients, returns dHd, dM."""
        if self.config["attention"] != "luong":
            return self.attend_backward_numpy(d_out, Hd, M, cache)
        A, Q, feat, out, lengths = cache
        g = self.grads
        dHd, dM = np.empty_like(Hd), np.empty_like(M)
        _kernels.luong_backward(Hd=np.ascontiguousarray(Hd), M=np.ascontiguousarray(M),
                                W_a=self.params["attention.weight"],
                                W_c=self.params["combine.weight"], Q=Q, feat=feat, A=A,
                                out=out, d_out=np.ascontiguousarray(d_out, self.dtype),
                                src_lengths=lengths, dHd=dHd, dM=dM,
                                dW_a=g["attention.weight"], dW_c=g["combine.weight"],
                                db_c=g["combine.bias"], n_threads=self._threads())
        return dHd, dM

    def attend_backward_numpy(self, d_out, Hd, M, cache):
        """attend_backward of attend_numpy."""
        p, g, kind = self.params, self.grads, self.config["attention"]
        A, extra, features, out = cache
        d_pre = d_out * (1 - out * out)
        g["combine.weight"] += _rows(d_pre).T @ _rows(features)
        g["combine.bias"] += d_pre.sum(axis=(0, 1))
        d_features = d_pre @ p["combine.weight"]
        DH = M.shape[-1]
        dC, dHd = d_features[..., :DH], np.ascontiguousarray(d_features[..., DH:])
        dM = A.transpose(0, 2, 1) @ dC
        d_scores = softmax_backward(A, dC @ M.transpose(0, 2, 1))
        if kind == "luong":
            Q = extra
            dQ = d_scores @ M
            dM += d_scores.transpose(0, 2, 1) @ Q
            g["attention.weight"] += _rows(Hd).T @ _rows(dQ)
            dHd += dQ @ p["attention.weight"].T
        else:
            U = extra
            g["attention.v"] += d_scores.reshape(-1) @ _rows(U)
            d_pre_u = d_scores[..., None] * p["attention.v"] * (1 - U * U)  # (B, T, S, H)
            dQp, dKp = d_pre_u.sum(axis=2), d_pre_u.sum(axis=1)
            g["attention.query.weight"] += _rows(dQp).T @ _rows(Hd)
            g["attention.key.weight"] += _rows(dKp).T @ _rows(M)
            dHd += dQp @ p["attention.query.weight"]
            dM += dKp @ p["attention.key.weight"]
        return dHd, dM

    # ----- the whole model ----------------------------------------------------------------
    def forward(self, source, source_lengths, decoder_input, target_lengths, training=False):
        """Logits (B, T, n_outputs) with teacher forcing: decoder_input (B, T)
        is BOS followed by the target tokens; target_lengths counts the EOS.
        Also returns the alignments (B, T, S), or None without attention."""
        M, state = self.encode(source, source_lengths, training)
        Xd = self.params["decoder.embedding.weight"][decoder_input]
        Hd, _ = self.decoder.forward(Xd, lengths=target_lengths, h0=state.h, c0=state.c,
                                     training=training)
        A, attn_cache = None, None
        out = Hd
        if self.config["attention"] is not None:
            A, out, attn_cache = self.attend(Hd, M, source_lengths)
        logits = out @ self.params["head.weight"].T + self.params["head.bias"]
        if training:
            self._cache = (source, decoder_input, M, Hd, out, attn_cache)
        return logits, A

    def backward(self, d_logits):
        """Accumulate every parameter's gradient from d(loss)/d(logits)."""
        if self._cache is None:
            raise RuntimeError("backward() needs a preceding forward(..., training=True)")
        source, decoder_input, M, Hd, out, attn_cache = self._cache
        self._cache = None
        p, g = self.params, self.grads
        d_logits = np.asarray(d_logits, self.dtype)
        g["head.weight"] += _rows(d_logits).T @ _rows(out)
        g["head.bias"] += d_logits.sum(axis=(0, 1))
        d_out = d_logits @ p["head.weight"]
        if attn_cache is not None:
            dHd, dM = self.attend_backward(d_out, Hd, M, attn_cache)
        else:
            dHd, dM = d_out, None
        dXd, d_init = self.decoder.backward(dHd, input_grad=True)
        np.add.at(g["decoder.embedding.weight"], decoder_input.reshape(-1),
                  dXd.reshape(-1, dXd.shape[-1]))
        dhN, dcN = self._bridge_backward(d_init)
        tokens = self.config["source_features"] is None  # features have no parameters
        dXs, _ = self.encoder.backward(dM, dhN, dcN, input_grad=tokens)
        if tokens:
            np.add.at(g["encoder.embedding.weight"], source.reshape(-1),
                      dXs.reshape(-1, dXs.shape[-1]))

    # ----- decoding ------------------------------------------------------------------------
    def decode(self, M, source_lengths, state, beam_width, max_len, n_threads=1):
        """Greedy (beam_width 1) or beam-search decoding in C (csrc/decode.h) of
        encoded sources: (tokens (n, max_len), lengths (n,), normalised scores)."""
        p, kind = self.params, self.config["attention"]
        layers = [self.decoder.direction(k) for k in range(self.config["num_layers"])]
        keys = None  # what the decoder's h meets: Luong W_a m, Bahdanau W_k m
        if kind is not None:
            key_W = p["attention.weight" if kind == "luong" else "attention.key.weight"]
            keys = np.ascontiguousarray(M @ key_W.T)
        return _kernels.decode(
            cell=_kernels.CELLS[self.config["cell"]], attention=kind,
            embedding=self.params["decoder.embedding.weight"],
            W_ih=[d.W_ih for d in layers], W_hh=[d.W_hh for d in layers],
            b_ih=[d.b_ih for d in layers], b_hh=[d.b_hh for d in layers],
            query_W=p.get("attention.query.weight"), attn_v=p.get("attention.v"),
            combine_W=p.get("combine.weight"), combine_b=p.get("combine.bias"),
            head_W=p["head.weight"], head_b=p["head.bias"], bos=self.bos, eos=self.eos,
            memory=None if kind is None else np.ascontiguousarray(M), keys=keys,
            src_lengths=np.ascontiguousarray(source_lengths, dtype=np.int32),
            h0=state.h, c0=state.c, beam_width=int(beam_width), max_len=int(max_len),
            n_threads=n_threads)

    # ----- one decoding step (batched over hypotheses) --------------------------------------
    def decode_step(self, tokens, state, M, source_lengths):
        """Log-probabilities (n, n_outputs) of the next token after ``tokens``
        (n,) from decoder state ``state`` and memory M (n, S, D*H); the new
        state and the alignments (n, S) (None without attention)."""
        x = self.params["decoder.embedding.weight"][tokens][:, None, :]
        h, new_state = self.decoder.forward(x, h0=state.h, c0=state.c)
        align, out = None, h
        if self.config["attention"] is not None:
            A, out, _ = self.attend(h, M, source_lengths)
            align = A[:, 0]
        logits = (out[:, 0] @ self.params["head.weight"].T + self.params["head.bias"])
        logits = logits.astype(np.float64)
        z = logits - logits.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True)), new_state, align
