"""Stand-ins at the rollout's own interfaces: an in-memory router, scripted gates, a manual clock."""

from rollout.gating import GateResult
from rollout.routers.base import RouterUnavailable, WeightCheck, Weights


class MemoryRouter:
    name = "memory"

    def __init__(self, weights=None):
        self.weights = weights or Weights(100, 0)
        self.history = []
        self.down = False

    def set_weights(self, baseline, canary):
        if self.down:
            raise RouterUnavailable("memory router is down")
        self.weights = Weights(baseline, canary)
        self.history.append((baseline, canary))

    def get_weights(self):
        if self.down:
            raise RouterUnavailable("memory router is down")
        return self.weights

    def verify_weights(self, expected):
        if self.down:
            return WeightCheck.UNKNOWN
        return WeightCheck.MATCHES if self.weights == expected else WeightCheck.DIFFERS

    def describe(self):
        return {"kind": "memory"}


class ScriptedGates:
    """Answers verdicts from a script (the last one repeats); remembers every call's window and weights."""

    def __init__(self, *verdicts, failing_gate="p99_latency"):
        self.verdicts = list(verdicts)
        self.calls = []
        self.failing_gate = failing_gate

    def evaluate(self, *, start, end, weights, previous):
        self.calls.append({"start": start, "end": end, "weights": weights, "previous": list(previous)})
        verdict = self.verdicts.pop(0) if len(self.verdicts) > 1 else self.verdicts[0]
        if isinstance(verdict, Exception):
            raise verdict
        gate_verdicts = (("error_rate", "pass"), (self.failing_gate, verdict))
        record = {"verdict": verdict, "gates": [{"name": n, "verdict": v} for n, v in gate_verdicts]}
        return GateResult(verdict=verdict, record=record, gate_verdicts=gate_verdicts, raw=object())


class ManualClock:
    def __init__(self, start=1_000_000.0):
        self.now = start

    def __call__(self):
        return self.now

    def tick(self, seconds):
        self.now += seconds
