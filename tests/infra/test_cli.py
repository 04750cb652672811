import subprocess
import sys

import pytest

from infra.cli import EXIT_USAGE, UsageErrorParser


def test_bad_option_exits_with_the_usage_code_and_names_it(capsys):
    parser = UsageErrorParser(prog="demo")
    parser.add_argument("--rate", type=float)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--rate", "fast"])
    assert exc.value.code == EXIT_USAGE == 3
    assert "--rate" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["rollout"],
        ["rollout", "run", "--no-such-flag"],
        ["rollout", "rollback", "--bogus"],
        ["gates", "--bogus"],
    ],
)
def test_commands_exit_3_on_usage_errors_not_argparse_2(argv):
    # 2 means aborted (rollout) or inconclusive (gates); a typo must never read as either.
    proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "error:" in proc.stderr
