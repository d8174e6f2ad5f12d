"""The observability a ``Service`` installs by itself, from its config.

- ``Tracing`` and OpenTelemetry ``Metrics`` whenever opentelemetry-api is installed:
  they follow the application's global providers, and record nothing (one check per
  hook) until it sets one, as OTel's own instrumentations do;
- Prometheus series in that ``Metrics`` with ``MICRO_METRICS_ADDRESS`` (the Service
  serves them there);
- ``AccessLog`` with ``MICRO_ACCESS_LOG=1``.

They come first, in that order (tracing outermost, so the others see its trace), and
one of a kind given in ``middleware`` takes the place of the built-in.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from micro.config import Config, ConfigError
from micro.middleware.access import AccessLog
from micro.middleware.base import Middleware
from micro.middleware.metrics import Metrics

try:
    from micro.middleware.tracing import Tracing
except ImportError:  # no otel extra: no tracing, and no OpenTelemetry metrics either
    Tracing = None  # type: ignore[assignment,misc]


def observing(
    config: Config, service: str, middleware: Sequence[Middleware]
) -> tuple[Middleware, ...]:
    """``middleware`` after the built-ins ``config`` asks for that it lacks."""
    builtins: list[Middleware] = []
    if Tracing is not None and not any(isinstance(m, Tracing) for m in middleware):
        builtins.append(Tracing())
    given = next((m for m in middleware if isinstance(m, Metrics)), None)
    if config.metrics_address and given is not None and given.registry is None:
        raise ConfigError(
            f"MICRO_METRICS_ADDRESS={config.metrics_address!r}: the Metrics given to "
            f"service {service!r} keeps no Prometheus series (make it with prometheus=True)"
        )
    if given is None and (Tracing is not None or config.metrics_address):
        builtins.append(Metrics(prometheus=bool(config.metrics_address), service=service))
    if config.access_log and not any(isinstance(m, AccessLog) for m in middleware):
        builtins.append(AccessLog(service=service))
        _shown(logging.getLogger("micro.access"))
    return (*builtins, *middleware)


def _shown(logger: logging.Logger) -> None:
    """Asked for, access lines are written: at INFO, where logging is configured to
    put them, else (until it is) to stderr."""
    logger.setLevel(logging.INFO)
    if not any(isinstance(h, _Unconfigured) for h in logger.handlers):
        logger.addHandler(_Unconfigured(sys.stderr))


if TYPE_CHECKING:
    _StreamHandler = logging.StreamHandler[TextIO]
else:  # generic only in typeshed before Python 3.11
    _StreamHandler = logging.StreamHandler


class _Unconfigured(_StreamHandler):
    """Writes only while the root logger has no handler (an application that
    configures logging later, ``Service.run`` under ``MICRO_LOG_LEVEL`` say, gets each
    line once, through its own)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)
