"""Installs the batch-level multimodal step into sglang's `Scheduler` class.

Three class attributes change (the originals are kept and called):
- `__init__`: after upstream's, attaches a `BatchStep` to the scheduler when its TP group has more than one
  rank (TP=1 attaches nothing, so every wrapper below falls straight through to upstream).
- `process_input_requests`: once per received batch, before upstream handles each request, the step runs the
  shared strategy's collective `prepare` over every request of the batch whose `mm_inputs` is a
  `MultimodalProcessorOutput` (what the tokenizer sends); the strategy's materializer is upstream's own
  `MultimodalInputs.from_processor_output` (see materializer.py). After upstream is done with the batch,
  entries nobody consumed (aborted or skipped requests) are dropped.
- `_process_and_broadcast_mm_inputs`: upstream's per-request broadcast is replaced by popping the request's
  prepared `MultimodalInputs`. An error outcome raises upstream's `_MultimodalInputProcessingError`, so the
  request aborts alone, on every rank, through upstream's own handling. Inputs the step did not prepare take
  upstream's per-request path, which is collective and in step because every rank decides alike.

Every decision above depends only on the batch, which every rank of the group holds identically, so the
ranks always enter the same collectives in the same order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mminputs import Materializer, MMInputError, MMStrategy, make_strategy

from .config import MODE_ENV, PluginConfig, PluginConfigError
from .manifest import IncompatibleSglang, check_instance_attributes, installed_sglang_version
from .materializer import ProcessorOutputConversion, ProcessorOutputRequest, features_on_cpu
from .metrics import plugin_metrics

log = logging.getLogger("sglang_plugin")

STATE_ATTR = "_sglang_plugin_batch_step"
ORIGINALS_ATTR = "__sglang_plugin_originals__"
HOOKED = ("__init__", "process_input_requests", "_process_and_broadcast_mm_inputs")

# (rid, raw mm_inputs) -> the request in the materializer's form, or the reason it takes upstream's path.
Extract = Callable[[str, object], object | str]


@dataclass(frozen=True)
class SchedulerBindings:
    """The sglang names the hook uses, resolved once from their modules (all in the manifest)."""

    scheduler_cls: type
    processing_error: type[Exception]
    get_mm: Callable[[], Any]
    processor_output_cls: type
    from_processor_output: Callable[..., Any]

    @staticmethod
    def from_modules(scheduler_module: Any, schedule_batch_module: Any) -> SchedulerBindings:
        return SchedulerBindings(
            scheduler_module.Scheduler,
            scheduler_module._MultimodalInputProcessingError,
            scheduler_module.get_mm,
            schedule_batch_module.MultimodalProcessorOutput,
            schedule_batch_module.MultimodalInputs.from_processor_output,
        )

    def extract(self, rid: str, raw: object) -> ProcessorOutputRequest | str:
        if not isinstance(raw, self.processor_output_cls):
            return f"input_type:{type(raw).__name__}"
        if not features_on_cpu(raw):
            return "features_not_on_cpu"
        return ProcessorOutputRequest(rid, raw)


class BatchStep:
    """One scheduler rank's state: its strategy, the requests prepared for the batch in flight, metrics."""

    def __init__(
        self,
        *,
        config: PluginConfig,
        group: object,
        src_rank: int,
        rank_label: str,
        materializer: Materializer,
        extract: Extract,
        strategy_factory: Callable[..., MMStrategy] = make_strategy,
    ) -> None:
        assert config.mode is not None
        self.config = config
        self._group = group
        self._src_rank = src_rank
        self._materializer = materializer
        self._extract = extract
        self._strategy_factory = strategy_factory
        # Made at the first batch that needs it: make_strategy may be collective, and the first such batch
        # is the same on every rank.
        self._strategy: MMStrategy | None = None
        self._prepared: dict[int, tuple[object, str]] = {}  # id(raw inputs) -> (raw inputs, rid)
        self._warned_types: set[str] = set()
        metrics = plugin_metrics()
        self._gauge = metrics.cache_entries.labels(rank=rank_label, mode=config.mode.value)
        self._stage = metrics.stage_seconds.labels(rank=rank_label, mode=config.mode.value)
        self._fallbacks = metrics.fallbacks
        self._rank_label = rank_label
        self._gauge.set(0)

    @property
    def cache_size(self) -> int:
        return 0 if self._strategy is None else self._strategy.cache_size

    @property
    def strategy(self) -> MMStrategy | None:
        return self._strategy

    def prepare(self, recv_reqs: Iterable[object], tokenized: Callable[[object], Iterable[object]]) -> None:
        """Collective over the group: prepare every eligible request of the received batch."""
        batch: list[object] = []
        rids: set[str] = set()
        for recv_req in recv_reqs:
            for req in tokenized(recv_req):
                raw = getattr(req, "mm_inputs", None)
                if raw is None:
                    continue
                rid = getattr(req, "rid", None)
                if not isinstance(rid, str):
                    self._note_fallback("no_rid")
                    continue
                request = self._extract(rid, raw)
                if isinstance(request, str):
                    self._note_fallback(request)
                    continue
                if rid in rids or id(raw) in self._prepared:
                    self._note_fallback("repeated_rid")
                    continue
                if len(batch) >= self.config.cache_capacity:
                    self._note_fallback("over_capacity")
                    continue
                rids.add(rid)
                self._prepared[id(raw)] = (raw, rid)
                batch.append(request)
        if not batch:
            return
        start = time.perf_counter()
        try:
            if self._strategy is None:
                self._strategy = self._strategy_factory(
                    self.config.mode,
                    group=self._group,
                    src_rank=self._src_rank,
                    cache_capacity=self.config.cache_capacity,
                    materializer=self._materializer,
                )
            self._strategy.prepare(batch)
        except BaseException:
            self._prepared.clear()
            raise
        finally:
            self._stage.observe(time.perf_counter() - start)
            self._gauge.set(self.cache_size)

    def take(self, raw: object) -> Any:
        """The prepared outcome for these raw inputs (removed), or None: the caller goes the upstream way."""
        entry = self._prepared.pop(id(raw), None)
        if entry is None or entry[0] is not raw or self._strategy is None:
            return None
        try:
            outcome = self._strategy.pop(entry[1])
        except KeyError:
            # Evicted from the bounded cache: identical on every rank, so upstream's collective path is safe.
            self._note_fallback("evicted")
            return None
        finally:
            self._gauge.set(self.cache_size)
        return outcome

    def finish_batch(self) -> None:
        """Drop what the batch prepared but no request consumed (aborted, rejected or skipped requests)."""
        if self._prepared and self._strategy is not None:
            for _raw, rid in self._prepared.values():
                self._strategy.discard(rid)
        self._prepared.clear()
        self._gauge.set(self.cache_size)

    def _note_fallback(self, reason: str) -> None:
        self._fallbacks.labels(rank=self._rank_label, reason=reason).inc()
        if reason not in self._warned_types:
            self._warned_types.add(reason)
            log.warning(
                "%s=%s: multimodal inputs not handled by the batch step (%s); they take upstream's "
                "per-request path (logged once per reason)",
                MODE_ENV,
                self.config.mode,
                reason,
            )


def install(bindings: SchedulerBindings, config: PluginConfig) -> bool:
    """Patch `bindings.scheduler_cls`. Returns False when it was already patched (idempotent)."""
    cls = bindings.scheduler_cls
    if ORIGINALS_ATTR in cls.__dict__:
        return False
    if config.mode is None:
        raise PluginConfigError(f"install() needs a mode; {MODE_ENV} is off")
    originals = {name: cls.__dict__[name] for name in HOOKED}
    original_init = originals["__init__"]
    original_process = originals["process_input_requests"]
    original_broadcast = originals["_process_and_broadcast_mm_inputs"]

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        _attach(self, bindings, config)

    def process_input_requests(self, recv_reqs):
        step: BatchStep | None = self.__dict__.get(STATE_ATTR)
        if step is None or not recv_reqs:
            return original_process(self, recv_reqs)
        step.prepare(recv_reqs, cls._tokenized_requests)
        try:
            return original_process(self, recv_reqs)
        finally:
            step.finish_batch()

    def _process_and_broadcast_mm_inputs(self, raw_mm_inputs):
        step: BatchStep | None = self.__dict__.get(STATE_ATTR)
        outcome = None if step is None or raw_mm_inputs is None else step.take(raw_mm_inputs)
        if outcome is None:
            return original_broadcast(self, raw_mm_inputs)
        if isinstance(outcome, MMInputError):
            raise bindings.processing_error(
                f"Multimodal input processing failed (status {outcome.status}): {outcome.message}"
            )
        return outcome

    for name, replacement in (
        ("__init__", __init__),
        ("process_input_requests", process_input_requests),
        ("_process_and_broadcast_mm_inputs", _process_and_broadcast_mm_inputs),
    ):
        original = originals[name]
        replacement.__qualname__ = f"{cls.__qualname__}.{name}"
        replacement.__doc__ = getattr(original, "__doc__", None)
        replacement.__wrapped__ = original  # type: ignore[attr-defined]
        setattr(cls, name, replacement)
    setattr(cls, ORIGINALS_ATTR, originals)
    log.info("sglang_plugin: %s hooked (%s=%s)", cls.__qualname__, MODE_ENV, config.mode)
    return True


def uninstall(scheduler_cls: type) -> bool:
    """Restore upstream's methods (tests; a process never needs it)."""
    originals = scheduler_cls.__dict__.get(ORIGINALS_ATTR)
    if originals is None:
        return False
    for name, original in originals.items():
        setattr(scheduler_cls, name, original)
    delattr(scheduler_cls, ORIGINALS_ATTR)
    return True


def is_installed(scheduler_cls: type) -> bool:
    return ORIGINALS_ATTR in scheduler_cls.__dict__


def _attach(scheduler: Any, bindings: SchedulerBindings, config: PluginConfig) -> None:
    missing = check_instance_attributes(scheduler, "Scheduler")
    if not missing:
        missing = check_instance_attributes(scheduler.model_config, "ModelConfig")
    if missing:
        raise IncompatibleSglang(missing, installed_sglang_version())
    if not getattr(bindings.get_mm(), "enable_broadcast_mm_inputs_process", False):
        raise PluginConfigError(
            f"{MODE_ENV}={config.mode} replaces the path of --enable-broadcast-mm-inputs-process, which is off: "
            f"start the server with --enable-broadcast-mm-inputs-process, or set {MODE_ENV}=off"
        )
    group = scheduler.dp_tp_group
    if group.world_size <= 1:
        return  # TP=1 pays nothing: no step attached, the wrappers call upstream directly
    if getattr(bindings.get_mm(), "mm_feature_transport", None) == "cuda_vmm":
        # Upstream converts every request on every rank itself at the top of process_input_requests and never
        # takes the broadcast path; a step would only convert twice.
        log.warning("sglang_plugin: --mm-feature-transport cuda_vmm converts on every rank; no batch step")
        return
    scheduler.__dict__[STATE_ATTR] = BatchStep(
        config=config,
        group=scheduler.dp_tp_cpu_group,
        src_rank=group.first_rank,
        rank_label=str(group.rank_in_group),
        materializer=ProcessorOutputConversion(
            bindings.from_processor_output, bool(scheduler.model_config.requires_mm_token_modalities)
        ),
        extract=bindings.extract,
    )


def batch_step_of(scheduler: object) -> BatchStep | None:
    return scheduler.__dict__.get(STATE_ATTR)
