"""A route: the nodes one kind of call may use, and how to pick among them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Generic

from micro.selector.strategy import N, Strategy


class Route(Generic[N]):
    """Candidate nodes for (service, method, options), valid for one registry
    ``generation`` (-1: a direct route, not from the registry); rebuilt when the
    registry changes."""

    __slots__ = ("_board", "_counted", "_healthy", "_until", "generation", "nodes", "pick")

    def __init__(self, nodes: Sequence[N], pick: Strategy[N], generation: int = -1) -> None:
        self.nodes = tuple(nodes)
        self.pick = pick
        self.generation = generation
        # The ejections of the pool the nodes share, if they share one (else the
        # healthy ones are counted on every first attempt).
        board = self.nodes[0].board if self.nodes else None
        self._board = board if all(n.board is board for n in self.nodes) else None
        self._counted = -1  # _board.count when _healthy was counted
        self._healthy: tuple[N, ...] = ()
        self._until = 0.0  # when the first of the ejected nodes comes back

    @property
    def discovered(self) -> bool:
        """Whether the registry chose these nodes (they say they serve the method)."""
        return self.generation >= 0

    def select(self, now: float, tried: Sequence[N] = ()) -> N:
        """A node not ejected and not yet tried by this call; when that leaves none,
        an untried one, and when every node was tried, any (never eject them all)."""
        nodes = self.nodes
        if not tried:
            # A first attempt costs the same with 10 000 nodes as with one: the healthy
            # ones are counted again only after an ejection, or when one ends.
            board = self._board
            if board is None or board.count != self._counted or now >= self._until:
                self._count(now)
            return self.pick(self._healthy or nodes)
        pool = [n for n in nodes if n.ejected_until <= now and n not in tried]
        if not pool:
            pool = [n for n in nodes if n not in tried] or list(nodes)
        return self.pick(pool)

    def _count(self, now: float) -> None:
        self._counted = self._board.count if self._board is not None else -1
        self._healthy = tuple(n for n in self.nodes if n.ejected_until <= now)
        self._until = min(
            (n.ejected_until for n in self.nodes if n.ejected_until > now), default=math.inf
        )
