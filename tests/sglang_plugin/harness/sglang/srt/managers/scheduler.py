"""Harness Scheduler: the methods the plugin hooks, with upstream 0.5.23's signatures and our own minimal
bodies of the behaviour it relies on (per-request multimodal path, error envelope, abort of one request)."""

import logging
from dataclasses import dataclass

import torch

from sglang.srt.configs.model_config import ModelConfig
from sglang.srt.distributed.parallel_state import get_dp_tp_group
from sglang.srt.managers.io_struct import (
    BatchTokenizedGenerateReqInput,
    MMInputsProcessError,
    TokenizedEmbeddingReqInput,
    TokenizedGenerateReqInput,
)
from sglang.srt.managers.schedule_batch import MultimodalInputs
from sglang.srt.plugins import load_plugins
from sglang.srt.runtime_context import get_mm, publish_mm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _MultimodalInputBroadcast:
    inputs: object = None
    error: str | None = None


class _MultimodalInputProcessingError(RuntimeError):
    pass


class Scheduler:
    def __init__(self, server_args, port_args):
        publish_mm(enable_broadcast_mm_inputs_process=server_args.enable_broadcast_mm_inputs_process)
        self.dp_tp_group = get_dp_tp_group()
        self.dp_tp_cpu_group = self.dp_tp_group.cpu_group
        self.model_config = ModelConfig(getattr(server_args, "requires_mm_token_modalities", True))
        # What the tests read back: per rid the inputs the request was admitted with, or its abort message.
        self.admitted = {}
        self.aborted = {}
        self.rejected = []
        self.upstream_broadcasts = 0

    def process_input_requests(self, recv_reqs):
        for recv_req in recv_reqs:
            for req in self._tokenized_requests(recv_req):
                self.handle_generate_request(req)

    @staticmethod
    def _tokenized_requests(recv_req):
        if isinstance(recv_req, (TokenizedGenerateReqInput, TokenizedEmbeddingReqInput)):
            return (recv_req,)
        if isinstance(recv_req, BatchTokenizedGenerateReqInput):
            return tuple(recv_req)
        return ()

    def handle_generate_request(self, recv_req, *, mm_input_error=None):
        if recv_req.rejected_before_mm:
            self.rejected.append(recv_req.rid)
            return
        inputs = None
        if recv_req.mm_inputs is not None:
            try:
                inputs = self._get_multimodal_inputs(recv_req.mm_inputs)
            except _MultimodalInputProcessingError as error:
                self.aborted[recv_req.rid] = str(error)
                return
        self.admitted[recv_req.rid] = inputs

    def _get_multimodal_inputs(self, mm_inputs):
        if isinstance(mm_inputs, MMInputsProcessError):
            raise _MultimodalInputProcessingError(mm_inputs.message)
        if isinstance(mm_inputs, MultimodalInputs):
            return mm_inputs
        if get_mm().enable_broadcast_mm_inputs_process:
            return self._process_and_broadcast_mm_inputs(mm_inputs)
        return MultimodalInputs.from_processor_output(
            mm_inputs, requires_mm_token_modalities=self.model_config.requires_mm_token_modalities
        )

    def _process_and_broadcast_mm_inputs(self, raw_mm_inputs):
        # The entry rank converts; one pickled broadcast per request carries the inputs or the error.
        if raw_mm_inputs is None:
            return None
        self.upstream_broadcasts += 1
        group = self.dp_tp_group
        box = [None]
        if group.rank_in_group == 0:
            try:
                box[0] = _MultimodalInputBroadcast(
                    inputs=MultimodalInputs.from_processor_output(
                        raw_mm_inputs,
                        requires_mm_token_modalities=self.model_config.requires_mm_token_modalities,
                    )
                )
            except Exception as error:
                box[0] = _MultimodalInputBroadcast(
                    error=f"Multimodal input processing failed on the TP entry rank: {type(error).__name__}: {error}"
                )
        if group.world_size > 1:
            torch.distributed.broadcast_object_list(box, src=group.first_rank, group=self.dp_tp_cpu_group)
        if box[0].error is not None:
            raise _MultimodalInputProcessingError(box[0].error)
        return box[0].inputs


def run_scheduler_process(server_args, port_args):
    """Like upstream: plugins load first, then the Scheduler is built."""
    load_plugins()
    return Scheduler(server_args, port_args)
