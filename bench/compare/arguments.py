"""The command line the comparison scripts share:
    [build dir (default: build)] [--seconds S] [--runs K] [more options]"""
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
args = sys.argv[1:]
build = args.pop(0) if args and not args[0].startswith("--") else os.path.join(root, "build")


def option(name, default):
    """The value after `name` on the command line, or `default`."""
    return args[args.index(name) + 1] if name in args else default


runs = int(option("--runs", "3"))
