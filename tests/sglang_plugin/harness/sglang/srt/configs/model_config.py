"""Harness: the one model-config attribute the plugin reads."""


class ModelConfig:
    def __init__(self, requires_mm_token_modalities=True):
        self.requires_mm_token_modalities = requires_mm_token_modalities
