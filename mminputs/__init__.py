"""Multimodal-input strategies: real materialization and how tensor-parallel ranks obtain its results.

One implementation shared by the embedded backend and the sglang plugin; see docs/mminputs.md.
"""

from .cache import DEFAULT_CACHE_CAPACITY
from .image_pipeline import ImagePipeline
from .materializer import Materializer, Staged, TensorSpec
from .modes import DEFAULT_MODE, MODE_ENV_VAR, RECOMMENDED_MODE, MMMode, mode_from_env, parse_mode
from .processor import DEFAULT_PROFILE, VisionProfile, materialize, smart_resize
from .sources import InputRejected
from .strategies import MMStrategy, make_strategy
from .types import MaterializedInputs, MMInputError, MMItem, MMLimits, MMRequest, Outcome

__all__ = [
    "DEFAULT_CACHE_CAPACITY",
    "DEFAULT_MODE",
    "DEFAULT_PROFILE",
    "MODE_ENV_VAR",
    "RECOMMENDED_MODE",
    "ImagePipeline",
    "InputRejected",
    "MMInputError",
    "MMItem",
    "MMLimits",
    "MMMode",
    "MMRequest",
    "MMStrategy",
    "MaterializedInputs",
    "Materializer",
    "Outcome",
    "Staged",
    "TensorSpec",
    "VisionProfile",
    "make_strategy",
    "materialize",
    "mode_from_env",
    "parse_mode",
    "smart_resize",
]
