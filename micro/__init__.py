"""micro-grpc: Go Micro for Python, gRPC-first.

Generated ``*_micro.py`` modules and user code import only the names below; registry
and broker backends are imported by their full path (``micro.registry.etcd``).
"""

from micro import errors
from micro.broker import EventContext, Publisher
from micro.calls import (
    StreamStreamCall,
    StreamUnaryCall,
    SyncStreamStreamCall,
    SyncStreamUnaryCall,
    SyncUnaryStreamCall,
    SyncUnaryUnaryCall,
    UnaryStreamCall,
    UnaryUnaryCall,
)
from micro.client import CallOptions, Client, Metadata
from micro.stub import Stub, SyncStub

# isort: split
# Stubs above: micro.service loads generated code (the grpc broker's delivery
# service) that subclasses micro.Stub while this package is still loading.
from micro.config import Config, ConfigError
from micro.context import Context
from micro.method import (
    Idempotency,
    Method,
    ServiceDescriptor,
    StreamStream,
    StreamUnary,
    UnaryStream,
    UnaryUnary,
)
from micro.middleware import (
    ClientAttempt,
    ClientCall,
    Ending,
    Incoming,
    Middleware,
    Outcome,
    Outgoing,
    ServerCall,
)
from micro.server import Handler, Requests, Server, mount
from micro.service import Service

__all__ = [
    "CallOptions",
    "Client",
    "ClientAttempt",
    "ClientCall",
    "Config",
    "ConfigError",
    "Context",
    "Ending",
    "EventContext",
    "Handler",
    "Idempotency",
    "Incoming",
    "Metadata",
    "Method",
    "Middleware",
    "Outcome",
    "Outgoing",
    "Publisher",
    "Requests",
    "Server",
    "ServerCall",
    "Service",
    "ServiceDescriptor",
    "StreamStream",
    "StreamStreamCall",
    "StreamUnary",
    "StreamUnaryCall",
    "Stub",
    "SyncStreamStreamCall",
    "SyncStreamUnaryCall",
    "SyncStub",
    "SyncUnaryStreamCall",
    "SyncUnaryUnaryCall",
    "UnaryStream",
    "UnaryStreamCall",
    "UnaryUnary",
    "UnaryUnaryCall",
    "errors",
    "mount",
]
