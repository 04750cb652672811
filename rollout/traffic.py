"""The one door for traffic: every weight change goes through `move_traffic`, which sets the weights,
waits until the router says they are in effect, and returns its verification for the caller to record."""

from __future__ import annotations

import time

from rollout.routers.base import RouterUnavailable, TrafficRouter, Verification, WeightCheck, Weights

BASELINE_ONLY = Weights(baseline=100, canary=0)


def move_traffic(
    router: TrafficRouter, want: Weights, what: str, *, timeout_s: float = 10.0, poll_s: float = 0.2
) -> Verification:
    """Set `want`, then verify it, giving a gateway controller `timeout_s` to apply a change it has not
    reported yet. Raises RouterUnavailable when the router refused or holds other weights; a controller
    that still lags is returned as DIFFERS (configured, not in effect: the caller holds its evaluation)."""
    router.set_weights(want)
    deadline = time.monotonic() + timeout_s
    check = router.verify_weights(want)
    while check.check is WeightCheck.DIFFERS and time.monotonic() < deadline:
        time.sleep(poll_s)
        check = router.verify_weights(want)
    if check.check is WeightCheck.DIFFERS and router.get_weights() != want:
        raise RouterUnavailable(
            f"router {router.name} still differs from {want.baseline}/{want.canary} after {what}: {check.reason}"
        )
    return check
