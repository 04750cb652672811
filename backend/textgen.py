"""The stand-in model's text side: token counting, chat prompt rendering, deterministic generation.

Output depends only on the server seed, the request (prompt, image sources, its own seed) and a digest of
the materialized multimodal tensors, so every mm-input mode must serve the same text for the same request.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable

import torch

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")

# A small closed vocabulary: token id i is VOCAB[i]. Enough variety that two seeds visibly differ.
VOCAB: tuple[str, ...] = tuple(
    (
        "the a an image shows picture photo scene frame left right top bottom center background foreground "
        "red green blue yellow white black gray bright dark light shadow color texture pattern edge corner "
        "person people dog cat car tree house road sky cloud water mountain building window door table chair "
        "small large tall short wide narrow round square near far above below beside behind in on at with "
        "and or but while there is are was appears seems contains includes features depicts looks like "
        "one two three several many few some each every most quite very slightly mostly partly clearly "
        "standing sitting walking running lying holding looking facing moving resting parked open closed "
        "detail outline shape line circle stripe dot area region part side surface object item group"
    ).split()
)
PERIOD_ID = len(VOCAB)  # "." ends a sentence
VOCAB_SIZE = len(VOCAB) + 1


def count_text_tokens(text: str) -> int:
    """Prompt tokens of plain text: words and punctuation marks (a stand-in for a BPE tokenizer)."""
    return len(_TOKEN_RE.findall(text))


def request_digest(prompt: str, sources: Iterable[str], request_seed: int | None) -> bytes:
    """What identifies a request's content for generation: prompt, every image/frame source, its seed."""
    h = hashlib.sha256()
    h.update(prompt.encode("utf-8", "surrogatepass"))
    for source in sources:
        h.update(b"\x00src\x00")
        h.update(source.encode("utf-8", "surrogatepass"))
    h.update(b"\x00seed\x00" + repr(request_seed).encode())
    return h.digest()


def tensor_digest(tensors: Iterable[torch.Tensor | None]) -> bytes:
    """A cheap digest of materialized tensors: a strided sample of their bits (not a full hash)."""
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        flat = t.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        h.update(repr((tuple(t.shape), str(t.dtype))).encode())
        h.update(flat[::step].contiguous().cpu().numpy().tobytes())
    return h.digest()


class TokenSampler:
    """Deterministic token stream for one request: the same seeds always yield the same tokens."""

    def __init__(self, server_seed: int, request_digest: bytes, mm_digest: bytes) -> None:
        material = hashlib.sha256(repr(server_seed).encode() + request_digest + mm_digest).digest()
        self._rng = random.Random(int.from_bytes(material[:16], "big"))
        self._since_period = 0

    def next_token(self) -> int:
        self._since_period += 1
        if self._since_period > 4 and self._rng.random() < 0.12:
            self._since_period = 0
            return PERIOD_ID
        return self._rng.randrange(len(VOCAB))


def detokenize(token_ids: Iterable[int], *, at_start: bool) -> str:
    """Text of consecutive tokens; `at_start` says whether the first one begins the output."""
    parts: list[str] = []
    first = at_start
    for tid in token_ids:
        if tid == PERIOD_ID:
            parts.append(".")
        elif 0 <= tid < len(VOCAB):
            parts.append(VOCAB[tid] if first else " " + VOCAB[tid])
        else:
            raise ValueError(f"token id {tid} outside the vocabulary (size {VOCAB_SIZE})")
        first = False
    return "".join(parts)
