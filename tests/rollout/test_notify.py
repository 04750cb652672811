"""Notifications: the real controller (stand-in router and gates at its own interfaces, a real state file)
sending Slack-style and JSON webhook messages to a real HTTP receiver on loopback."""

import fcntl
import json
import threading
import time
from dataclasses import dataclass, replace

import pytest
from rollout_fakes import (
    PROFILE,
    ManualClock,
    MemoryRouter,
    ScriptedGates,
    advance,
    by_hand,
    make_controller,
    run_until_terminal,
    stand_in_site,
)

from infra.net import free_port
from rollout.controller import new_state, rollback_locked
from rollout.events import HooksDone, Notification, Rollback, StepStarted, Takeover, WeightsSet
from rollout.hooks import load_hooks, load_notifications
from rollout.notify.delivery import Notifier, deliver
from rollout.notify.notices import EVENTS, Notice, NoticeKind, notices_between
from rollout.notify.slack import slack_message
from rollout.notify.targets import NotifyTarget
from rollout.plan import Phase, Profile
from rollout.report import decision_record
from rollout.routers.base import Weights
from rollout.sites.base import Site
from rollout.state import FileStateStore, Holder

SECRET_PATH = "/services/T0000/B0000/s3cr3t"  # what a Slack webhook URL's secret part looks like


def target(name, kind="webhook", env=None, **options):
    options.setdefault("backoff_s", 0.01)
    options.setdefault("timeout_s", 2.0)
    return NotifyTarget(name=name, type=kind, url_env=env or f"TEST_NOTIFY_{name.upper()}", **options)


def table_gates(*verdicts):
    """Scripted verdicts for `p99_latency` (`error_rate` passes), carrying the table messages show."""
    return ScriptedGates(*verdicts, table=True)


def notify_events(state):
    return [e for e in state.events if isinstance(e, Notification)]


def without_notify(state):
    """The decision's record, notifications left out (what must not change whatever they do)."""
    return (
        state.phase,
        state.outcome,
        state.reason,
        [replace(e, at=0.0) for e in state.events if not isinstance(e, Notification)],
        [e.to_dict() for e in state.evaluations],
    )


# -- configuration ----------------------------------------------------------------------------------
def test_the_hooks_file_carries_notifications_beside_hooks(tmp_path):
    path = tmp_path / "hooks.yaml"
    path.write_text(
        "hooks:\n  - {kind: rollback, command: [echo, hi]}\n"
        "notifications:\n"
        "  - {name: team-slack, type: slack, url_env: SLACK_WEBHOOK_URL, events: [promoted, reverted]}\n"
        "  - {type: webhook, url_file: /etc/rollout-notify/audit-url, timeout_s: 2, attempts: 5,"
        " backoff_s: 0.5, budget_s: 20}\n"
    )
    assert len(load_hooks(path)) == 1
    slack, audit = load_notifications(path)
    assert (slack.name, slack.type, slack.url_env, slack.events) == (
        "team-slack",
        "slack",
        "SLACK_WEBHOOK_URL",
        ("promoted", "reverted"),
    )
    assert audit.name == "webhook-2" and audit.events == EVENTS and audit.attempts == 5
    assert audit.as_dict()["url_file"] == "/etc/rollout-notify/audit-url" and "url" not in audit.as_dict()
    path.write_text("notifications:\n  - {type: webhook, url_env: HOOK_URL}\n")  # no hooks: none run
    assert load_hooks(path) == () and load_notifications(path)[0].url_env == "HOOK_URL"
    path.write_text("hooks: []\n")
    assert load_notifications(path) == ()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{type: slack, url: 'https://hooks.slack.com/services/T/B/x'}", r"literal url is refused.*url_env"),
        ("{type: slack, url_env: SLACK_URL, channel: '#ops'}", r"unknown key\(s\) \['channel'\]"),
        ("{type: slack, url_env: SLACK_URL, events: [promote]}", r"'promote'.*known events are"),
        ("{type: slack, url_env: SLACK_URL, events: promoted}", "events must be a list"),
        ("{type: teams, url_env: TEAMS_URL}", r"type 'teams' is not one of \('slack', 'webhook'\)"),
        ("{type: webhook}", "exactly one of url_env"),
        ("{type: webhook, url_env: A, url_file: /b}", "exactly one of url_env"),
        ("{type: webhook, url_env: 'not a name'}", "not an environment variable name"),
        ("{type: webhook, url_env: A, attempts: 0}", "attempts 0 must be an integer >= 1"),
        ("{type: webhook, url_env: A, timeout_s: 0}", "timeout_s and budget_s must be > 0"),
    ],
)
def test_invalid_notifications_are_refused_naming_the_file_and_entry(tmp_path, entry, message):
    path = tmp_path / "hooks.yaml"
    path.write_text(f"notifications:\n  - {{type: webhook, url_env: OK}}\n  - {entry}\n")
    with pytest.raises(ValueError, match=message) as raised:
        load_notifications(path)
    assert f"hooks file {path}: notifications[1]" in str(raised.value)


def test_other_file_level_mistakes_are_refused(tmp_path):
    path = tmp_path / "hooks.yaml"
    path.write_text("hooks: []\nnotification: []\n")
    with pytest.raises(ValueError, match=r"unknown top-level key\(s\) \['notification'\]"):
        load_hooks(path)
    path.write_text("notifications: {type: slack}\n")
    with pytest.raises(ValueError, match="must be a list of targets"):
        load_notifications(path)
    path.write_text(
        "notifications:\n  - {name: a, type: slack, url_env: A}\n  - {name: a, type: webhook, url_env: B}\n"
    )
    with pytest.raises(ValueError, match=r"name\(s\) \['a'\] used more than once"):
        load_notifications(path)


# -- what each event sends ----------------------------------------------------------------------------
def test_a_promotion_announces_every_step_and_the_promotion_with_the_gate_table(
    tmp_path, receiver, monkeypatch
):
    monkeypatch.setenv("TEST_SLACK_URL", receiver.url(SECRET_PATH))
    monkeypatch.setenv("TEST_HOOK_URL", receiver.url("/hook"))
    path = tmp_path / "hooks.yaml"
    path.write_text(
        "notifications:\n"
        "  - {name: chat, type: slack, url_env: TEST_SLACK_URL, events: [step-passed, promoted]}\n"
        "  - {name: audit, type: webhook, url_env: TEST_HOOK_URL, backoff_s: 0.01}\n"
    )
    controller, _, clock = make_controller(tmp_path, table_gates("pass"), notify=load_notifications(path))
    run_until_terminal(controller, clock)
    state = controller.store.load()
    assert state.phase is Phase.PROMOTED

    hook = receiver.bodies("/hook")
    assert [(b["event"], b["step"]) for b in hook] == [
        ("step-started", 0),
        ("step-passed", 0),
        ("step-started", 1),
        ("step-passed", 1),
        ("step-started", 2),
        ("step-passed", 2),
        ("promoted", 2),
    ]
    started, passed, promoted = hook[0], hook[1], hook[-1]
    assert started["weights"] == {"baseline": 90, "canary": 10} and started["evaluation"] is None
    assert passed["schema"] == "rollout-notification/v1" and passed["run_id"] == "r1"
    assert (passed["phase"], passed["who"], passed["canary_weight"]) == ("progressing", "rollout", 10)
    last_at_10 = [e for e in state.evaluations if e.step == 0][-1]
    assert passed["evaluation"] == json.loads(json.dumps(last_at_10.to_dict()))  # the record, whole
    assert passed["evaluation"]["evaluation"]["gates"][1]["values"]["canary"] == 0.45
    assert promoted["phase"] == "promoted" and promoted["weights"] == {"baseline": 0, "canary": 100}
    assert promoted["reason"] == "all 3 steps passed" and promoted["failing_gates"] == []

    slack = receiver.bodies(SECRET_PATH)
    assert [m["blocks"][0]["text"]["text"] for m in slack] == [
        "Rollout r1: step 1/3 passed at 10% canary",
        "Rollout r1: step 2/3 passed at 50% canary",
        "Rollout r1: step 3/3 passed at 100% canary",
        "Rollout r1: promoted: 100% canary",
    ]
    gates = [b for b in slack[0]["blocks"] if b["type"] == "section" and "fields" in b]
    assert [g["text"]["text"].split("\n")[0] for g in gates] == [
        ":white_check_mark: *error_rate*: *PASS*",
        ":white_check_mark: *p99_latency*: *PASS*",
    ]
    p99 = [f["text"] for f in gates[1]["fields"]]
    assert p99[:5] == [
        "*Canary*\n0.45",
        "*Baseline*\n0.41",
        "*Threshold*\nmax_ratio: 1.2",
        "*Interval*\nlow: 1.01\nhigh: 1.3",
        "*Samples (baseline/canary)*\n812/95",
    ]
    assert p99[5] == "*Compared*\nratio: 1.098"
    text = slack[0]["text"]  # the mrkdwn fallback carries the same table
    assert "• `p99_latency` *PASS*: canary 0.45, baseline 0.41, threshold max_ratio: 1.2" in text
    assert "samples 812/95" in text and "run `r1`" in text

    notes = notify_events(state)
    assert len(notes) == len(hook) + len(slack)
    assert all(n.ok and n.attempts == 1 and n.detail == "HTTP 200" for n in notes)
    assert [n.event for n in notes if n.target == "chat"] == ["step-passed"] * 3 + ["promoted"]
    recorded = [e for e in decision_record(state, None)["events"] if e["kind"] == "notify"]
    assert recorded == [n.to_dict() for n in notes]
    # The URL is a secret: the state (and so decision.json) names only where it comes from.
    stored = (tmp_path / "state" / "state.json").read_text()
    assert SECRET_PATH not in stored and "TEST_SLACK_URL" in stored


def test_a_failing_gate_reverts_and_the_message_names_it(tmp_path, receiver, monkeypatch):
    monkeypatch.setenv("TEST_NOTIFY_AUDIT", receiver.url("/hook"))
    monkeypatch.setenv("TEST_NOTIFY_CHAT", receiver.url("/slack"))
    targets = (target("audit"), target("chat", "slack", events=("reverted",)))
    controller, _, clock = make_controller(
        tmp_path, table_gates("pass", "pass", "pass", "fail"), notify=targets
    )
    run_until_terminal(controller, clock)
    state = controller.store.load()
    assert state.phase is Phase.REVERTED

    reverted = receiver.bodies("/hook")[-1]
    assert reverted["event"] == "reverted" and reverted["phase"] == "reverted"
    assert reverted["failing_gates"] == ["p99_latency"] and "p99_latency" in reverted["reason"]
    assert reverted["weights"] == {"baseline": 100, "canary": 0} and reverted["canary_weight"] == 50
    assert reverted["detail"]["weights_before"] == {"baseline": 50, "canary": 50}
    gates = {g["name"]: g["verdict"] for g in reverted["evaluation"]["evaluation"]["gates"]}
    assert gates == {"error_rate": "pass", "p99_latency": "fail"}

    (chat,) = receiver.bodies("/slack")
    assert chat["blocks"][0]["text"]["text"] == "Rollout r1: REVERTED at 50% canary"
    assert "*Failing gates:* `p99_latency`" in chat["blocks"][1]["text"]["text"]
    failing = [b for b in chat["blocks"] if "fields" in b and "p99_latency" in b["text"]["text"]]
    assert failing[0]["text"]["text"].startswith(":x: *p99_latency*: *FAIL*")
    assert failing[0]["fields"][0]["text"] == "*Canary*\n0.93"
    assert "*Failing gates:* `p99_latency`" in chat["text"]


def test_an_inconclusive_hold_past_the_bake_is_announced_once(tmp_path, receiver, monkeypatch):
    monkeypatch.setenv("TEST_NOTIFY_AUDIT", receiver.url("/hook"))
    profile = replace(PROFILE, max_bake_s=(60.0, 40.0, 30.0))
    # t=10 inconclusive inside the bake (nothing held), t=30 and t=40 inconclusive past it, t=50 passes.
    gates = table_gates("inconclusive", "pass", "inconclusive", "inconclusive", "pass")
    controller, _, clock = make_controller(tmp_path, gates, notify=(target("audit"),), profile=profile)
    state = advance(controller, clock, 6)
    assert state.step_index == 1
    events = [(b["event"], b["step"]) for b in receiver.bodies("/hook")]
    assert events == [("step-started", 0), ("held-inconclusive", 0), ("step-passed", 0), ("step-started", 1)]
    held = receiver.bodies("/hook")[1]
    assert held["detail"] == {
        "inconclusive_gates": ["p99_latency"],
        "inconclusive_count": 1,
        "max_bake_s": 60.0,
    }
    assert held["evaluation"]["verdict"] == "inconclusive" and held["weights"] == {
        "baseline": 90,
        "canary": 10,
    }
    assert held["at"] == state.evaluations[2].at


def test_a_step_without_a_decision_at_its_maximum_bake_announces_the_pause(tmp_path, receiver, monkeypatch):
    monkeypatch.setenv("TEST_NOTIFY_AUDIT", receiver.url("/hook"))
    profile = replace(PROFILE, max_bake_s=(40.0, 40.0, 40.0))
    controller, _, clock = make_controller(
        tmp_path, table_gates("inconclusive"), notify=(target("audit"),), profile=profile
    )
    state = advance(controller, clock, 6)  # t=40: the 10% step's maximum bake
    assert state.paused is not None and state.paused["who"] == "rollout"
    events = [(b["event"], b["step"]) for b in receiver.bodies("/hook")]
    assert events == [("step-started", 0), ("held-inconclusive", 0), ("paused", 0)]
    paused = receiver.bodies("/hook")[2]
    assert paused["who"] == "rollout" and "maximum bake of 40s" in paused["reason"]
    assert "p99_latency" in paused["reason"]


def test_a_rollback_by_hand_says_who_and_why(tmp_path, receiver, monkeypatch):
    monkeypatch.setenv("TEST_NOTIFY_AUDIT", receiver.url("/hook"))
    monkeypatch.setenv("TEST_NOTIFY_CHAT", receiver.url("/slack"))
    targets = (target("audit"), target("chat", "slack", events=("rolled-back",)))
    controller, _, clock = make_controller(tmp_path, table_gates("pass"), notify=targets)
    advance(controller, clock, 2)
    state = controller.rollback(who="alice@laptop", reason="pager went off")
    assert state.phase is Phase.ABORTED
    rolled = receiver.bodies("/hook")[-1]
    assert (rolled["event"], rolled["who"], rolled["reason"]) == (
        "rolled-back",
        "alice@laptop",
        "pager went off",
    )
    assert rolled["phase"] == "aborted" and rolled["weights"] == {"baseline": 100, "canary": 0}
    assert rolled["detail"]["weights_before"] == {"baseline": 90, "canary": 10}
    (chat,) = receiver.bodies("/slack")
    assert chat["blocks"][0]["text"]["text"] == "Rollout r1: rolled back at 10% canary by alice@laptop"
    assert "*Who:* alice@laptop" in chat["text"] and "*Reason:* pager went off" in chat["text"]
    assert notify_events(state)[-1].event == "rolled-back" and notify_events(state)[-1].ok
    posts = len(receiver.posts)
    controller.rollback(who="bob", reason="double-check")  # changes nothing: nothing announced
    assert len(receiver.posts) == posts


def live_holder(name, clock, lease_s=60.0):
    return Holder(
        id=name, host="orchestrator-host", pid=1, pod=f"rollout-{name}", heartbeat_at=clock(), lease_s=lease_s
    )


def test_commands_by_hand_are_announced_by_the_orchestrator_holding_the_run_or_else_by_themselves(
    tmp_path, receiver, monkeypatch
):
    from rollout.run import pause, promote

    monkeypatch.setenv("TEST_NOTIFY_AUDIT", receiver.url("/hook"))
    clock = ManualClock(time.time())  # the holder's lease is judged against real time by a command
    controller, _, _ = make_controller(tmp_path, table_gates("pass"), notify=(target("audit"),), clock=clock)
    controller.holder = live_holder("a", clock)
    advance(controller, clock, 2)
    site = stand_in_site(controller.router, controller.store, held=True)
    posts = len(receiver.posts)
    pause(site, who="carol", reason="checking a dashboard", say=lambda _line: None)
    assert len(receiver.posts) == posts  # the orchestrator holds the run: it announces, with its secrets
    clock.tick(PROFILE.interval_s)
    controller.advance()
    paused = receiver.bodies("/hook")[-1]
    assert (paused["event"], paused["who"], paused["reason"]) == ("paused", "carol", "checking a dashboard")
    assert [b["event"] for b in receiver.bodies("/hook")].count("paused") == 1

    controller.release()  # nobody holds the run now: the command announces what it did itself
    promoted = promote(site, reports_dir=None, who="dave", reason="ship it", say=lambda _line: None)
    last = receiver.bodies("/hook")[-1]
    assert (last["event"], last["who"], last["phase"]) == ("promoted", "dave", "promoted")
    assert last["reason"] == "promoted by hand at 10%: ship it" and last["failing_gates"] == []
    assert notify_events(promoted)[-1].event == "promoted" and notify_events(promoted)[-1].ok


def test_a_takeover_after_a_lapsed_heartbeat_announces_the_lost_orchestrator(tmp_path, receiver, monkeypatch):
    monkeypatch.setenv("TEST_NOTIFY_AUDIT", receiver.url("/hook"))
    clock = ManualClock()
    lapsed = replace(live_holder("old", clock), heartbeat_at=clock() - 200.0)
    controller, _, _ = make_controller(
        tmp_path,
        table_gates("pass"),
        notify=(target("audit"),),
        clock=clock,
        holder=live_holder("new", clock),
        stored_holder=lapsed,
    )
    state = controller.advance()
    takeover = state.last_event(Takeover)
    assert takeover.previous == "pod rollout-old" and takeover.holder == "pod rollout-new"
    lost = receiver.bodies("/hook")[0]
    assert lost["event"] == "orchestrator-lost" and lost["who"] == "pod rollout-new"
    assert lost["detail"] == {
        "previous": "pod rollout-old",
        "heartbeat_age_s": 200.0,
        "lease_s": 60.0,
        "holder": "pod rollout-new",
    }
    assert "pod rollout-old stopped renewing its lease (last heartbeat 200s ago, lease 60s)" in lost["reason"]
    clock.tick(PROFILE.interval_s)
    controller.advance()  # its own lease now: no second takeover
    assert [b["event"] for b in receiver.bodies("/hook")].count("orchestrator-lost") == 1


# -- failures decide nothing --------------------------------------------------------------------------
def test_a_receiver_that_is_down_changes_no_decision_and_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_NOTIFY_AUDIT", f"http://127.0.0.1:{free_port()}{SECRET_PATH}")  # nobody listens
    script = ("pass", "pass", "pass", "fail")
    quiet, _, clock = make_controller(tmp_path / "quiet", table_gates(*script))
    expected = without_notify(run_until_terminal(quiet, clock))
    said = []
    controller, _, clock = make_controller(
        tmp_path / "loud",
        table_gates(*script),
        notify=(target("audit", attempts=3),),
        progress=lambda _state, message: said.append(message),
    )
    state = run_until_terminal(controller, clock)
    assert without_notify(controller.store.load()) == expected and state.phase is Phase.REVERTED
    notes = notify_events(controller.store.load())
    assert [n.event for n in notes] == ["step-started", "step-passed", "step-started", "reverted"]
    assert all(not n.ok and n.attempts == 3 and "unreachable" in n.detail for n in notes)
    assert any("notification reverted to audit failed (3 attempt(s)): unreachable" in m for m in said)
    assert SECRET_PATH not in json.dumps([n.to_dict() for n in notes])


def test_a_500_is_retried_with_backoff_and_the_attempts_recorded(tmp_path, receiver, monkeypatch):
    monkeypatch.setenv("TEST_NOTIFY_AUDIT", receiver.url("/hook"))
    receiver.statuses = [500, 502, 200]
    audit = target("audit", attempts=4, backoff_s=0.05, events=("promoted",))
    controller, _, clock = make_controller(tmp_path, table_gates("pass"), notify=(audit,))
    began = time.monotonic()
    run_until_terminal(controller, clock)
    assert time.monotonic() - began >= 0.05 + 0.1  # waited 0.05 s, then 0.1 s
    state = controller.store.load()
    assert state.phase is Phase.PROMOTED
    (note,) = notify_events(state)
    assert (note.event, note.ok, note.attempts, note.detail) == ("promoted", True, 3, "HTTP 200")
    bodies = receiver.bodies("/hook")
    assert len(bodies) == 3 and bodies[0] == bodies[2]  # the same message each time


def test_a_client_error_is_not_retried_and_its_detail_hides_the_url(receiver, monkeypatch):
    monkeypatch.setenv("TEST_NOTIFY_CHAT", receiver.url(SECRET_PATH))
    receiver.statuses = [404]  # Slack's answer to a revoked webhook: retrying cannot help
    notice = Notice(
        event="promoted",
        run_id="r",
        phase="promoted",
        step=0,
        steps=(100,),
        weights=Weights(0, 100),
        reason="all 1 steps passed",
        who="rollout",
        at=0.0,
    )
    done = deliver(target("chat", "slack", attempts=3), notice, deadline=time.monotonic() + 5)
    assert (done.ok, done.attempts, done.detail) == (False, 1, "HTTP 404: invalid_payload")
    assert len(receiver.posts) == 1
    monkeypatch.setenv("TEST_NOTIFY_CHAT", "ftp://example/secret")
    done = deliver(target("chat", "slack"), notice, deadline=time.monotonic() + 5)
    assert (done.ok, done.attempts, done.detail) == (
        False,
        0,
        "$TEST_NOTIFY_CHAT does not hold an http(s) URL",
    )


def test_a_slow_receiver_is_cut_off_at_the_timeout_and_the_budget(tmp_path, receiver, monkeypatch):
    monkeypatch.setenv("TEST_NOTIFY_AUDIT", receiver.url("/hook"))
    receiver.delay_s = 5.0
    audit = target("audit", timeout_s=0.3, attempts=2, events=("step-started", "step-passed"))
    controller, _, clock = make_controller(tmp_path, table_gates("pass"), notify=(audit,))
    began = time.monotonic()
    state = controller.advance()
    took = time.monotonic() - began
    assert state.step_index == 0 and controller.router.weights == Weights(90, 10)
    (note,) = notify_events(state)
    assert (note.ok, note.attempts, note.detail) == (False, 2, "no answer within 0.3s")
    assert 0.6 <= note.elapsed_s <= took < 3.0
    # A batch never takes longer than the target's budget, whatever its attempts and timeouts.
    budget = target("audit", timeout_s=0.3, attempts=10, budget_s=0.5)
    clock.tick(30.0)  # the step passes and the next starts: two messages
    controller.notifier = Notifier((budget,))
    began = time.monotonic()
    state = controller.advance()
    assert state.step_index == 1 and time.monotonic() - began < 1.5
    passed, started = notify_events(state)[-2:]
    assert passed.attempts >= 1 and "budget for this batch ran out" in passed.detail
    assert (started.attempts, started.detail) == (
        0,
        "not sent: the target's 0.5s budget for this batch ran out",
    )


def test_a_missing_secret_is_a_recorded_failure_and_a_mounted_file_works(tmp_path, receiver, monkeypatch):
    monkeypatch.delenv("TEST_NOTIFY_AUDIT", raising=False)
    url_file = tmp_path / "secret" / "url"
    url_file.parent.mkdir()
    url_file.write_text(receiver.url("/from-file") + "\n")  # as a Secret's key is mounted
    mounted = NotifyTarget(name="mounted", type="webhook", url_file=str(url_file), events=("step-started",))
    missing = target("audit", events=("step-started",))
    controller, _, _ = make_controller(tmp_path, table_gates("pass"), notify=(missing, mounted))
    assert Notifier((missing, mounted)).problems() == [
        "target audit: environment variable TEST_NOTIFY_AUDIT is not set: no URL to send to"
    ]
    state = controller.advance()
    assert state.phase is Phase.PROGRESSING and controller.router.weights == Weights(90, 10)
    by_target = {n.target: n for n in notify_events(state)}
    assert by_target["audit"].ok is False and by_target["audit"].attempts == 0
    assert by_target["audit"].detail == "environment variable TEST_NOTIFY_AUDIT is not set: no URL to send to"
    assert by_target["mounted"].ok and [b["event"] for b in receiver.bodies("/from-file")] == ["step-started"]
    url_file.write_text("not a url")
    missing_file = NotifyTarget(name="gone", type="webhook", url_file=str(tmp_path / "nope"))
    assert Notifier((mounted, missing_file)).problems() == [
        f"target mounted: file {url_file} does not hold an http(s) URL",
        f"target gone: URL file {tmp_path / 'nope'}: No such file or directory",
    ]


def test_the_state_lock_is_free_while_sending_and_a_rollback_meanwhile_is_announced(
    tmp_path, receiver, monkeypatch
):
    monkeypatch.setenv("TEST_NOTIFY_AUDIT", receiver.url("/hook"))
    controller, _, clock = make_controller(tmp_path, table_gates("pass"), notify=(target("audit"),))
    store = controller.store
    lock_free = []

    def rollback_while_sending(_path, body):
        if body["event"] != "step-started":
            return
        with open(store.directory / "state.lock", "a") as handle:
            try:  # another process's `rollout rollback` would take this lock
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock_free.append(False)
                return
            lock_free.append(True)
            state = rollback_locked(
                store.load(),
                router=controller.router,
                hooks=(),
                who="oncall",
                reason="bad deploy",
                outcome=Phase.ABORTED,
                now=clock(),
            )
            store.save(state)
            fcntl.flock(handle, fcntl.LOCK_UN)

    receiver.on_post = rollback_while_sending
    state = controller.advance()
    assert lock_free == [True]
    assert state.phase is Phase.ABORTED and controller.router.weights == Weights(100, 0)
    kinds = [type(e) for e in state.events]
    assert kinds == [StepStarted, HooksDone, WeightsSet, Rollback, Notification, Notification]  # all kept
    assert [b["event"] for b in receiver.bodies("/hook")] == ["step-started", "rolled-back"]
    assert receiver.bodies("/hook")[1]["who"] == "oncall"


def test_a_decision_by_hand_between_intervals_is_announced_once_by_the_orchestrator(
    tmp_path, receiver, monkeypatch
):
    monkeypatch.setenv("TEST_NOTIFY_AUDIT", receiver.url("/hook"))
    controller, _, clock = make_controller(tmp_path, table_gates("pass"), notify=(target("audit"),))
    advance(controller, clock, 2)
    by_hand(
        controller.store,
        rollback_locked,
        clock,
        router=controller.router,
        hooks=(),
        who="bob",
        reason="r",
        outcome=Phase.ABORTED,
    )
    clock.tick(PROFILE.interval_s)
    assert controller.advance().phase is Phase.ABORTED
    clock.tick(PROFILE.interval_s)
    controller.advance()
    assert [b["event"] for b in receiver.bodies("/hook")] == ["step-started", "rolled-back"]


def test_every_notice_kind_has_a_title_and_a_target_names_kinds_as_written():
    titles = set()
    for kind in EVENTS:
        notice = Notice(kind.value, "r", "progressing", 0, (10, 100), Weights(90, 10), "why", "ann", 0.0)
        assert notice.event is kind and notice.to_dict()["event"] == kind.value
        titles.add(notice.title())
    assert len(titles) == len(NoticeKind)
    chat = target("chat", "slack", events=("promoted", "reverted"))
    assert chat.events == (NoticeKind.PROMOTED, NoticeKind.REVERTED)
    assert chat.wants(NoticeKind.REVERTED) and not chat.wants(NoticeKind.STEP_STARTED)
    assert chat.as_dict()["events"] == ["promoted", "reverted"] and json.dumps(chat.as_dict())


# -- rendering limits ---------------------------------------------------------------------------------
def test_slack_messages_keep_within_block_kit_limits_and_escape_mrkdwn(tmp_path):
    controller, _, clock = make_controller(tmp_path, table_gates("pass"))
    advance(controller, clock, 2)
    state = controller.store.load()
    entry = state.evaluations[-1]
    many = tuple(replace(entry.evaluation.gates[0], name=f"gate_{i}") for i in range(60))
    big = replace(state, evaluations=(replace(entry, evaluation=replace(entry.evaluation, gates=many)),))
    before = replace(big, evaluations=(), events=())
    rolled = rollback_locked(
        big,
        router=controller.router,
        hooks=(),
        who="a <b> & c",
        reason="x",
        outcome=Phase.ABORTED,
        now=clock(),
    )
    (notice,) = [n for n in notices_between(before, rolled) if n.event == "rolled-back"]
    message = slack_message(notice)
    assert len(message["blocks"]) == 50
    assert message["blocks"][-1]["elements"][0]["text"].endswith("more gate(s) in the run's decision.json")
    assert "*Who:* a &lt;b&gt; &amp; c" in message["blocks"][1]["text"]["text"]
    assert len(message["blocks"][0]["text"]["text"]) <= 150


# -- `rollout run`: the hooks file's targets recorded with the run, a takeover on resume -----------------
FAST = Profile(
    name="fast",
    steps=(50, 100),
    bake_s=(0.0, 0.0),
    interval_s=0.05,
    settle_s=0.0,
    request_rate=1.0,
)


@dataclass(frozen=True)
class RunSite(Site):
    """A site of stand-in parts (`stand_in_site`) whose gates pass: what `rollout.run.run` asks of a site."""

    def gates(self, config, *, offered_rps):
        return table_gates("pass")


def run_site(state_dir):
    return stand_in_site(MemoryRouter(), FileStateStore(state_dir), site_type=RunSite)


@pytest.fixture
def quiet_run(monkeypatch, tmp_path):
    """`rollout.run.run` without signal handlers or the plotted report (decision.json only)."""
    import rollout.run as run_module

    def report(site, state, reports_dir, config, summary):
        run_dir = reports_dir / state.run_id
        run_dir.mkdir(parents=True)
        (run_dir / "decision.json").write_text(json.dumps(decision_record(state, summary), default=str))
        return run_dir

    monkeypatch.setattr(run_module, "_stop_event_on_signals", threading.Event)
    monkeypatch.setattr(run_module, "_report", report)
    return run_module


def test_rollout_run_records_the_targets_and_announces_to_them(tmp_path, receiver, monkeypatch, quiet_run):
    monkeypatch.setenv("TEST_NOTIFY_AUDIT", receiver.url(SECRET_PATH))
    site = run_site(tmp_path / "state")
    plan = quiet_run.RunPlan(profile=FAST, reports_dir=tmp_path / "reports", notifications=(target("audit"),))
    state = quiet_run.run(site, plan, say=lambda _line: None)
    assert state.outcome is Phase.PROMOTED
    assert site.state.store.load().notifications == (target("audit").as_dict(),)
    events = [b["event"] for b in receiver.bodies(SECRET_PATH)]
    assert events == ["step-started", "step-passed", "step-started", "step-passed", "promoted"]
    decision = json.loads((tmp_path / "reports" / state.run_id / "decision.json").read_text())
    assert [e["event"] for e in decision["events"] if e["kind"] == "notify"] == events
    assert SECRET_PATH not in json.dumps(decision)


def test_rollout_run_resuming_from_a_lost_orchestrator_announces_the_takeover(
    tmp_path, receiver, monkeypatch, quiet_run
):
    monkeypatch.setenv("TEST_NOTIFY_AUDIT", receiver.url("/hook"))
    site = run_site(tmp_path / "state")
    now = time.time()
    lost = Holder(
        id="old", host="elsewhere", pid=1, pod="rollout-r1-old", heartbeat_at=now - 300, lease_s=60.0
    )
    started = new_state(run_id="r1", profile=FAST, router=site.router, stack={}, now=now - 400)
    started = replace(
        started,
        phase=Phase.PROGRESSING,
        step_started_at=now - 400,
        holder=lost,
        notifications=(target("audit", events=("orchestrator-lost", "promoted")).as_dict(),),
    ).with_event(StepStarted(now - 400, step=0, canary_weight=50))
    site.state.store.save(started)
    site.router.weights = Weights(50, 50)
    plan = quiet_run.RunPlan(profile=FAST, reports_dir=tmp_path / "reports")  # its targets: the recorded ones
    state = quiet_run.run(site, plan, say=lambda _line: None)
    assert state.outcome is Phase.PROMOTED
    lost_notice, promoted = receiver.bodies("/hook")
    assert (
        lost_notice["event"] == "orchestrator-lost"
        and lost_notice["detail"]["previous"] == "pod rollout-r1-old"
    )
    assert lost_notice["detail"]["heartbeat_age_s"] >= 300 and lost_notice["canary_weight"] == 50
    assert promoted["event"] == "promoted"
    assert [type(e) for e in site.state.store.load().events].count(Takeover) == 1


def test_a_promotion_forced_past_failing_gates_names_them(tmp_path, receiver, monkeypatch):
    from rollout.run import promote

    monkeypatch.setenv("TEST_NOTIFY_AUDIT", receiver.url("/hook"))
    controller, _, clock = make_controller(
        tmp_path, table_gates("pass", "held"), notify=(target("audit", events=("promoted",)),)
    )
    advance(controller, clock, 3)  # the 10% step's second evaluation: p99 failing, held by hysteresis
    site = stand_in_site(controller.router, controller.store, held=True)
    promote(site, reports_dir=None, who="erin", reason="known noisy gate", force=True, say=lambda _line: None)
    (forced,) = receiver.bodies("/hook")
    assert (forced["event"], forced["who"], forced["failing_gates"]) == ("promoted", "erin", ["p99_latency"])
    assert "forced past failing gate(s) p99_latency" in forced["reason"]
