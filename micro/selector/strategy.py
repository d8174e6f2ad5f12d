"""Load-balancing strategies: plain functions from candidate nodes to one node.

A strategy factory is called once per route (so round robin keeps its own counter);
what it returns is called once per attempt with a non-empty candidate list.
"""

from __future__ import annotations

import itertools
import random as _random
from collections.abc import Callable, Sequence
from typing import TypeAlias, TypeVar

from micro.selector.health import NodeHealth

N = TypeVar("N", bound=NodeHealth)
Strategy: TypeAlias = Callable[[Sequence[N]], N]
StrategyFactory: TypeAlias = Callable[[], Strategy[N]]


def least_request() -> Strategy[N]:
    """Power of two choices: of two random nodes, the one with fewer calls in flight.
    Nearly as good as scanning every node, at constant cost."""
    randrange = _random.randrange

    def pick(nodes: Sequence[N]) -> N:
        n = len(nodes)
        if n == 1:
            return nodes[0]
        i = randrange(n)
        j = randrange(n - 1)
        if j >= i:
            j += 1
        a, b = nodes[i], nodes[j]
        return a if a.inflight <= b.inflight else b

    return pick


def round_robin() -> Strategy[N]:
    counter = itertools.count()

    def pick(nodes: Sequence[N]) -> N:
        return nodes[next(counter) % len(nodes)]

    return pick


def random() -> Strategy[N]:
    return _random.choice


STRATEGIES: dict[str, StrategyFactory[NodeHealth]] = {
    "least_request": least_request,
    "round_robin": round_robin,
    "random": random,
}


def strategy(name: str | StrategyFactory[N]) -> StrategyFactory[N]:
    """A factory by name (``"round_robin"``) or the factory itself."""
    if callable(name):
        return name
    try:
        return STRATEGIES[name]  # type: ignore[return-value]
    except KeyError:
        raise ValueError(
            f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}"
        ) from None
