"""Extra rows in Locust's own statistics (web UI, `--csv`, `--html`): token timings and the self-check.

| type | name | one sample per | value (ms) |
|---|---|---|---|
| `TTFT` | arm | successful stream | time to first token |
| `ITL` | arm | gap between successive content chunks of a successful stream | the gap |
| `TPOT` | arm | successful stream with >= 2 output tokens | time per output token after the first |
| `SCHED` | `lag` | sent request | schedule lag (actual - scheduled send) |
| `SCHED` | `late` | request sent later than `--late-ms` | its lag |
| `SCHED` | `dropped_in_flight`, `dropped_too_late` | dropped arrival | how late it was when dropped |

The values go straight into their rows (`RequestStats.get(name, type).log`), not through
`events.request`: Locust adds every request event to its "Aggregated" row, whose count, RPS and
failure ratio (also the UI's header and charts) must stay those of the real requests, one per stream,
and request listeners (plugins, exporters) must see only real requests. Workers ship these rows to the master with their other entries (Locust's
own stats report), so a distributed run shows them as a standalone one does.
"""

from __future__ import annotations

from typing import Any

from locust.env import Environment

TOKEN_ROWS = (("TTFT", "ttft_ms"), ("TPOT", "tpot_ms"))  # plus ITL: one sample per gap
SCHED = "SCHED"  # Locust's console tables fit a type of up to 7 characters
SELF_CHECK_ROWS = ("lag", "late", "dropped_in_flight", "dropped_too_late")  # the summary's `schedule` keys


class LocustRows:
    def __init__(self, environment: Environment) -> None:
        self.env = environment

    def _log(self, request_type: str, name: str, value_ms: float) -> None:
        # Looked up per sample: Locust replaces its entries when a test (re)starts. Float milliseconds,
        # as in Locust's own request events (StatsEntry.log's `int` annotation is narrower than its use).
        self.env.stats.get(name, request_type).log(value_ms, 0)  # type: ignore[arg-type]

    def show_self_check(self) -> None:
        """Create the self-check rows at zero, so a run that kept up says so instead of showing nothing."""
        for name in SELF_CHECK_ROWS:
            self.env.stats.get(name, SCHED)

    def add_record(self, record: dict[str, Any]) -> None:
        """One finished (or cancelled) request; token rows only for successful streams, as in the summary."""
        self._log(SCHED, "lag", record["lag_ms"])
        if record["late"]:
            self._log(SCHED, "late", record["lag_ms"])
        if not record["ok"]:
            return
        arm = record["arm"]
        for request_type, field in TOKEN_ROWS:
            if record[field] is not None:
                self._log(request_type, arm, record[field])
        for gap in record["itl_ms"]:
            self._log("ITL", arm, gap)

    def add_dropped(self, kind: str, late_by_s: float) -> None:
        """`kind` is `dropped_in_flight` or `dropped_too_late`."""
        self._log(SCHED, kind, late_by_s * 1000.0)
