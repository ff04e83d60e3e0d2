"""The head-to-head benchmark (fastrnn vs PyTorch vs Keras vs NumPy); it lives in
fastrnn.benchmark so that ``fastrnn bench`` runs it too. bench/RESULTS.md is its
report, written with:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/compare.py --threads 1 2 \\
        --reps 5 --min-seconds 0.3 --memory --out bench
"""
import sys

from fastrnn.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
