"""Harness: TP group coordinators over real torch.distributed gloo groups."""

import torch.distributed as dist


class GroupCoordinator:
    def __init__(self, group_ranks, cpu_group):
        self.rank = dist.get_rank()
        self.ranks = list(group_ranks)
        self.world_size = len(self.ranks)
        self.rank_in_group = self.ranks.index(self.rank)
        self.cpu_group = cpu_group

    @property
    def first_rank(self):
        return self.ranks[0]


_DP_TP = None


def init_dp_tp_groups(groups):
    """Every rank creates every group (new_group is collective); each keeps the one it belongs to."""
    global _DP_TP
    for ranks in groups:
        cpu_group = dist.new_group(list(ranks), backend="gloo")
        if dist.get_rank() in ranks:
            _DP_TP = GroupCoordinator(ranks, cpu_group)
    return _DP_TP


def get_dp_tp_group():
    return _DP_TP
