"""Choosing a node: filters, strategies and passive health.

Everything here is synchronous bookkeeping with no I/O, so the async and sync clients
share it and tests drive it with a fake clock.
"""

from micro.selector.filter import matching_nodes
from micro.selector.health import Ejections, NodeHealth
from micro.selector.route import Route
from micro.selector.strategy import STRATEGIES, Strategy, StrategyFactory, strategy

__all__ = [
    "STRATEGIES",
    "Ejections",
    "NodeHealth",
    "Route",
    "Strategy",
    "StrategyFactory",
    "matching_nodes",
    "strategy",
]
