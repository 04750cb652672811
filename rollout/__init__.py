"""Canary rollout orchestration: a plan of traffic steps, gates at every interval, promote or revert.

The state machine (`controller`) talks to the world only through a traffic router (`routers/`), a gate
evaluator (`gating`), a state store (`state`) and hooks (`hooks`); `local_stack` starts the embedded
stack on one machine and `report` writes the report directory.
"""
