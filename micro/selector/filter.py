"""Filters from registry entries to the nodes a call may use."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from micro.registry.base import Node, Service


def matching_nodes(
    services: Iterable[Service],
    *,
    version: str | None = None,
    metadata: Mapping[str, str] | None = None,
    endpoint: str | None = None,
) -> list[Node]:
    """Nodes of ``services`` at ``version``, whose labels (node over service) include
    ``metadata``, and that serve ``endpoint``. A service that publishes no endpoints
    is assumed to serve every one (it may not be ours)."""
    found: dict[str, Node] = {}
    for service in services:
        if version is not None and service.version != version:
            continue
        if (
            endpoint is not None
            and service.endpoints
            and not any(e.name == endpoint for e in service.endpoints)
        ):
            continue
        for node in service.nodes:
            if metadata and not all(
                node.metadata.get(k, service.metadata.get(k)) == v for k, v in metadata.items()
            ):
                continue
            found.setdefault(node.address, node)
    return list(found.values())
