"""Middleware: hooks on client calls and attempts, server handlers, broker publish
and delivery (``base``), and the built-ins beside it."""

from micro.middleware.base import (
    Chain,
    ClientAttempt,
    ClientCall,
    Ending,
    Incoming,
    Middleware,
    Outcome,
    Outgoing,
    ServerCall,
    chain,
)

__all__ = [
    "Chain",
    "ClientAttempt",
    "ClientCall",
    "Ending",
    "Incoming",
    "Middleware",
    "Outcome",
    "Outgoing",
    "ServerCall",
    "chain",
]
