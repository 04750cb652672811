"""`python -m loadtest [locust options]`: Locust with `-f loadtest/vlm.py`; `--help` lists every option.

Locust 2.x prints `--help` before it imports a locustfile, so `locust -f loadtest/vlm.py --help`
cannot show this tool's options; this entry point builds Locust's parser with them registered.
"""

from __future__ import annotations

import os
import sys

LOCUSTFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vlm.py")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        from locust import argument_parser

        from loadtest import options

        parser = argument_parser.get_parser()
        options.register(parser)
        parser.prog = "python -m loadtest"
        parser.print_help()
        return 0
    os.execv(sys.executable, [sys.executable, "-m", "locust", "-f", LOCUSTFILE, *args])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
