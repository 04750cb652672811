"""Gate evaluator: fetch per-arm series from Prometheus (and load-test samples), judge them with pure
statistics, return a verdict record. `python -m gates` evaluates once; docs/gates.md has the details."""

from gates.config import GateConfig, GateConfigError, GateSpec, load_gate_file, parse_gate_document
from gates.evaluate import evaluate
from gates.record import Evaluation, GateResult

__all__ = [
    "Evaluation",
    "GateConfig",
    "GateConfigError",
    "GateResult",
    "GateSpec",
    "evaluate",
    "load_gate_file",
    "parse_gate_document",
]
