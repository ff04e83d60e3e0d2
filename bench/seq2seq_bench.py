"""Seq2Seq speed: fastrnn against the same model in PyTorch (issue 14, item 7).

    python bench/seq2seq_bench.py --threads 1
    python bench/seq2seq_bench.py --threads 2

1. One training step (forward, backward, Adam update) of a 1-layer LSTM
   encoder-decoder with Luong attention: B=64, source and target 30 steps,
   vocabulary 60, embeddings 64, H=256 (unidirectional encoder, as PyTorch's
   loop below).
2. Beam search (width 5) output tokens per second: fastrnn's C decoder
   against a PyTorch decoding loop written in Python (one batched step per
   token over every hypothesis, torch.topk per sample).

--decode-batch N decodes N samples instead of 64 (at 1-4 samples PyTorch's
loop is dominated by Python, at 64 both sides by the decoder's GEMMs).

Run it on an otherwise idle machine; prints one Markdown table row per measure.
"""
import argparse
import time

import numpy as np

from fastrnn._threads import single_threaded_blas
from fastrnn.losses import softmax_cross_entropy
from fastrnn.optim import Optimizer
from fastrnn.seq2seq import _Pairs
from fastrnn.seq2seq_network import Seq2SeqNetwork


def best_time(fn, reps, min_seconds=1.0):
    fn()  # warm up
    best, spent = np.inf, 0.0
    while reps > 0 or spent < min_seconds:
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        best, spent, reps = min(best, took), spent + took, reps - 1
    return best


def make_pairs(net, B, S, T, V, rng):
    source = [rng.integers(0, V, S) for _ in range(B)]
    target = [rng.integers(0, V, T - 1) for _ in range(B)]
    return _Pairs(source, target, net.bos, net.eos)


def fastrnn_step(net, optimizer, pairs, n_threads):
    def step():
        logits, _ = net.forward(pairs.source, pairs.source_lengths, pairs.decoder_input,
                                pairs.target_lengths, training=True)
        rows = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
        target = pairs.decoder_output.reshape(-1)
        _, d_rows = softmax_cross_entropy(rows, target, np.ones(len(target)))
        net.zero_grad()
        net.backward(d_rows.reshape(logits.shape))
        optimizer.step(net.flat_params, net.flat_grads, 1e-3, grad_scale=1.0 / len(target),
                       n_threads=n_threads)
    return step


class TorchSeq2Seq:
    """The same network in PyTorch (Luong general attention, no input feeding)."""

    def __init__(self, torch, V, E, H):
        nn = torch.nn
        self.torch = torch
        self.src_emb, self.tgt_emb = nn.Embedding(V, E), nn.Embedding(V + 2, E)
        self.encoder = nn.LSTM(E, H, batch_first=True)
        self.decoder = nn.LSTM(E, H, batch_first=True)
        self.W_a = nn.Linear(H, H, bias=False)
        self.combine = nn.Linear(2 * H, H)
        self.head = nn.Linear(H, V + 1)
        self.modules = [self.src_emb, self.tgt_emb, self.encoder, self.decoder, self.W_a,
                        self.combine, self.head]

    def parameters(self):
        return [p for m in self.modules for p in m.parameters()]

    def attend(self, h, M):
        scores = self.W_a(h) @ M.transpose(1, 2)
        context = self.torch.softmax(scores, dim=-1) @ M
        return self.torch.tanh(self.combine(self.torch.cat([context, h], dim=-1)))

    def forward(self, src, dec_in):
        M, state = self.encoder(self.src_emb(src))
        h, _ = self.decoder(self.tgt_emb(dec_in), state)
        return self.head(self.attend(h, M))

    def beam_search(self, src, width, max_len, bos, eos):
        """Python decoding loop: per token one batched step of every hypothesis."""
        torch = self.torch
        with torch.no_grad():
            M, (h, c) = self.encoder(self.src_emb(src))
            B = src.shape[0]
            M = M.repeat_interleave(width, 0)
            h, c = h.repeat_interleave(width, 1), c.repeat_interleave(width, 1)
            tokens = torch.full((B * width,), bos)
            logp = torch.full((B, width), -float("inf"))
            logp[:, 0] = 0
            done = torch.zeros(B, dtype=torch.bool)
            emitted = 0
            for _ in range(max_len):
                out, (h, c) = self.decoder(self.tgt_emb(tokens)[:, None], (h, c))
                step = torch.log_softmax(self.head(self.attend(out, M))[:, 0], dim=-1)
                V = step.shape[-1]
                cand = (logp.reshape(-1, 1) + step).reshape(B, width * V)
                logp, idx = torch.topk(cand, width, dim=1)
                rows = (idx // V + torch.arange(B)[:, None] * width).reshape(-1)
                tokens = (idx % V).reshape(-1)
                h, c = h[:, rows], c[:, rows]
                emitted += int((~done).sum())  # the top hypotheses' tokens, end included
                done |= (tokens.reshape(B, width)[:, 0] == eos)
                if done.all():
                    break
            return emitted


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--decode-batch", type=int, default=64,
                        help="samples decoded together in the beam search measure")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    B, S, T, V, E, H = 64, 30, 30, 60, 64, 256
    rng = np.random.default_rng(0)
    net = Seq2SeqNetwork("lstm", V, V, E, H, bidirectional=False, attention="luong",
                         n_threads=args.threads, random_state=0)
    pairs = make_pairs(net, B, S, T, V, rng)
    optimizer = Optimizer("adam", net.flat_params.size, net.dtype)
    with single_threaded_blas():
        ours = best_time(fastrnn_step(net, optimizer, pairs, args.threads), args.reps)

    model = TorchSeq2Seq(torch, V, E, H)
    torch_opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    src = torch.tensor(pairs.source, dtype=torch.long)
    dec_in = torch.tensor(pairs.decoder_input, dtype=torch.long)
    dec_out = torch.tensor(pairs.decoder_output, dtype=torch.long)

    def torch_step():
        torch_opt.zero_grad()
        logits = model.forward(src, dec_in)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V + 1), dec_out.reshape(-1))
        loss.backward()
        torch_opt.step()
    theirs = best_time(torch_step, args.reps)
    print(f"| training step, B={B} S={S} T={T} V={V} E={E} H={H}, {args.threads} thread(s) "
          f"| fastrnn {ours * 1e3:.1f} ms | PyTorch {theirs * 1e3:.1f} ms "
          f"| {theirs / ours:.2f}x |")

    width, max_len = 5, T
    if args.decode_batch != B:
        B = args.decode_batch
        pairs = make_pairs(net, B, S, T, V, rng)
        src = torch.tensor(pairs.source, dtype=torch.long)
    with single_threaded_blas():
        M, state = net.encode(pairs.source, pairs.source_lengths)

        def ours_decode():
            return net.decode(M, pairs.source_lengths, state, width, max_len,
                              n_threads=args.threads)
        ours = best_time(ours_decode, args.reps)
        _, counts, _ = ours_decode()
    ours_tokens = int(counts.sum()) + B  # each output and its end token
    theirs_tokens = model.beam_search(src, width, max_len, net.bos, net.eos)
    theirs = best_time(lambda: model.beam_search(src, width, max_len, net.bos, net.eos),
                       args.reps)
    print(f"| beam search width {width}, B={B}, max_len {max_len}, {args.threads} thread(s) "
          f"| fastrnn {ours_tokens / ours:.0f} tokens/s | PyTorch {theirs_tokens / theirs:.0f} "
          f"tokens/s | {(ours_tokens / ours) / (theirs_tokens / theirs):.2f}x |")


if __name__ == "__main__":
    main()
