"""The client: channels per address, typed stubs, async and sync drivers.

Generated ``<Svc>Client`` / ``<Svc>SyncClient`` classes subclass ``Stub`` /
``SyncStub``; each generated method is one call into ``_<kind>`` here.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
import grpc.aio

from micro import errors
from micro.method import Method, Req, Resp

Metadata: TypeAlias = Mapping[str, str | bytes] | Sequence[tuple[str, str | bytes]]
_Pairs: TypeAlias = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True)
class CallOptions:
    """Per-call (or per-stub) options.

    ``address``: call this ``host:port`` directly, bypassing discovery.
    """

    address: str | None = None


class Client:
    """Owns the channels to service nodes; stubs share one ``Client``.

    client = micro.Client()
    greeter = GreeterClient("greeter", client, options=micro.CallOptions(address=addr))
    """

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._sync_channels: dict[str, grpc.Channel] = {}
        self._calls: dict[tuple[str, Method[Any, Any]], Any] = {}
        self._sync_calls: dict[tuple[str, Method[Any, Any]], Any] = {}

    def _address(self, service: str, options: CallOptions) -> str:
        if options.address:
            return options.address
        raise errors.Unavailable(f"no address for service {service!r}: no registry configured")

    def _multicallable(self, address: str, method: Method[Any, Any]) -> Any:
        key = (address, method)
        call = self._calls.get(key)
        if call is None:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = grpc.aio.insecure_channel(address)
            make = getattr(channel, method.kind)
            call = self._calls[key] = make(
                method.path,
                request_serializer=method.serialize,
                response_deserializer=method.deserialize_response,
                _registered_method=True,
            )
        return call

    def _sync_multicallable(self, address: str, method: Method[Any, Any]) -> Any:
        key = (address, method)
        call = self._sync_calls.get(key)
        if call is None:
            channel = self._sync_channels.get(address)
            if channel is None:
                channel = self._sync_channels[address] = grpc.insecure_channel(address)
            make = getattr(channel, method.kind)
            call = self._sync_calls[key] = make(
                method.path,
                request_serializer=method.serialize,
                response_deserializer=method.deserialize_response,
                _registered_method=True,
            )
        return call

    async def close(self) -> None:
        """Close every channel (async ones on this loop, sync ones too)."""
        channels, self._channels = self._channels, {}
        self._calls.clear()
        for channel in channels.values():
            await channel.close(None)
        self.close_sync()

    def close_sync(self) -> None:
        channels, self._sync_channels = self._sync_channels, {}
        self._sync_calls.clear()
        for channel in channels.values():
            channel.close()


def _pairs(metadata: Metadata | None) -> _Pairs | None:
    if metadata is None:
        return None
    if isinstance(metadata, Mapping):
        return tuple(metadata.items())
    return tuple(metadata)


def _warn_deprecated(method: Method[Any, Any]) -> None:
    warnings.warn(f"{method.path} is deprecated", DeprecationWarning, stacklevel=4)


class Stub:
    """Base of generated async clients: ``GreeterClient("greeter", client)``."""

    __slots__ = ("_client", "_options", "_service")

    def __init__(self, service: str, client: Client, *, options: CallOptions | None = None):
        self._service = service
        self._client = client
        self._options = options or CallOptions()

    def _target(self, method: Method[Any, Any], options: CallOptions | None) -> Any:
        if method.deprecated:
            _warn_deprecated(method)
        address = self._client._address(self._service, options or self._options)
        return self._client._multicallable(address, method)

    async def _unary_unary(
        self,
        method: Method[Req, Resp],
        request: Req,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> Resp:
        call = self._target(method, options)
        try:
            response: Resp = await call(request, timeout=timeout, metadata=_pairs(metadata))
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None
        return response

    async def _unary_stream(
        self,
        method: Method[Req, Resp],
        request: Req,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> AsyncIterator[Resp]:
        call = self._target(method, options)
        try:
            async for response in call(request, timeout=timeout, metadata=_pairs(metadata)):
                yield response
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None

    async def _stream_unary(
        self,
        method: Method[Req, Resp],
        requests: AsyncIterable[Req] | Iterable[Req],
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> Resp:
        call = self._target(method, options)
        try:
            response: Resp = await call(requests, timeout=timeout, metadata=_pairs(metadata))
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None
        return response

    async def _stream_stream(
        self,
        method: Method[Req, Resp],
        requests: AsyncIterable[Req] | Iterable[Req],
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> AsyncIterator[Resp]:
        call = self._target(method, options)
        try:
            async for response in call(requests, timeout=timeout, metadata=_pairs(metadata)):
                yield response
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None


class SyncStub:
    """Base of generated blocking clients: ``GreeterSyncClient("greeter", client)``."""

    __slots__ = ("_client", "_options", "_service")

    def __init__(self, service: str, client: Client, *, options: CallOptions | None = None):
        self._service = service
        self._client = client
        self._options = options or CallOptions()

    def _target(self, method: Method[Any, Any], options: CallOptions | None) -> Any:
        if method.deprecated:
            _warn_deprecated(method)
        address = self._client._address(self._service, options or self._options)
        return self._client._sync_multicallable(address, method)

    def _unary_unary(
        self,
        method: Method[Req, Resp],
        request: Req,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> Resp:
        call = self._target(method, options)
        try:
            response: Resp = call(request, timeout=timeout, metadata=_pairs(metadata))
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None
        return response

    def _unary_stream(
        self,
        method: Method[Req, Resp],
        request: Req,
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> Iterator[Resp]:
        call = self._target(method, options)
        try:
            yield from call(request, timeout=timeout, metadata=_pairs(metadata))
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None

    def _stream_unary(
        self,
        method: Method[Req, Resp],
        requests: Iterable[Req],
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> Resp:
        call = self._target(method, options)
        try:
            response: Resp = call(iter(requests), timeout=timeout, metadata=_pairs(metadata))
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None
        return response

    def _stream_stream(
        self,
        method: Method[Req, Resp],
        requests: Iterable[Req],
        timeout: float | None,
        metadata: Metadata | None,
        options: CallOptions | None,
    ) -> Iterator[Resp]:
        call = self._target(method, options)
        try:
            yield from call(iter(requests), timeout=timeout, metadata=_pairs(metadata))
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None
