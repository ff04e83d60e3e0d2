"""Captioning with attention on the digits (issue 14, item 6): held-out
caption accuracy of Seq2Seq reading each 8x8 image as 8 row vectors and
attending over them, over several seeds, beside SequenceGenerator's
conditioned captioner (the README's settings; the image only sets the
initial state).

    python bench/caption_attention.py [--seeds 5] [--baseline]

The target is >= 0.93 held-out (the conditioned captioner's README figure).
Prints one line per seed and the mean; accuracy does not depend on the
machine's load, the fit times do.
"""
import argparse
import time
import warnings

import numpy as np

from fastrnn import Seq2Seq, SequenceGenerator
from fastrnn.datasets import load_digits_sequences

N_TRAIN = 1400


def attention_captioner(seed):
    return Seq2Seq(cell="gru", hidden_size=32, embedding_dim=8, max_iter=20, batch_size=32,
                   random_state=seed)


def conditioned_accuracy(images, captions, seed):
    features = images.reshape(len(images), -1)
    cap = SequenceGenerator(hidden_size=64, embedding_dim=16, max_iter=45,
                            learning_rate_init=0.01, batch_size=32, random_state=seed)
    cap.fit(captions[:N_TRAIN], conditions=features[:N_TRAIN])
    said = [cap.generate(12, condition=f, temperature=0)[0] for f in features[N_TRAIN:]]
    return float(np.mean([s == c for s, c in zip(said, captions[N_TRAIN:])]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--baseline", action="store_true",
                        help="also fit SequenceGenerator's conditioned captioner per seed")
    args = parser.parse_args()
    images, _, captions = load_digits_sequences()
    scores = []
    for seed in range(args.seeds):
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = attention_captioner(seed).fit(images[:N_TRAIN], captions[:N_TRAIN])
        took = time.perf_counter() - started
        scores.append(model.score(images[N_TRAIN:], captions[N_TRAIN:]))
        line = f"seed {seed}: attention {scores[-1]:.3f} (fit {took:.1f}s)"
        if args.baseline:
            line += f", conditioned initial state {conditioned_accuracy(images, captions, seed):.3f}"
        print(line, flush=True)
    print(f"attention captioner: mean {np.mean(scores):.3f}, min {np.min(scores):.3f} "
          f"over {args.seeds} seeds")


if __name__ == "__main__":
    main()
