"""Canary rollout orchestration: a plan of traffic steps, gates at every interval, promote or revert.

The state machine (`controller`) talks to the world only through a traffic router (`routers/`), a gate
evaluator (`gating`), a state store (`state`) and hooks (`hooks`). Where it runs is a site (`sites/`:
the embedded local stack or a cluster's release); `run` and `ci_gate` are one function each over a
site, `cli` owns every flag, and `report` writes the report directory.
"""
