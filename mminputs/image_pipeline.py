"""The default materializer: the project's image pipeline (decode, resize, normalize) on `MMRequest`s.

Used by the embedded backend. Its staged form normalizes straight into the transport's buffer, and on one
host it brings its own finer split of the sharded mode (`sharded_shm`: plan units and patch rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .balance import sources_cost
from .materializer import Staged, TensorSpec
from .processor import DEFAULT_PROFILE, VisionProfile, finish, materialize, plan
from .sharded_shm import ShardedShmExchange
from .types import MaterializedInputs, MMLimits, MMRequest, Outcome


@dataclass(frozen=True)
class ImageSkeleton:
    """A MaterializedInputs without its tensors; which of the two tensors it has, in that order."""

    rid: str
    image_grid_thw: tuple[tuple[int, int, int], ...]
    video_grid_thw: tuple[tuple[int, int, int], ...]
    num_mm_tokens: int
    has_image: bool
    has_video: bool


@dataclass(frozen=True)
class ImagePipeline:
    """`MMRequest` -> `MaterializedInputs` (Qwen2-VL layout) under `limits` and `profile`."""

    limits: MMLimits = field(default_factory=MMLimits)
    profile: VisionProfile = DEFAULT_PROFILE
    name: str = "image_pipeline"

    def check(self, request: object, index: int) -> str:
        if not isinstance(request, MMRequest):
            raise TypeError(f"batch[{index}] is {type(request).__name__}, expected MMRequest")
        return request.rid

    def cost(self, request: MMRequest) -> int:
        return sources_cost([s for item in request.items for s in item.sources])

    def materialize(self, request: MMRequest) -> Outcome:
        return materialize(request, self.limits, self.profile)

    def stage(self, request: MMRequest) -> Staged:
        planned = plan(request, self.limits, self.profile)  # raises InputRejected: the envelope's 400/413
        dim = self.profile.patch_dim
        rows = [r for r in (planned.image_rows, planned.video_rows) if r]
        skeleton = ImageSkeleton(
            planned.rid,
            planned.image_grid_thw,
            planned.video_grid_thw,
            planned.num_mm_tokens,
            bool(planned.image_rows),
            bool(planned.video_rows),
        )
        profile = self.profile

        def write(views: Sequence[torch.Tensor]) -> None:
            out = iter(views)
            finish(
                planned,
                profile,
                image_out=next(out) if skeleton.has_image else None,
                video_out=next(out) if skeleton.has_video else None,
            )

        return Staged(planned.rid, skeleton, tuple(TensorSpec(torch.float32, (r, dim)) for r in rows), write)

    def assemble(
        self, skeleton: ImageSkeleton, tensors: Sequence[torch.Tensor], request: object = None
    ) -> MaterializedInputs:
        out = iter(tensors)
        return MaterializedInputs(
            rid=skeleton.rid,
            pixel_values=next(out) if skeleton.has_image else None,
            image_grid_thw=skeleton.image_grid_thw,
            pixel_values_videos=next(out) if skeleton.has_video else None,
            video_grid_thw=skeleton.video_grid_thw,
            num_mm_tokens=skeleton.num_mm_tokens,
        )

    def sharded_exchange(self, group, rank: int, world_size: int) -> _ImageShardedExchange:
        return _ImageShardedExchange(ShardedShmExchange(group, rank, world_size), self.limits, self.profile)


@dataclass
class _ImageShardedExchange:
    exchange: ShardedShmExchange
    limits: MMLimits
    profile: VisionProfile

    def collect(self, requests: Sequence[MMRequest]) -> list[tuple[str, Outcome]]:
        return [(o.rid, o) for o in self.exchange.collect(requests, self.limits, self.profile)]

    def close(self) -> None:
        self.exchange.close()
