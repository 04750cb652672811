"""Locust event wiring: one open-loop run per test, standalone or master/workers.

- standalone: this process dispatches, writes the JSONL as records complete and the summary at the end.
- worker: dispatches its share of the schedule (seq % workers == rank) from the master's start time
  and ships records and counters to the master every second ("vlm_records"; the last one final).
- master: picks start time and worker ranks (injected into the options it sends with "spawn"),
  writes the JSONL from the workers' records and the summary once every worker sent its final batch.
A run ends on Locust's stop (UI, --run-time), on quit (SIGTERM, Ctrl-C) or, for a finite schedule,
when every dispatcher has drained. The summary sets the process exit code (see docs/loadtest.md).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import gevent
import gevent.event
import gevent.lock
import locust.stats
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtest.dispatcher import Dispatcher, DispatchSettings, Target, check_reachable
from loadtest.locust_rows import LocustRows
from loadtest.options import LoadConfig, load_config
from loadtest.payloads import DatasetBodies, DatasetError, SyntheticBodies
from loadtest.records import Clock, JsonlWriter, write_json_atomic
from loadtest.summary import EXIT_REQUEST_FAILURES, EXIT_USAGE, RunSummary

log = logging.getLogger("loadtest")

MSG_RECORDS = "vlm_records"
MSG_FINISH = "vlm_finish"
_REPORT_INTERVAL_S = 1.0
_COLLECT_INTERVAL_S = 0.5
_LOCAL_START_LEAD_S = 0.2  # lets the process settle between setup and the first arrival


def build_bodies(config: LoadConfig) -> Any:
    values = config.values
    if values["dataset"]:
        return DatasetBodies(values["dataset"], config.shape)
    return SyntheticBodies(
        config.shape,
        config.image_sizes,
        values["image_format"],
        values["images_per_request"],
        values["image_variants"],
        values["unique_image_share"],
        values["seed"],
    )


def _settings(config: LoadConfig, worker: int) -> DispatchSettings:
    values = config.values
    return DispatchSettings(
        worker=worker,
        max_in_flight=values["max_in_flight"],
        late_s=values["late_ms"] / 1000.0,
        drop_after_s=values["drop_after_ms"] / 1000.0,
        request_timeout_s=values["request_timeout"],
        arm_header=values["arm_header"],
    )


class LoadRuntime:
    """Attached once per Locust process (from the locustfile's `init` listener)."""

    def __init__(self, environment: Environment) -> None:
        self.env = environment
        # Local, master and worker runners expose different APIs (clients, worker_index, messages).
        runner: Any = environment.runner
        self.runner = runner
        self.is_master = isinstance(runner, MasterRunner)
        self.is_worker = isinstance(runner, WorkerRunner)
        self.lock = gevent.lock.RLock()
        self.rows = LocustRows(environment)
        self.active = False
        self.config: LoadConfig | None = None
        self.dispatcher: Dispatcher | None = None
        self.summary: RunSummary | None = None
        self.writer: JsonlWriter | None = None
        self.rank = 0
        self.expected: set[int] = set()
        self.finals: set[int] = set()
        self.all_final = gevent.event.Event()
        self.started_at = 0.0
        self._bodies_key: tuple | None = None
        self._bodies: Any = None
        self._greenlets: list[gevent.Greenlet] = []
        events = environment.events
        events.test_start.add_listener(self.on_test_start)
        events.test_stop.add_listener(self.on_test_stop)
        events.quitting.add_listener(self.on_quitting)
        if self.is_master:
            runner.register_message(MSG_RECORDS, self.on_worker_records)
        if self.is_worker:
            runner.register_message(MSG_FINISH, self.on_finish_request, concurrent=True)
        if not self.is_worker:
            self._validate_inputs_or_exit()

    # -------------------------------------------------------------------------------- start
    def _validate_inputs_or_exit(self) -> None:
        """Fail before the run for inputs that cannot work (a worker gets its options at spawn)."""
        try:
            config = load_config(self.env.parsed_options)
            if config.values["dataset"] or not self.is_master:
                self._bodies_for(config)  # a standalone run starts faster with its bodies ready
        except (ValueError, DatasetError) as exc:
            log.error("%s", exc)
            sys.exit(EXIT_USAGE)

    def _bodies_for(self, config: LoadConfig) -> Any:
        keys = (
            "dataset",
            "image_format",
            "images_per_request",
            "image_variants",
            "unique_image_share",
            "seed",
        )
        key = (config.shape, config.values["image_sizes"], *(config.values[k] for k in keys))
        if key != self._bodies_key:
            self._bodies, self._bodies_key = build_bodies(config), key
        return self._bodies

    def on_test_start(self, environment: Environment, **_: Any) -> None:
        with self.lock:
            self.active = True
            self.started_at = time.time()
            self.config = config = load_config(environment.parsed_options)
            self.finals, self.all_final = set(), gevent.event.Event()
            if not self.is_worker:
                self.rows.show_self_check()
            if self.is_master:
                self._start_master(config)
                return
            try:
                target = Target.from_host(environment.host or "", config.values["chat_path"])
            except ValueError as exc:
                self._abort(str(exc))
                return
            if not self.is_worker:
                problem = check_reachable(target)
                if problem:
                    self._abort(problem)
                    return
                self.summary = RunSummary(config.values, config.nominal_rate, config.slo)
                if not self._open_writer(config):
                    return
                self.expected = {0}
                self._start_dispatcher(config, target, None, 0, 1)
                self._spawn(self._collect_locally)
            else:
                self._start_worker(config, target)
            if config.finite and not self.is_worker:
                self._spawn(self._end_when_schedule_done)

    def _start_master(self, config: LoadConfig) -> None:
        try:
            target = Target.from_host(self.env.host or "", config.values["chat_path"])
        except ValueError as exc:
            self._abort(str(exc))
            return
        problem = check_reachable(target)
        if problem:
            self._abort(problem)
            return
        runner = self.runner
        workers = runner.clients.ready + runner.clients.running + runner.clients.spawning
        indexes = sorted(runner.get_worker_index(node.id) for node in workers)
        # Shipped to the workers inside the spawn message's options.
        options: Any = self.env.parsed_options
        options.vlm_worker_indexes = indexes
        options.vlm_start_at = time.time() + config.values["start_delay"]
        self.expected = set(range(len(indexes)))
        self.summary = RunSummary(config.values, config.nominal_rate, config.slo)
        if not self._open_writer(config):
            return
        if config.finite:
            self._spawn(self._end_when_schedule_done)

    def _open_writer(self, config: LoadConfig) -> bool:
        path = config.values["requests_jsonl"]
        try:
            self.writer = JsonlWriter(path) if path else None
        except OSError as exc:
            self._abort(f"cannot write --requests-jsonl {path}: {exc.strerror}")
            return False
        return True

    def _start_worker(self, config: LoadConfig, target: Target) -> None:
        options: Any = self.env.parsed_options
        indexes = list(getattr(options, "vlm_worker_indexes", []))
        my_index = self.runner.worker_index
        if my_index not in indexes:
            log.warning("worker %s joined after the run started; it sends nothing this run", my_index)
            self.active = False
            return
        self.rank = indexes.index(my_index)
        self._start_dispatcher(config, target, float(options.vlm_start_at), self.rank, len(indexes))
        self._spawn(self._report_to_master)
        if config.finite:
            self._spawn(self._finish_worker_when_schedule_done)

    def _finish_worker_when_schedule_done(self) -> None:
        assert self.dispatcher is not None
        self.dispatcher.wait_schedule_done()
        self._finish_worker()

    def _start_dispatcher(
        self, config: LoadConfig, target: Target, start_unix: float | None, rank: int, workers: int
    ) -> None:
        """Bodies first, then the clock: preparing (large) images must not eat into the schedule."""
        bodies = self._bodies_for(config)
        clock = Clock.now()
        if start_unix is None:
            start_perf = clock.perf_at_anchor + _LOCAL_START_LEAD_S
        else:
            start_perf = clock.to_perf(start_unix)
            if clock.perf_at_anchor > start_perf:
                log.warning(
                    "worker %d finished preparing bodies %.2fs after the start time; early arrivals are late "
                    "(raise --start-delay)",
                    rank,
                    clock.perf_at_anchor - start_perf,
                )
        self.dispatcher = Dispatcher(
            target=target,
            arrivals=config.schedule.arrivals(rank, workers),
            start_perf=start_perf,
            clock=clock,
            body_for=bodies.body,
            settings=_settings(config, rank),
            on_record=self._show_in_locust,
            on_dropped=self.rows.add_dropped,
        )
        self.dispatcher.start()

    def _show_in_locust(self, record: dict[str, Any]) -> None:
        """Live numbers in Locust: one request event per stream (response time = end-to-end), and the
        stream's token timings and schedule lag in rows of their own (loadtest/locust_rows.py)."""
        self.rows.add_record(record)
        if record["error_kind"] == "cancelled":
            return  # cut off by the stop, says nothing about the server
        exception = None if record["ok"] else RuntimeError(f"{record['error_kind']}: {record['error']}")
        self.env.events.request.fire(
            request_type="POST",
            name=self.dispatcher.target.path if self.dispatcher else "chat",
            response_time=record["e2e_ms"],
            response_length=record["output_tokens"],
            exception=exception,
            context={"arm": record["arm"]},
        )

    def _spawn(self, function: Any) -> None:
        self._greenlets.append(gevent.spawn(function))

    def _abort(self, message: str) -> None:
        log.error("%s", message)
        self.env.process_exit_code = EXIT_USAGE
        self.active = False
        headless = bool(getattr(self.env.parsed_options, "headless", False))
        gevent.spawn(self.runner.quit if headless else self.runner.stop)

    # --------------------------------------------------------------------------- during the run
    def _collect_locally(self) -> None:
        while True:
            gevent.sleep(_COLLECT_INTERVAL_S)
            self._take_local_records()

    def _take_local_records(self) -> None:
        if self.dispatcher is None or self.summary is None:
            return
        records = self.dispatcher.take_records()
        if self.writer:
            self.writer.write(records)
        self.summary.add_records(records)
        self.summary.set_counters(0, self.dispatcher.counters_wire())

    def _report_to_master(self) -> None:
        while True:
            gevent.sleep(_REPORT_INTERVAL_S)
            self._send_batch(final=False)

    def _send_batch(self, final: bool) -> None:
        if self.dispatcher is None:
            return
        data = {
            "rank": self.rank,
            "records": self.dispatcher.take_records(),
            "counters": self.dispatcher.counters_wire(),
            "final": final,
        }
        self.runner.send_message(MSG_RECORDS, data)

    def on_worker_records(self, environment: Environment, msg: Any, **_: Any) -> None:
        if self.summary is None:
            return
        data = msg.data
        if self.writer:
            self.writer.write(data["records"])
        self.summary.add_records(data["records"])
        self.summary.set_counters(data["rank"], data["counters"])
        if data["final"]:
            self.finals.add(data["rank"])
            if self.finals >= self.expected:
                self.all_final.set()

    def _end_when_schedule_done(self) -> None:
        """A finite schedule ends the run by itself once every dispatcher has drained."""
        if self.is_master:
            self.all_final.wait()
        else:
            assert self.dispatcher is not None
            self.dispatcher.wait_schedule_done()
            self._finish_run()
        log.info("schedule complete")
        headless = bool(getattr(self.env.parsed_options, "headless", False))
        gevent.spawn(self.runner.quit if headless else self.runner.stop)

    # ---------------------------------------------------------------------------------- ending
    def on_finish_request(self, environment: Environment, msg: Any, **_: Any) -> None:
        self._finish_worker()

    def on_test_stop(self, environment: Environment, **_: Any) -> None:
        self._finish_run()

    def on_quitting(self, environment: Environment, **_: Any) -> None:
        self._finish_run()

    def _drain(self) -> None:
        assert self.config is not None
        if self.dispatcher is not None:
            self.dispatcher.finish(self.config.values["drain_timeout"])

    def _finish_worker(self) -> None:
        with self.lock:
            if not self.active:
                return
            self.active = False
            self._drain()
            self._send_batch(final=True)
            self._stop_greenlets()

    def _finish_run(self) -> None:
        if self.is_worker:
            self._finish_worker()
            return
        with self.lock:
            if not self.active:
                return
            self.active = False
            assert self.config is not None and self.summary is not None
            if self.is_master:
                if not self.all_final.is_set():
                    self.runner.send_message(MSG_FINISH)
                    if not self.all_final.wait(self.config.values["drain_timeout"] + 10.0):
                        missing = sorted(self.expected - self.finals)
                        log.warning("no final records from worker ranks %s; summary without them", missing)
            else:
                self._drain()
                self._take_local_records()
            if getattr(self.env.parsed_options, "csv_prefix", None):
                # Locust's --csv writer rewrites its files every CSV_STATS_INTERVAL_SEC but not at exit
                # (locust#1806): one more pass records the requests that completed during the drain.
                gevent.sleep(locust.stats.CSV_STATS_INTERVAL_SEC + 0.2)
            self._stop_greenlets()
            self._write_summary()

    def _stop_greenlets(self) -> None:
        current = gevent.getcurrent()
        for greenlet in self._greenlets:
            if greenlet is not current:
                greenlet.kill(block=False)
        self._greenlets = [g for g in self._greenlets if g is current]

    def _write_summary(self) -> None:
        assert self.config is not None and self.summary is not None
        summary = self.summary.render(self.started_at, time.time())
        if self.writer:
            self.writer.close()
        path = self.config.values["summary_json"]
        if path:
            write_json_atomic(path, summary)
        code = summary["exit_code"]
        if code == EXIT_REQUEST_FAILURES:
            code = getattr(self.env.parsed_options, "exit_code_on_error", EXIT_REQUEST_FAILURES)
        if self.env.process_exit_code != EXIT_USAGE:
            self.env.process_exit_code = code
        schedule = summary["schedule"]
        log.info(
            "open-loop summary: target %.2f rps, achieved %.2f rps (%+.2f%%), lag p99 %s ms, sent %d, late %d, "
            "dropped %d; exit %d: %s",
            schedule["target_rate_rps"] or 0.0,
            schedule["achieved_rate_rps"] or 0.0,
            schedule["rate_error_pct"] or 0.0,
            schedule["lag_ms"]["p99"],
            schedule["sent"],
            schedule["late"],
            schedule["dropped_in_flight"] + schedule["dropped_too_late"],
            code,
            summary["exit_reason"],
        )
