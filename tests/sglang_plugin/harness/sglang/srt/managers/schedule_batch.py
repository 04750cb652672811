"""Harness: single-process materialization of a request's multimodal inputs (the project's reference)."""

from mminputs import MMInputError, MMLimits, materialize


class MultimodalInputs:
    @staticmethod
    def from_processor_output(obj, *, requires_mm_token_modalities=False):
        outcome = materialize(obj, MMLimits())
        if isinstance(outcome, MMInputError):
            raise ValueError(f"status {outcome.status}: {outcome.message}")
        return outcome
