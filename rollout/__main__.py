"""`python -m rollout run|status|rollback|abort|pause|resume|promote|down|ci-gate` and the console scripts
(canary-rollout, canary-status, canary-rollback, canary-abort, canary-pause, canary-resume,
canary-promote, canary-ci-gate): parse (`rollout.cli` owns every flag), dispatch.

Exit codes of `run`: 0 promoted, 1 reverted, 2 aborted (rolled back by a person or an error),
3 usage or configuration error. `ci-gate`: 0 pass, 1 fail, 2 inconclusive or no verdict, 3 usage.
The manual commands: 0 done, 1 refused (a finished rollout, failing gates) or not done, 3 usage.
"""

from __future__ import annotations

import sys

from infra.cli import EXIT_USAGE, UsageErrorParser
from rollout.cli import COMMANDS, add_ci_gate_flags, build_parser, cmd_ci_gate


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"rollout {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else 1 if args.command != "run" else 2


def rollback_main() -> int:
    return main(["rollback", *sys.argv[1:]])


def status_main() -> int:
    return main(["status", *sys.argv[1:]])


def abort_main() -> int:
    return main(["abort", *sys.argv[1:]])


def pause_main() -> int:
    return main(["pause", *sys.argv[1:]])


def resume_main() -> int:
    return main(["resume", *sys.argv[1:]])


def promote_main() -> int:
    return main(["promote", *sys.argv[1:]])


def ci_gate_main(argv: list[str] | None = None) -> int:
    """`canary-ci-gate`: the same as `python -m rollout ci-gate`, with usage errors exiting 3."""
    parser = UsageErrorParser(prog="canary-ci-gate", description="Canary gates as a pull-request check.")
    add_ci_gate_flags(parser)
    return cmd_ci_gate(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
