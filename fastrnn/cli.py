"""fastrnn: LSTM, GRU and RNN training and inference on CPUs.

    fastrnn demo                       all four tasks on the embedded data sets
    fastrnn demo --task caption        one of classify, forecast, generate, caption
    fastrnn demo --task seq2seq        date normalisation and addition (not in "all")
    fastrnn info                       build configuration (OpenMP, BLAS kernel, flags)
    fastrnn generate corpus.txt        learn a text file, print samples
    fastrnn train data.csv             learn a CSV (one sequence per row, target last)
    fastrnn explain model.npz data.csv which steps drove each prediction (--plot DIR)
    fastrnn bench                      fastrnn vs PyTorch / Keras / NumPy (see --help)

Progress bars appear only when stderr is a terminal; --quiet prints results only.
"""
import argparse
import csv
import os
import sys
import time
import warnings

import numpy as np

TASKS = ("classify", "forecast", "generate", "caption")
EXTRA_TASKS = ("seq2seq",)  # only on request: sequence to sequence (dates, addition)


class HelpFormatter(argparse.HelpFormatter):
    """Every option's default shown, unless its help already says it (or it is a flag)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return text + " (default: %(default)s)"


def _live_progress(args):
    """Bars and live per-epoch lines only for a person watching a terminal."""
    return not args.quiet and sys.stderr.isatty()


def _fit_and_report(est, args, *fit_args, **fit_kwargs):
    """fit, with live progress on a terminal; in a log, one line per epoch after
    the fit (no progress bars); nothing with --quiet."""
    est.set_params(verbose=_live_progress(args))
    est.fit(*fit_args, **fit_kwargs)
    if not args.quiet and not est.verbose:
        validation = getattr(est, "validation_loss_curve_", None) or []
        for epoch, loss in enumerate(est.loss_curve_, start=1):
            extra = (f", validation loss {validation[epoch - 1]:.6g}"
                     if epoch <= len(validation) else "")
            print(f"epoch {epoch}: loss {loss:.6g}{extra}")
    return est


def _say(line):
    from tqdm.auto import tqdm
    tqdm.write(line)


def _quiet():
    from sklearn.exceptions import ConvergenceWarning
    warnings.simplefilter("ignore", ConvergenceWarning)


def _plot(path, draw):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _say("  (--plot needs matplotlib: pip install 'fastrnn[plot]')")
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    draw(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    _say(f"  wrote {path}")


def demo_classify(args):
    from sklearn.model_selection import train_test_split
    from fastrnn import FastLSTMClassifier
    from fastrnn.datasets import load_digits_sequences
    X, y, _ = load_digits_sequences()
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    clf = FastLSTMClassifier(hidden_size=64, max_iter=200, learning_rate_init=0.005,
                             random_state=0, n_threads=args.threads,
                             verbose=args.verbose and _live_progress(args))
    start = time.perf_counter()
    clf.fit(Xtr, ytr, X_val=Xte, y_val=yte)  # scored every epoch; training is unchanged
    seconds = time.perf_counter() - start
    _say(f"  digits as 8-step sequences, LSTM(64): test accuracy {clf.score(Xte, yte):.3f} "
          f"({clf.n_iter_} epochs in {seconds:.1f}s)")
    if args.plot:
        _plot(os.path.join(args.plot, "classify_loss.png"),
              lambda ax: _draw_loss_curves(ax, clf, "digits, LSTM"))
        _plot_explained_digit(clf, Xte[0], os.path.join(args.plot, "classify_explain.png"))


def _draw_loss_curves(ax, est, title):
    """The training loss per epoch, and the validation loss when there is one."""
    epochs = np.arange(1, len(est.loss_curve_) + 1)
    ax.plot(epochs, est.loss_curve_, label="training")
    if getattr(est, "validation_loss_curve_", None) is not None:
        ax.plot(epochs, est.validation_loss_curve_, label="validation")
        ax.legend()
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)


def _plot_explained_digit(clf, x, path):
    """Integrated gradients of one test digit toward its predicted class."""
    from fastrnn.plot import attributions
    label = clf.predict(x[None])[0]
    try:
        attributions(clf.explain(x[None])[0], path, inputs=x,
                     feature_names=[f"pixel {j}" for j in range(x.shape[1])],
                     title=f"predicted {label}: integrated gradients (red: for, blue: against)")
    except ImportError:
        _say("  (--plot needs matplotlib: pip install 'fastrnn[plot]')")
        return
    _say(f"  wrote {path}")


def demo_forecast(args):
    from fastrnn import Forecaster
    from fastrnn.datasets import mackey_glass
    series = mackey_glass(1500)
    train, test = series[:1200], series[1200:1250]
    fc = Forecaster(lookback=32, max_iter=40, random_state=0, n_threads=args.threads,
                    verbose=args.verbose and _live_progress(args))
    start = time.perf_counter()
    fc.fit(train)
    seconds = time.perf_counter() - start
    pred = fc.predict(len(test))
    mse = float(np.mean((pred - test) ** 2))
    naive = float(np.mean((train[-1] - test) ** 2))
    _say(f"  Mackey-Glass, {len(test)} steps ahead (recursive LSTM): MSE {mse:.2e} vs "
          f"naive last value {naive:.2e} ({fc.regressor_.n_iter_} epochs in {seconds:.1f}s)")
    if args.plot:
        def draw(ax):
            ax.plot(np.arange(1100, 1200), train[-100:], label="history")
            ax.plot(np.arange(1200, 1250), test, label="truth")
            ax.plot(np.arange(1200, 1250), pred, "--", label="forecast")
            ax.legend()
            ax.set_title("Mackey-Glass forecast")
        _plot(os.path.join(args.plot, "forecast.png"), draw)


def demo_generate(args):
    from fastrnn import SequenceGenerator
    from fastrnn.datasets import load_text
    text = load_text()
    train, held_out = text[:250000], text[400000:410000]
    gen = SequenceGenerator(hidden_size=128, max_iter=8, learning_rate_init=0.005,
                            random_state=0, n_threads=args.threads,
                            verbose=args.verbose and _live_progress(args))
    start = time.perf_counter()
    gen.fit(train)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    sample = gen.generate(300, prompt="The ", temperature=0.6, random_state=0)[0]
    gen_seconds = time.perf_counter() - start
    _say(f"  Python's help text (250k characters), char LSTM(128): held-out perplexity "
          f"{gen.perplexity(held_out):.2f} ({gen.n_iter_} epochs in {seconds:.1f}s)")
    _say(f"  sample ({len(sample)} characters in {gen_seconds * 1e3:.0f} ms):")
    _say("    The " + sample.replace("\n", "\n    "))
    if args.plot:
        _plot(os.path.join(args.plot, "generate_loss.png"),
              lambda ax: (ax.plot(gen.loss_curve_), ax.set_xlabel("epoch"),
                          ax.set_ylabel("cross-entropy"), ax.set_title("text generator")))


def demo_caption(args):
    from fastrnn import SequenceGenerator
    from fastrnn.datasets import load_digits_sequences
    X, _, captions = load_digits_sequences()
    features = X.reshape(len(X), -1)
    n_train = 1400
    cap = SequenceGenerator(hidden_size=64, embedding_dim=16, max_iter=45,
                            learning_rate_init=0.01, batch_size=32, random_state=0,
                            n_threads=args.threads,
                            verbose=args.verbose and _live_progress(args))
    start = time.perf_counter()
    cap.fit(captions[:n_train], conditions=features[:n_train])
    seconds = time.perf_counter() - start
    predicted = [cap.generate(12, condition=f, temperature=0)[0] for f in features[n_train:]]
    accuracy = np.mean([p == t for p, t in zip(predicted, captions[n_train:])])
    _say(f"  digit images -> captions, conditioned LSTM(64): held-out caption accuracy "
          f"{accuracy:.3f} ({seconds:.1f}s)")
    _say("  e.g. " + ", ".join(f"{t!r} -> {p!r}" for p, t in
                                  zip(predicted[:4], captions[n_train:n_train + 4])))


def demo_seq2seq(args):
    from fastrnn import Seq2Seq
    from fastrnn.datasets import make_addition, make_dates
    for name, make, n_train in (("dates", make_dates, 6000), ("addition", make_addition, 15000)):
        X, Y = make(n_train + 1000, random_state=0)
        model = Seq2Seq(random_state=0, n_threads=args.threads, n_iter_no_change=2,
                        verbose=args.verbose and _live_progress(args))
        start = time.perf_counter()
        model.fit(X[:n_train], Y[:n_train], X_val=X[n_train:n_train + 300],
                  Y_val=Y[n_train:n_train + 300])
        seconds = time.perf_counter() - start
        X_test, Y_test = X[n_train + 300:], Y[n_train + 300:]
        pred = model.predict(X_test[:4], beam_width=3)
        _say(f"  {name}, LSTM encoder-decoder with attention: held-out exact match "
             f"{model.score(X_test, Y_test):.3f} ({model.n_iter_} epochs in {seconds:.1f}s)")
        _say("  e.g. " + ", ".join(f"{x!r} -> {p!r}" for x, p in zip(X_test[:4], pred)))
        if args.plot and name == "dates":
            weights = model.attention_weights(X_test[:1])[0]
            out = model.predict(X_test[:1])[0] + "$"

            def draw(ax, weights=weights, source=X_test[0], out=out):
                ax.imshow(weights, cmap="viridis", aspect="auto")
                ax.set_xticks(range(len(source)), list(source))
                ax.set_yticks(range(len(out)), list(out))
                ax.set_xlabel("source"), ax.set_ylabel("output ($ = end)")
            _plot(os.path.join(args.plot, "seq2seq_attention.png"), draw)


DEMOS = {"classify": demo_classify, "forecast": demo_forecast, "generate": demo_generate,
         "caption": demo_caption, "seq2seq": demo_seq2seq}


def cmd_demo(args):
    from tqdm.auto import tqdm
    import fastrnn
    from fastrnn._threads import resolve_n_threads
    _quiet()
    tasks = TASKS if args.task == "all" else (args.task,)
    if args.plot:
        os.makedirs(args.plot, exist_ok=True)
    info = fastrnn.build_info()
    print(f"fastrnn {info['version']} demo on {info['processor']}, "
          f"{resolve_n_threads(args.threads)} thread(s)")
    total = time.perf_counter()
    bar = tqdm(tasks, desc="demo", unit="task", leave=False, disable=not _live_progress(args))
    for task in bar:
        bar.set_postfix(task=task)
        _say(f"[{task}]")
        DEMOS[task](args)
    print(f"done in {time.perf_counter() - total:.1f}s")
    return 0


def cmd_info(args):
    from fastrnn import show_config
    show_config()
    return 0


# generate's default: about this many characters of training, so a small corpus
# gets enough epochs to produce words rather than noise
GENERATE_TRAINING_CHARS = 400_000


def cmd_generate(args):
    from fastrnn import SequenceGenerator
    _quiet()
    with open(args.file, encoding="utf-8") as f:
        text = f.read()
    if not text:
        print(f"{args.file} is empty", file=sys.stderr)
        return 2
    epochs = args.epochs or int(np.clip(round(GENERATE_TRAINING_CHARS / len(text)), 5, 60))
    gen = SequenceGenerator(cell=args.cell, hidden_size=args.hidden_size,
                            max_iter=epochs, learning_rate_init=args.learning_rate,
                            random_state=args.seed,
                            n_threads=args.threads)
    _fit_and_report(gen, args, text)
    for sample in gen.generate(args.n_tokens, prompt=args.prompt or None,
                               temperature=args.temperature, top_k=args.top_k,
                               top_p=args.top_p, n_samples=args.n_samples,
                               random_state=args.seed):
        print((args.prompt or "") + sample)
        print("-" * 40)
    return 0


def _parse_column(cells):
    """One CSV column as int, float or str values, as pandas would type it."""
    for kind in (int, float):
        try:
            return np.array([kind(c) for c in cells])
        except ValueError:
            pass
    return np.array(cells)


def _is_number(cell):
    try:
        float(cell)
    except ValueError:
        return False
    return True


def read_csv(path, header=None):
    """(column names, rows of str) from a CSV; header=None detects one: a first
    row with any non-numeric cell is a header. Without a header the columns are
    named "0", "1", ..."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f) if row]
    if not rows:
        raise ValueError(f"{path} has no rows")
    if header is None:
        header = not all(_is_number(c) for c in rows[0])
    names = rows.pop(0) if header else [str(i) for i in range(len(rows[0]))]
    if any(len(row) != len(names) for row in rows):
        raise ValueError(f"{path}: every row must have {len(names)} columns")
    return [n.strip() for n in names], rows


def _training_table(args):
    """(X, y) from the CSV named on the command line, or an error message."""
    names, rows = read_csv(args.file, header=False if args.no_header else None)
    target = names[-1] if args.target is None else args.target
    if target not in names:
        return None, None, f"no column {target!r} in {args.file} (columns: {', '.join(names)})"
    t = names.index(target)
    y = _parse_column([row[t].strip() for row in rows])
    features = [[float(c) if c.strip() else np.nan for i, c in enumerate(row) if i != t]
                for row in rows]
    return np.array(features, dtype=np.float64), y, None


def cmd_train(args):
    from sklearn.model_selection import train_test_split
    from fastrnn.estimators import estimator_class
    _quiet()
    try:
        X, y, error = _training_table(args)
    except ValueError as exc:
        error = f"cannot read {args.file}: {exc}"
    if error:
        print(error, file=sys.stderr)
        return 2
    est = estimator_class(args.cell)(
        task=args.task, hidden_size=args.hidden_size, max_iter=args.epochs,
        random_state=args.seed, n_threads=args.threads)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=args.test_size,
                                          random_state=args.seed)
    _fit_and_report(est, args, Xtr, ytr)
    metric = "accuracy" if est.task_ == "classification" else "R^2"
    print(f"{est.task_} on {X.shape[0]} sequences of {X.shape[1]} steps: held-out {metric} "
          f"{est.score(Xte, yte):.4f}")
    if args.save:
        est.save(args.save)
        print(f"saved to {args.save} (load with fastrnn.load)")
    return 0


def _sequence_table(args, n_steps):
    """(n, T) sequences from the CSV named on the command line; a training
    CSV's target column (``--target``, default the last) is dropped when the
    table has one column more than the model's steps."""
    names, rows = read_csv(args.file, header=False if args.no_header else None)
    keep = list(range(len(names)))
    if n_steps is not None and len(names) == n_steps + 1:
        keep.remove(names.index(args.target) if args.target in names else len(names) - 1)
    return np.array([[float(row[i]) if row[i].strip() else np.nan for i in keep]
                     for row in rows], dtype=np.float64)


def cmd_explain(args):
    import fastrnn
    _quiet()
    try:
        est = fastrnn.load(args.model)
        X = _sequence_table(args, getattr(est, "n_features_in_", None))
        A = est.explain(X, method=args.method, n_steps=args.n_steps)
    except (OSError, ValueError) as exc:
        print(f"cannot explain {args.file} with {args.model}: {exc}", file=sys.stderr)
        return 2
    pred = est.predict(X)
    mean = np.abs(A).mean(axis=0)
    print(f"{args.method} over {len(X)} sequences; mean |attribution| per step: "
          + " ".join(f"{v:.3g}" for v in mean))
    for i in range(min(args.n_plots, len(X))):
        top = np.argsort(-np.abs(A[i]))[:3]
        print(f"sequence {i}: prediction {pred[i]}; strongest steps "
              + ", ".join(f"{t} ({A[i, t]:+.3g})" for t in top))
    if args.plot:
        return _plot_attributions(args, X, A, pred)
    return 0


def _plot_attributions(args, X, A, pred):
    from fastrnn.plot import attributions
    os.makedirs(args.plot, exist_ok=True)
    try:
        for i in range(min(args.n_plots, len(X))):
            path = attributions(A[i], os.path.join(args.plot, f"explain_{i}.png"), inputs=X[i],
                                title=f"sequence {i}: prediction {pred[i]} ({args.method})")
            print(f"wrote {path}")
    except ImportError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0



def _common_options():
    """Options every training command takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=int, default=None,
                        help="OpenMP/BLAS threads (default: what the CPU quota allows; -1: all)")
    common.add_argument("-q", "--quiet", action="store_true",
                        help="print results only: no progress, no per-epoch losses")
    return common


def _add_generate(sub, common):
    gen = sub.add_parser("generate", parents=[common], formatter_class=HelpFormatter,
                         help="learn a text file and print generated samples",
                         description="Learn a character model of a UTF-8 text file and "
                                     "print samples from it.")
    gen.add_argument("file", help="UTF-8 text file to learn")
    gen.add_argument("--cell", default="lstm", choices=("lstm", "gru", "rnn"),
                     help="recurrent cell")
    gen.add_argument("--hidden-size", type=int, default=128, help="units per layer")
    gen.add_argument("--epochs", type=int, default=None,
                     help=f"passes over the text (default: about "
                          f"{GENERATE_TRAINING_CHARS:,} characters of training, 5 to 60 passes)")
    gen.add_argument("--learning-rate", type=float, default=0.02,
                     help="Adam step size (high enough for words on a small corpus)")
    gen.add_argument("--n-tokens", type=int, default=300, help="characters per sample")
    gen.add_argument("--n-samples", type=int, default=1, help="number of samples")
    gen.add_argument("--prompt", default="", help="text each sample continues (default: none)")
    gen.add_argument("--temperature", type=float, default=0.6,
                     help="sampling temperature: lower is safer, 0 is greedy")
    gen.add_argument("--top-k", type=int, default=None,
                     help="sample only among the k likeliest characters")
    gen.add_argument("--top-p", type=float, default=None,
                     help="sample only within this much probability mass (nucleus)")
    gen.add_argument("--seed", type=int, default=0, help="random seed for training and sampling")


def _add_train(sub, common):
    train = sub.add_parser("train", parents=[common], formatter_class=HelpFormatter,
                           help="learn a CSV: one sequence per row, target column",
                           description="Learn a CSV file: each row is one univariate "
                                       "sequence (its numeric columns, in order) and a target. "
                                       "A first row with any non-numeric cell is a header.")
    train.add_argument("file", help="CSV file")
    train.add_argument("--target", default=None,
                       help="target column name (default: the last column; without a "
                            "header, columns are named 0, 1, ...)")
    train.add_argument("--no-header", action="store_true",
                       help="the first row is data, even if it is not numeric")
    train.add_argument("--task", default="auto", choices=("auto", "classification",
                                                          "regression"),
                       help="auto: classification for integer/string targets, else regression")
    train.add_argument("--cell", default="lstm", choices=("lstm", "gru", "rnn"),
                       help="recurrent cell")
    train.add_argument("--hidden-size", type=int, default=64, help="units per layer")
    train.add_argument("--epochs", type=int, default=50, help="maximum passes over the data")
    train.add_argument("--test-size", type=float, default=0.2,
                       help="share of rows held out for the reported score")
    train.add_argument("--seed", type=int, default=0, help="random seed")
    train.add_argument("--save", metavar="PATH", default=None,
                       help="save the fitted model here (.npz; load with fastrnn.load)")


def _add_explain(sub):
    exp = sub.add_parser("explain", formatter_class=HelpFormatter,
                         help="which steps of each CSV sequence drove its prediction",
                         description="Attributions of a saved model's predictions (fastrnn "
                                     "train --save) to the steps of each CSV row.")
    exp.add_argument("model", help="saved model (.npz)")
    exp.add_argument("file", help="CSV file, one sequence per row (a target column is dropped)")
    exp.add_argument("--method", default="integrated_gradients",
                     choices=("integrated_gradients", "saliency", "input_x_gradient",
                              "occlusion"), help="attribution method")
    exp.add_argument("--n-steps", type=int, default=50, help="integrated gradients' steps")
    exp.add_argument("--target", default=None,
                     help="name of the target column to drop (default: the last, when the "
                          "table has one column more than the model's steps)")
    exp.add_argument("--no-header", action="store_true", help="the CSV has no header row")
    exp.add_argument("--plot", metavar="DIR", default=None,
                     help="write one PNG per shown sequence here (needs matplotlib)")
    exp.add_argument("--n-plots", type=int, default=5, help="sequences shown and drawn")


def build_parser():
    from fastrnn import __version__
    parser = argparse.ArgumentParser(prog="fastrnn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fastrnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options()

    demo = sub.add_parser("demo", parents=[common], formatter_class=HelpFormatter,
                          help="train on the embedded data sets and report",
                          description="Classification, forecasting, text generation and "
                                      "captioning on data that ships with fastrnn.")
    demo.add_argument("--task", default="all", choices=("all",) + TASKS + EXTRA_TASKS,
                      help="which demo (all: every one but seq2seq)")
    demo.add_argument("--plot", metavar="DIR", default=None,
                      help="write PNG plots here (needs matplotlib)")
    demo.add_argument("--verbose", action="store_true",
                      help="per-epoch progress and losses (on a terminal)")

    sub.add_parser("info", help="build configuration: OpenMP, BLAS kernel, threads, flags",
                   description="Print the build: OpenMP, BLAS library and kernel, threads, "
                               "compiler flags.")
    _add_generate(sub, common)
    _add_train(sub, common)
    _add_explain(sub)
    sub.add_parser("bench", help="head-to-head benchmark; 'fastrnn bench --help' for options",
                   add_help=False)
    sub.add_parser("cbench", help="C-level benchmark of the kernels; 'fastrnn cbench --help'",
                   add_help=False)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its options are the benchmark's own
        from fastrnn.benchmark import main as bench_main
        return bench_main(argv[1:])
    if argv[:1] == ["cbench"]:
        from fastrnn.cbench import main as cbench_main
        cbench_main(argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    commands = {"demo": cmd_demo, "info": cmd_info, "generate": cmd_generate,
                "train": cmd_train, "explain": cmd_explain}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
