"""prunekit.graphs: the channel dependency graph (torch.fx trace -> channel atoms -> coupled ChannelGroups).

Knows torch, torch.fx and networkx; nothing of strategies or training.
"""

from . import masked
from .builder import as_inputs, build_graph
from .graph import ChannelGraph, ChannelGroup, Member
from .trace import GraphBuildError, unwrap

__all__ = ["build_graph", "as_inputs", "ChannelGraph", "ChannelGroup", "Member", "GraphBuildError", "unwrap", "masked"]
