"""The ``fastrnn`` command."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastrnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="build configuration: OpenMP, BLAS kernel, threads, flags")
    args = parser.parse_args(argv)
    if args.command == "info":
        from fastrnn import show_config
        show_config()
    return 0


if __name__ == "__main__":
    sys.exit(main())
