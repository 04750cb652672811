"""Command-line conventions shared by the project's commands."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

# Every command exits 3 on a usage or configuration error: 1 and 2 carry verdicts (fail, inconclusive
# or aborted), so argparse's own exit code 2 must not be mistaken for one.
EXIT_USAGE = 3


class UsageErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose command-line errors exit with EXIT_USAGE instead of argparse's 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
