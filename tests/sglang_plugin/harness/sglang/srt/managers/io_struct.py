"""Harness: the tokenized request types the scheduler receives (only the fields the tests use)."""

from dataclasses import dataclass, field


@dataclass
class BaseReq:
    rid: str | None = None


@dataclass
class TokenizedGenerateReqInput(BaseReq):
    mm_inputs: object = None
    # Stands for upstream's early exits before multimodal handling (validation, sessions, ...).
    rejected_before_mm: bool = False


@dataclass
class TokenizedEmbeddingReqInput(BaseReq):
    mm_inputs: object = None
    rejected_before_mm: bool = False


@dataclass
class BatchTokenizedGenerateReqInput:
    batch: list = field(default_factory=list)

    def __iter__(self):
        return iter(self.batch)


@dataclass
class MMInputsProcessError:
    message: str


@dataclass
class AbortReq:
    rid: str
