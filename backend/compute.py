"""Per-step forward cost of the stand-in model: real work of a fixed size, calibrated once per rank.

The work per step is a fixed number of small matmuls (so CPU contention stretches it, as contention
stretches a real forward pass), sized at startup from the fastest of a few timing trials.
On CUDA it is a real GPU kernel of the same shape, synchronised per step.
"""

from __future__ import annotations

import time

import torch

_MATRIX = 96


class StepCompute:
    def __init__(self, step_cost_ms: float, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self._a = torch.rand(_MATRIX, _MATRIX, device=self.device, generator=None)
        self._b = torch.rand(_MATRIX, _MATRIX, device=self.device)
        self._out = torch.empty(_MATRIX, _MATRIX, device=self.device)
        self.matmuls_per_ms = self._calibrate()
        self.matmuls_per_step = round(step_cost_ms * self.matmuls_per_ms)

    def _calibrate(self) -> float:
        trial = 64
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            self._burn(trial)
            best = min(best, time.perf_counter() - t0)
        return trial / max(best * 1000.0, 1e-6)

    def _burn(self, matmuls: int) -> None:
        for _ in range(matmuls):
            torch.mm(self._a, self._b, out=self._out)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self, scale: float = 1.0) -> None:
        """One forward step; `scale` > 1 for a prefill that costs more than a decode step."""
        self._burn(max(0, round(self.matmuls_per_step * scale)))

    def burn_ms(self, ms: float) -> None:
        """CPU work of about `ms` milliseconds on an idle core (rehearsal CPU-burn fault)."""
        self._burn(max(0, round(ms * self.matmuls_per_ms)))
