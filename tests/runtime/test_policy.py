"""The call policy without I/O: strategies, filters, ejection, retry plans."""

from __future__ import annotations

import collections
from typing import Any

import echo_micro
import grpc
import pytest

import micro
from micro import selector
from micro.config import Config, ConfigError
from micro.plan import BACKOFF, MAX_BACKOFF, Plan, RetryBudget
from micro.registry import Endpoint, MemoryRegistry, Node, Service
from micro.selector import Ejections, NodeHealth, Route
from micro.selector.health import EJECTION

GET = echo_micro.EchoMethods.get  # NO_SIDE_EFFECTS
PUT = echo_micro.EchoMethods.put  # not idempotent
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def strategy(name: str) -> selector.Strategy[NodeHealth]:
    """A fresh ``name`` strategy over NodeHealth (a name alone does not say the node type)."""
    factory: selector.StrategyFactory[NodeHealth] = selector.strategy(name)
    return factory()


def nodes(n: int, board: Ejections | None = None) -> list[NodeHealth]:
    """``n`` nodes of one pool (``board``: its ejections) or each on its own."""
    return [NodeHealth(f"127.0.0.1:{5000 + i}", board) for i in range(n)]


def test_round_robin_is_exact() -> None:
    pick = strategy("round_robin")
    ns = nodes(3)
    assert collections.Counter(pick(ns).address for _ in range(300)) == {n.address: 100 for n in ns}


def test_least_request_prefers_idle_nodes() -> None:
    pick = strategy("least_request")
    busy, idle = nodes(2)
    busy.inflight = 5
    assert {pick([busy, idle]) for _ in range(50)} == {idle}


def test_unknown_strategy_is_named() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'fastest'"):
        selector.strategy("fastest")


def test_filters_by_version_labels_and_endpoint() -> None:
    get = Endpoint("echo.v1.Echo.Get", "echo.v1.EchoRequest", "echo.v1.EchoReply")
    services = [
        Service("echo", "v1", {"zone": "east"}, (get,), (Node("a", "h:1"),)),
        Service("echo", "v2", {}, (get,), (Node("b", "h:2", {"zone": "west"}),)),
        Service("echo", "v3", {}, (), (Node("c", "h:3"),)),  # publishes no endpoints
    ]

    def addresses(**kw: Any) -> list[str]:
        return [n.address for n in selector.matching_nodes(services, **kw)]

    assert addresses(version="v2") == ["h:2"]
    assert addresses(metadata={"zone": "east"}) == ["h:1"]
    assert addresses(metadata={"zone": "west"}) == ["h:2"]
    assert addresses(endpoint="echo.v1.Echo.Put") == ["h:3"]
    assert addresses() == ["h:1", "h:2", "h:3"]


def test_ejection_after_repeated_failures_and_never_all() -> None:
    clock = Clock()
    a, b = nodes(2)
    route = Route([a, b], strategy("round_robin"))
    a.failed(clock.now)
    assert a.ejected_until == 0  # one failure is not enough
    a.failed(clock.now)
    assert a.ejected_until == clock.now + EJECTION
    assert {route.select(clock.now).address for _ in range(10)} == {b.address}
    b.failed(clock.now)
    b.failed(clock.now)  # both ejected: both still used, never none
    assert {route.select(clock.now).address for _ in range(10)} == {a.address, b.address}
    clock.now += EJECTION * 2 + 1
    a.failed(clock.now)  # back from ejection, fails again: out at once, for longer
    assert a.ejected_until == clock.now + 2 * EJECTION
    a.succeeded()
    assert (a.failures, a.ejections) == (0, 0)


@pytest.mark.parametrize("name", ["round_robin", "least_request", "random"])
@pytest.mark.parametrize("board", [Ejections(), None], ids=["one pool", "on their own"])
def test_a_node_ejected_after_the_route_counted_is_not_picked(
    name: str, board: Ejections | None
) -> None:
    """A route over one pool's nodes counts its healthy nodes again only when the
    pool's ejections move (nodes on their own: on every first attempt); either way an
    ejection after a count keeps the node out."""
    clock = Clock()
    a, b, c = nodes(3, board)
    route = Route([a, b, c], strategy(name))
    assert {route.select(clock.now).address for _ in range(60)} == {a.address, b.address, c.address}
    b.failed(clock.now)
    b.failed(clock.now)  # ejected, b has nothing in flight: least_request would prefer it
    assert {route.select(clock.now).address for _ in range(60)} == {a.address, c.address}
    clock.now = b.ejected_until  # its ejection is over: back in rotation
    assert b.address in {route.select(clock.now).address for _ in range(60)}


def plan(
    method: object,
    *,
    n: int = 3,
    attempts: int = 4,
    deadline: float | None = None,
    budget: RetryBudget | None = None,
    clock: Clock | None = None,
) -> Plan[NodeHealth]:
    route = Route(nodes(n), strategy("round_robin"))
    return Plan(route, budget or RetryBudget(), method, deadline, attempts, clock or Clock())  # type: ignore[arg-type]


def test_idempotent_retries_on_untried_nodes_without_delay() -> None:
    p = plan(GET)
    seen = [p.node]
    for _ in range(2):
        assert p.retry(UNAVAILABLE)
        assert p.delay == 0
        seen.append(p.node)
    assert len({n.address for n in seen}) == 3
    assert p.retry(UNAVAILABLE)  # every node tried: back off before a repeat
    assert 0 < p.delay <= BACKOFF * 2**2  # the third attempt's cap (see below)
    assert not p.retry(UNAVAILABLE)  # attempt limit


def test_repeats_back_off_exponentially_with_full_jitter() -> None:
    """Each return to a tried node waits uniform(0, cap): the cap starts at BACKOFF
    and doubles with each attempt, up to MAX_BACKOFF."""
    caps = [min(MAX_BACKOFF, BACKOFF * 2**k) for k in range(8)]
    assert caps[-1] == MAX_BACKOFF  # the run reaches the ceiling
    delays: list[list[float]] = [[] for _ in caps]
    for _ in range(200):
        p = plan(GET, n=1, attempts=len(caps) + 1, budget=RetryBudget(reserve=len(caps)))
        for seen in delays:
            assert p.retry(UNAVAILABLE)
            seen.append(p.delay)
    for cap, seen in zip(caps, delays, strict=True):
        assert all(0 <= d <= cap for d in seen), (cap, max(seen))
        # Spread over the whole range: 200 draws all in one half has odds of 2**-199.
        assert min(seen) < cap / 2 < max(seen), (cap, min(seen), max(seen))


def test_non_idempotent_retries_only_what_was_never_sent() -> None:
    p = plan(PUT)
    assert not p.retry(UNAVAILABLE)  # it may have run
    p = plan(PUT)
    assert p.retry(UNAVAILABLE, sent=False)  # it cannot have


def test_only_retryable_codes() -> None:
    assert not plan(GET).retry(grpc.StatusCode.NOT_FOUND)
    assert not plan(GET).retry(grpc.StatusCode.INVALID_ARGUMENT)
    assert plan(GET).retry(grpc.StatusCode.ABORTED)


def test_deadline_bounds_retries() -> None:
    clock = Clock()
    p = plan(GET, deadline=clock.now + 1.0, clock=clock)
    assert p.timeout == pytest.approx(1.0)
    clock.now += 0.4
    assert p.retry(UNAVAILABLE)
    assert p.timeout == pytest.approx(0.6)
    clock.now += 0.6
    assert not p.retry(UNAVAILABLE)


def test_retry_budget_caps_extra_load_at_a_fifth() -> None:
    """Every call fails on every node: retries use all the budget allows and no
    more, the reserve first (whole calls retried at once), then one in five calls."""
    budget = RetryBudget(ratio=0.2, reserve=10)
    retried: list[int] = []  # retries of each call
    for _ in range(1000):
        p = plan(GET, budget=budget)
        retried.append(0)
        while p.retry(UNAVAILABLE):
            retried[-1] += 1
    calls, retries = len(retried), sum(retried)
    assert retries <= 0.2 * calls + 10
    # Less only by what the full reserve turned away of the first call's deposit (0.2)
    # and by less than one token left over at the end.
    assert retries > 0.2 * calls + 10 - 1.2
    assert retried[:3] == [3, 3, 3]  # the reserve: every node tried, at once
    assert max(retried[100:]) == 1  # then a retry now and then, never a burst


def test_config_errors_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="MICRO_REGISTER_TTL='soon'"):
        Config.from_env({"MICRO_REGISTER_TTL": "soon"})
    with pytest.raises(ConfigError, match="MICRO_CLIENT_RETRIES='-1'"):
        Config.from_env({"MICRO_CLIENT_RETRIES": "-1"})
    with pytest.raises(ConfigError, match="register_interval=40"):
        Config(register_interval=40, register_ttl=30)
    with pytest.raises(ConfigError, match="MICRO_MDNS_INTERFACES='eth0'"):
        Config.from_env({"MICRO_MDNS_INTERFACES": "eth0"})
    with pytest.raises(ConfigError, match="MICRO_METRICS_ADDRESS='9464': expected host:port"):
        Config.from_env({"MICRO_METRICS_ADDRESS": "9464"})
    with pytest.raises(ConfigError, match="MICRO_ACCESS_LOG='verbose': expected 1 or 0"):
        Config.from_env({"MICRO_ACCESS_LOG": "verbose"})
    interfaces = Config.from_env({"MICRO_MDNS_INTERFACES": "127.0.0.1, 127.0.0.2"}).mdns_interfaces
    assert interfaces == ("127.0.0.1", "127.0.0.2")


@pytest.mark.parametrize(
    ("variable", "text", "expected"),
    [
        ("MICRO_CLIENT_REQUEST_TIMEOUT", "inf", r"seconds in \(0, 2147483647\]"),
        ("MICRO_CLIENT_ATTEMPT_TIMEOUT", "nan", r"seconds in \(0, 2147483647\]"),
        ("MICRO_REGISTER_TTL", "1e12", r"seconds in \(0, 2147483647\]"),
        ("MICRO_REGISTER_TTL", "inf", r"seconds in \(0, 2147483647\]"),
        ("MICRO_REGISTER_INTERVAL", "-inf", r"seconds in \(0, 2147483647\]"),
        ("MICRO_CLIENT_RETRIES", "100000", r"a whole number in \[0, 100\]"),
        ("MICRO_SERVER_THREADS", "0", r"a whole number in \[1, 1024\]"),
    ],
)
def test_numbers_that_cannot_work_are_refused_with_the_range(
    variable: str, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^{variable}='{text}': expected {expected}$"):
        Config.from_env({variable: text})


def test_numbers_at_the_ends_of_their_ranges_are_taken() -> None:
    config = Config.from_env({"MICRO_REGISTER_TTL": "2147483647", "MICRO_CLIENT_RETRIES": "100"})
    assert (config.register_ttl, config.client_retries) == (2**31 - 1, 100)
    with pytest.raises(ConfigError, match=r"^register_ttl=inf: expected seconds"):
        Config(register_ttl=float("inf"))  # keyword arguments pass the same check


def test_registry_from_environment() -> None:
    from micro.registry import from_config
    from micro.registry.dns import DnsRegistry

    env = {"MICRO_REGISTRY": "dns", "MICRO_REGISTRY_ADDRESS": "127.0.0.1:5353"}
    assert isinstance(from_config(Config.from_env(env)), DnsRegistry)
    with pytest.raises(ConfigError, match="MICRO_REGISTRY='zk': expected one of mdns, memory"):
        Config.from_env({"MICRO_REGISTRY": "zk"})
    memory = Config.from_env({"MICRO_REGISTRY": "memory"})
    assert from_config(memory) is from_config(memory)  # one per process
    assert isinstance(from_config(memory), MemoryRegistry)
    assert Config(server_address="127.0.0.1:1").given(server_address=None).server_address == (
        "127.0.0.1:1"
    )


def test_etcd_registry_from_environment() -> None:
    from micro.registry import from_config
    from micro.registry.etcd import EtcdRegistry

    env = {"MICRO_REGISTRY": "etcd", "MICRO_REGISTRY_ADDRESS": "127.0.0.1:2379,127.0.0.2:2379"}
    registry = from_config(Config.from_env(env))
    assert isinstance(registry, EtcdRegistry)
    assert registry.endpoints == ["127.0.0.1:2379", "127.0.0.2:2379"]


@pytest.mark.parametrize(
    ("name", "module", "cls"),
    [
        ("nats", "micro.broker.nats", "NatsBroker"),
        ("jetstream", "micro.broker.nats", "NatsBroker"),
        ("redis", "micro.broker.redis", "RedisBroker"),
        ("rabbitmq", "micro.broker.rabbitmq", "RabbitBroker"),
    ],
)
def test_broker_from_environment(name: str, module: str, cls: str) -> None:
    import importlib

    from micro.broker import from_config

    broker = from_config(Config.from_env({"MICRO_BROKER": name}), MemoryRegistry())
    assert type(broker) is getattr(importlib.import_module(module), cls)


def test_nats_broker_addresses_and_mode_from_environment() -> None:
    from micro.broker import from_config
    from micro.broker.nats import NatsBroker

    env = {"MICRO_BROKER": "jetstream", "MICRO_BROKER_ADDRESS": "nats://127.0.0.1:1,nats://[::1]:2"}
    broker = from_config(Config.from_env(env), MemoryRegistry())
    assert isinstance(broker, NatsBroker)
    assert (broker.servers, broker.jetstream) == (["nats://127.0.0.1:1", "nats://[::1]:2"], True)


def test_broker_of_one_url_refuses_two() -> None:
    from micro.broker import from_config

    env = {"MICRO_BROKER": "redis", "MICRO_BROKER_ADDRESS": "redis://a:1/0,redis://b:2/0"}
    with pytest.raises(ConfigError, match=r"MICRO_BROKER_ADDRESS=.*redis takes one URL"):
        from_config(Config.from_env(env), MemoryRegistry())
    with pytest.raises(ConfigError, match="MICRO_BROKER='kafka': expected one of grpc, memory"):
        Config.from_env({"MICRO_BROKER": "kafka"})


def test_credentials_in_addresses_never_print() -> None:
    from micro.broker import from_config
    from micro.urls import masked

    assert masked("nats://app:pw1@127.0.0.1:4222") == "nats://app:***@127.0.0.1:4222"
    assert masked("nats://token1@127.0.0.1:4222") == "nats://***@127.0.0.1:4222"  # a NATS token
    assert masked("redis://:pw1@127.0.0.1:6379/0") == "redis://***@127.0.0.1:6379/0"
    assert masked("app:p@w1@127.0.0.1:1") == "app:***@127.0.0.1:1"  # no scheme, '@' inside
    assert masked("127.0.0.1:2379") == "127.0.0.1:2379"
    urls = "redis://:pw1@127.0.0.1:1/0,redis://u:pw2@127.0.0.1:2/0"
    config = Config.from_env({"MICRO_BROKER": "redis", "MICRO_BROKER_ADDRESS": urls})
    with pytest.raises(ConfigError) as two:
        from_config(config, MemoryRegistry())
    with pytest.raises(ConfigError) as unparsed:
        Config.from_env({"MICRO_SERVER_ADDRESS": "u:pw4@127.0.0.1"})
    shown = [repr(config), str(two.value), str(unparsed.value)]
    assert "redis://***@127.0.0.1:1/0" in repr(config)
    assert "u:***@127.0.0.1:2/0" in str(two.value)
    assert not [text for text in shown if "pw" in text], shown


def test_attempt_timeout_from_environment() -> None:
    config = Config.from_env({"MICRO_CLIENT_ATTEMPT_TIMEOUT": "0.25"})
    assert micro.Client(config=config).attempt_timeout == 0.25
    assert micro.Client(config=config, attempt_timeout=1.0).attempt_timeout == 1.0
    with pytest.raises(ConfigError, match="MICRO_CLIENT_ATTEMPT_TIMEOUT='never'"):
        Config.from_env({"MICRO_CLIENT_ATTEMPT_TIMEOUT": "never"})
