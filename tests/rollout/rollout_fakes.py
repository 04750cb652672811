"""Stand-ins at the rollout's own interfaces: an in-memory router, scripted gates, a manual clock, and
ConfigMap calls (`rollout.kube`); the test plan and the loop that runs it to a decision."""

from gates.record import Evaluation, GateResult, overall
from rollout.kube import KubeConflict
from rollout.plan import Profile
from rollout.routers.base import RouterUnavailable, Verification, WeightCheck, Weights

# The plan the state-machine tests run: three steps, baked 3, 2 and 1 intervals.
PROFILE = Profile(
    name="test",
    steps=(10, 50, 100),
    bake_s=(30.0, 20.0, 10.0),
    interval_s=10.0,
    settle_s=2.0,
    request_rate=10.0,
)


class MemoryRouter:
    name = "memory"

    def __init__(self, weights=None):
        self.weights = weights or Weights(100, 0)
        self.history = []
        self.down = False

    def set_weights(self, weights):
        if self.down:
            raise RouterUnavailable("memory router is down")
        self.weights = weights
        self.history.append((weights.baseline, weights.canary))

    def get_weights(self):
        if self.down:
            raise RouterUnavailable("memory router is down")
        return self.weights

    def verify_weights(self, expected):
        if self.down:
            return Verification(WeightCheck.UNKNOWN, "memory router is down")
        return Verification(WeightCheck.MATCHES if self.weights == expected else WeightCheck.DIFFERS)

    def describe(self):
        return {"kind": "memory"}

    def finalize(self):
        pass


class ScriptedGates:
    """Answers verdicts from a script (the last one repeats); remembers every call's window, weights and
    streaks. `held` is a failure that hysteresis holds as inconclusive (its streak grows)."""

    def __init__(self, *verdicts, failing_gate="p99_latency"):
        self.verdicts = list(verdicts)
        self.calls = []
        self.failing_gate = failing_gate

    def evaluate(self, *, start, end, weights, streaks):
        self.calls.append({"start": start, "end": end, "weights": weights, "streaks": dict(streaks)})
        verdict = self.verdicts.pop(0) if len(self.verdicts) > 1 else self.verdicts[0]
        if isinstance(verdict, Exception):
            raise verdict
        raw = "fail" if verdict == "held" else verdict
        shown = "inconclusive" if verdict == "held" else verdict
        streak = streaks.get(self.failing_gate, 0) + 1 if raw == "fail" else 0
        gates = (
            GateResult("error_rate", "error_rate", "pass", "ok", "pass", "prometheus", {}, {}, {}, {}, {}),
            GateResult(
                self.failing_gate,
                "threshold",
                shown,
                f"{self.failing_gate} said {verdict}",
                raw,
                "prometheus",
                {"canary": {"value": "up"}},
                {},
                {"max": 1.0},
                {},
                {"baseline": 400, "canary": 40},
                consecutive_failures=streak,
            ),
        )
        verdict_all, reason = overall(gates)
        return Evaluation(
            verdict=verdict_all,
            reason=reason,
            gates=gates,
            profile="test",
            start=start,
            end=end,
            weights=weights.as_dict(),
            offered_rps=None,
            prometheus_url="",
            evaluated_at=end,
        )


class ManualClock:
    def __init__(self, start=1_000_000.0):
        self.now = start

    def __call__(self):
        return self.now

    def tick(self, seconds):
        self.now += seconds


class FakeConfigMaps:
    """`rollout.kube`'s ConfigMap calls with resourceVersion semantics; `before_write` runs once before
    the next write (another writer's save landing between our read and our write)."""

    def __init__(self):
        self.data, self.version = {}, 1
        self.before_write = None

    def get_configmap(self, *, context, namespace, name):
        assert (namespace, name) == ("ml", "demo-rollout-state")
        return dict(self.data), str(self.version)

    def replace_configmap_data(self, *, context, namespace, name, data, resource_version):
        if self.before_write is not None:
            interleaved, self.before_write = self.before_write, None
            interleaved()
        if resource_version != str(self.version):
            raise KubeConflict(f"update ConfigMap {namespace}/{name}: conflict")
        self.data, self.version = dict(data), self.version + 1
        return str(self.version)


def run_until_terminal(controller, clock, limit=100):
    """advance() once per PROFILE interval until the rollout is decided."""
    state = controller.advance()
    for _ in range(limit):
        if state.phase.terminal:
            return state
        clock.tick(PROFILE.interval_s)
        state = controller.advance()
    raise AssertionError(f"not terminal after {limit} intervals: {state.phase}")
