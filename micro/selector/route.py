"""A route: the nodes one kind of call may use, and how to pick among them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic

from micro.selector.strategy import N, Strategy


class Route(Generic[N]):
    """Candidate nodes for (service, method, options), valid for one registry
    ``generation``; rebuilt when the registry changes."""

    __slots__ = ("generation", "nodes", "pick")

    def __init__(self, nodes: Sequence[N], pick: Strategy[N], generation: int = -1) -> None:
        self.nodes = tuple(nodes)
        self.pick = pick
        self.generation = generation

    def select(self, now: float, tried: Sequence[N] = ()) -> N:
        """A node not ejected and not yet tried by this call; when that leaves none,
        an untried one, and when every node was tried, any (never eject them all)."""
        nodes = self.nodes
        pool = [n for n in nodes if n.ejected_until <= now and n not in tried]
        if not pool:
            pool = [n for n in nodes if n not in tried] or list(nodes)
        return self.pick(pool)
