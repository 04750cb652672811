"""Per-step forward cost of the stand-in model: real work of a fixed duration, calibrated once per rank.

On a CPU-only host the step is a fixed number of small matmuls (so CPU contention stretches it, as
contention stretches a real forward pass), sized at startup from the fastest of a few timing trials.
On a GPU the step is GPU time: one kernel that keeps the GPU busy for the calibrated number of clock
cycles (`torch.cuda._sleep`), as a CUDA-graph forward pass is a few launches and then device time. The
host waits for it with a blocking-sync event (the thread sleeps instead of spinning in the driver), so
the ranks' CPU figures count the work they do (scheduling, request fan-out, multimodal inputs), not
kernel launches or the time they wait for the device. The rehearsal CPU-burn fault is CPU work on any host.
"""

from __future__ import annotations

import time

import torch

_MATRIX = 96
_CALIBRATION_CYCLES = 2_000_000


class StepCompute:
    def __init__(self, step_cost_ms: float, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.step_cost_ms = step_cost_ms
        # CPU matmuls: the step on a CPU-only host, and the CPU-burn fault everywhere.
        self._a = torch.rand(_MATRIX, _MATRIX)
        self._b = torch.rand(_MATRIX, _MATRIX)
        self._out = torch.empty(_MATRIX, _MATRIX)
        self.matmuls_per_ms = self._calibrate_cpu()
        self.matmuls_per_step = round(step_cost_ms * self.matmuls_per_ms)
        self._done: torch.cuda.Event | None = None
        self.cycles_per_ms = 0.0
        if self.device.type == "cuda":
            self._done = torch.cuda.Event(blocking=True)
            self.cycles_per_ms = self._calibrate_gpu()

    def _calibrate_cpu(self) -> float:
        trial = 64
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            self._burn(trial)
            best = min(best, time.perf_counter() - t0)
        return trial / max(best * 1000.0, 1e-6)

    def _calibrate_gpu(self) -> float:
        """GPU clock cycles per millisecond of `torch.cuda._sleep` on this rank's device."""
        with torch.cuda.device(self.device):
            torch.cuda._sleep(1000)
            torch.cuda.synchronize()
            best_ms = float("inf")
            for _ in range(3):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                torch.cuda._sleep(_CALIBRATION_CYCLES)
                end.record()
                end.synchronize()
                best_ms = min(best_ms, start.elapsed_time(end))
        return _CALIBRATION_CYCLES / max(best_ms, 1e-6)

    def _burn(self, matmuls: int) -> None:
        for _ in range(matmuls):
            torch.mm(self._a, self._b, out=self._out)

    def wait(self) -> None:
        """Block until the device has run everything queued so far (no-op on the CPU)."""
        if self._done is not None:
            self._done.record()
            self._done.synchronize()

    def step(self, scale: float = 1.0, wait: bool = True) -> None:
        """One forward step; `scale` > 1 for a prefill that costs more than a decode step.

        `wait=False` only queues it on the device (a collective on the same stream follows, then `wait`).
        """
        if self._done is None:
            self._burn(max(0, round(self.matmuls_per_step * scale)))
            return
        torch.cuda._sleep(max(0, int(self.cycles_per_ms * self.step_cost_ms * scale)))
        if wait:
            self.wait()

    def burn_ms(self, ms: float) -> None:
        """CPU work of about `ms` milliseconds on an idle core (rehearsal CPU-burn fault)."""
        self._burn(max(0, round(ms * self.matmuls_per_ms)))
