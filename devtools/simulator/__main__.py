"""`python -m devtools.simulator --port 8188 [--host 127.0.0.1] [--output-dir DIR]`."""

from __future__ import annotations

import argparse

from .options import add_arguments, options_from_arguments
from .server import run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.simulator", description=__doc__)
    add_arguments(parser)
    run(options_from_arguments(vars(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
