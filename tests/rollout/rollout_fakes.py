"""Stand-ins at the rollout's own interfaces: an in-memory router, scripted gates, a manual clock,
ConfigMap calls (`rollout.kube`), a site of stand-in parts and a loopback HTTP receiver for hooks and
notifications; the test plan, a controller over a fresh state file, and the loops that advance it interval
by interval."""

import contextlib
import http.server
import itertools
import json
import threading
from dataclasses import replace

from gates.record import Evaluation, GateResult, overall
from rollout.controller import RolloutController, new_state
from rollout.kube import KubeConflict
from rollout.notify.delivery import Notifier
from rollout.plan import Profile
from rollout.routers.base import RouterUnavailable, Verification, WeightCheck, Weights
from rollout.sites.base import Site, SiteState
from rollout.state import FileStateStore

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


class ScriptedGates:
    """Answers verdicts from a script (the last one repeats) for two gates: `error_rate` always passes and
    `failing_gate` says the script's verdict; remembers every call's window, weights and streaks. `held` is
    a failure that hysteresis holds as inconclusive (its streak grows). With `table`, both gates carry what a
    real evaluation records and messages show (values per arm, threshold, interval, samples)."""

    variables: dict[str, str] = {}  # the gate file's variables: none

    def __init__(self, *verdicts, failing_gate="p99_latency", table=False):
        self.verdicts = list(verdicts)
        self.calls = []
        self.failing_gate = failing_gate
        self.table = table

    def evaluate(self, *, start, end, weights, streaks, looks=None):
        self.calls.append(
            {"start": start, "end": end, "weights": weights, "streaks": dict(streaks), "looks": looks}
        )
        verdict = self.verdicts.pop(0) if len(self.verdicts) > 1 else self.verdicts[0]
        if isinstance(verdict, Exception):
            raise verdict
        raw = "fail" if verdict == "held" else verdict
        shown = "inconclusive" if verdict == "held" else verdict
        streak = streaks.get(self.failing_gate, 0) + 1 if raw == "fail" else 0
        results = _table_results if self.table else _bare_results
        gates = results(self.failing_gate, verdict, shown, raw, streak)
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


def _bare_results(name, verdict, shown, raw, streak):
    """The two gates with only what the state machine reads, and one query, threshold and sample count."""
    return (
        GateResult("error_rate", "error_rate", "pass", "ok", "pass", "prometheus", {}, {}, {}, {}, {}),
        GateResult(
            name,
            "threshold",
            shown,
            f"{name} said {verdict}",
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


def _table_results(name, verdict, shown, raw, streak):
    """The two gates as a real evaluation records them: the failing one's canary value follows the verdict."""
    canary = {"pass": 0.45, "fail": 0.93, "held": 0.93, "inconclusive": None}[verdict]
    return (
        GateResult(
            "error_rate",
            "error_rate",
            "pass",
            "canary 0.02% below 0.1%",
            "pass",
            "prometheus",
            {},
            {"baseline": 0.0001, "canary": 0.0002},
            {"max": 0.001},
            {"canary_high": 0.0005},
            {"baseline": 900, "canary": 100},
        ),
        GateResult(
            name,
            "relative",
            shown,
            f"p99 {shown}",
            raw,
            "prometheus",
            {},
            {"baseline": 0.41, "canary": canary, "ratio": None if canary is None else canary / 0.41},
            {"max_ratio": 1.2},
            {"low": 1.01, "high": 1.3},
            {"baseline": 812, "canary": 95 if canary is not None else 3},
            consecutive_failures=streak,
        ),
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


class StandInServing:
    """A site's serving part in front of a stand-in router: nothing to start, reattach, retire or stop."""

    def __init__(self, router):
        self.router = router

    def start(self, run_dir, *, say):
        pass

    def attach(self, stack, router):
        pass

    def describe(self):
        return {"kind": "test"}

    def arms(self):
        return {"baseline": "stand-in", "canary": "stand-in"}

    def hook_context(self):
        return {}

    def dead_parts(self):
        return []

    def retire_canary(self, say):
        pass

    def teardown(self, say, *, keep_serving=False):
        pass


class StandInObservability:
    """A Prometheus nobody listens on; no gate file or variables of its own."""

    settle_s = 0.0
    prometheus_url = "http://127.0.0.1:9"

    def gate_config(self, gate_file, overrides):
        return None

    def variables(self, config):
        return {}

    def wait_for_data(self):
        pass


@contextlib.contextmanager
def _held_by_an_orchestrator():
    raise RuntimeError("an orchestrator holds this run")
    yield


def stand_in_site(router, store, *, held=False, site_type=Site):
    """A site of stand-in parts over `router` and a real `store`. `held`: an orchestrator holds the run (its
    lock cannot be taken), so the commands by hand leave announcing and finishing to it."""
    return site_type(
        kind="test",
        serving=StandInServing(router),
        observability=StandInObservability(),
        state=SiteState(store, lock=_held_by_an_orchestrator if held else None),
    )


class Receiver:
    """A loopback HTTP server recording every POST (path, JSON body) as it arrives; answers each with the
    next status of `statuses` (the last one repeats) after `delay_s`; `on_post` runs before answering."""

    def __init__(self):
        self.posts = []
        self.statuses = [200]
        self.delay_s = 0.0
        self.on_post = None
        self.release = threading.Event()  # ends a delay early (at teardown)
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.posts.append((self.path, body))
                if receiver.on_post is not None:
                    receiver.on_post(self.path, body)
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                receiver.release.wait(receiver.delay_s)
                with contextlib.suppress(OSError):  # the client may have given up waiting
                    self.send_response(status)
                    self.end_headers()
                    self.wfile.write(b"ok" if status < 400 else b"invalid_payload")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def bodies(self, path):
        return [body for p, body in self.posts if p == path]

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def make_controller(
    tmp_path,
    gates,
    *,
    router=None,
    clock=None,
    profile=PROFILE,
    run_id="r1",
    notify=(),
    stored_holder=None,
    **options,
):
    """A controller over a fresh state file in `tmp_path / "state"` (the run started at the clock's now),
    with a MemoryRouter and a ManualClock unless given: (controller, router, clock). The `notify` targets
    are recorded with the run and announced to; `stored_holder` is the lease the state file records already;
    `options` go to RolloutController (hooks, holder, progress, ...)."""
    clock = clock or ManualClock()
    router = router or MemoryRouter()
    store = FileStateStore(tmp_path / "state")
    state = new_state(run_id=run_id, profile=profile, router=router, stack={}, now=clock())
    store.save(replace(state, notifications=tuple(t.as_dict() for t in notify), holder=stored_holder))
    controller = RolloutController(
        store=store, router=router, gates=gates, clock=clock, notifier=Notifier(notify), **options
    )
    return controller, router, clock


def by_hand(store, change, clock, **kwargs):
    """What `rollout pause|resume|promote|rollback` do to the state store (run._apply, without a site):
    `change` (pause_locked, rollback_locked, ...) applied under the store's lock at the clock's now."""
    with store.locked():
        state = change(store.load(), now=clock(), **kwargs)
        store.save(state)
    return state


def intervals(controller, clock):
    """The controller's states, advance() once per PROFILE interval of the manual clock, for ever."""
    while True:
        yield controller.advance()
        clock.tick(PROFILE.interval_s)


def advance(controller, clock, times):
    """advance() `times` times, one PROFILE interval apart; the last state."""
    *_, state = itertools.islice(intervals(controller, clock), times)
    return state


def advance_until(controller, clock, done, limit=100):
    """advance() once per PROFILE interval until `done(state)`."""
    for state in itertools.islice(intervals(controller, clock), limit):
        if done(state):
            return state
    raise AssertionError(f"not done after {limit} intervals: {state.phase}, paused {state.paused}")


def run_until_terminal(controller, clock, limit=100):
    """advance() once per PROFILE interval until the rollout is decided."""
    return advance_until(controller, clock, lambda state: state.phase.terminal, limit)
