"""Bad input: one line on stderr saying what and where, exit code 1 (2 for usage
errors, as argparse), no traceback."""

from __future__ import annotations

import re

import pytest
from cli_support import Node, micro, unique

pytestmark = pytest.mark.backend


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    (line,) = stderr.splitlines()
    return line


def test_unknown_service(multicast: None) -> None:
    name = unique("nosuch")
    done = micro("call", name, "Greeter.SayHello", "{}")
    assert done.returncode == 1
    assert one_line(done.stderr) == (
        f"micro call: service {name!r} not found in the mdns registry on 127.0.0.1"
    )


def test_unknown_method(greeter: Node) -> None:
    done = micro("call", greeter.name, "Greeter.Nope", "{}")
    assert done.returncode == 1
    assert one_line(done.stderr) == (
        f"micro call: greeter.v1.Greeter at {greeter.address} has no method 'Nope' "
        "(SayHello, LotsOfReplies, LotsOfGreetings, Chat)"
    )


def test_unknown_service_in_the_node(greeter: Node) -> None:
    done = micro("stream", greeter.name, "Nope.Chat")
    assert done.returncode == 1
    assert one_line(done.stderr).startswith(
        f"micro stream: {greeter.address} serves no service 'Nope' (it serves greeter.v1.Greeter"
    )


def test_invalid_json_fails_before_any_lookup() -> None:
    done = micro("call", "anything", "Greeter.SayHello", '{"name":', MICRO_REGISTRY="memory")
    assert done.returncode == 1
    assert one_line(done.stderr) == (
        "micro call: invalid JSON in the request argument: "
        "Expecting value: line 1 column 9 (char 8)"
    )


def test_json_that_does_not_fit_the_message(greeter: Node) -> None:
    done = micro("call", greeter.name, "Greeter.SayHello", '{"nmae": "Ada"}')
    assert done.returncode == 1
    assert re.fullmatch(
        r"micro call: the request argument does not fit greeter\.v1\.HelloRequest: "
        r'.*no field named "nmae".*',
        one_line(done.stderr),
    )


def test_bad_stdin_line_names_the_line_and_ends_the_stream(greeter: Node) -> None:
    stdin = '{"name": "x"}\n{"name": 7, "oops": 1}\n'
    done = micro("stream", greeter.name, "Greeter.LotsOfGreetings", stdin=stdin)
    assert done.returncode == 1
    assert one_line(done.stderr).startswith(
        "micro stream: stdin line 2 does not fit greeter.v1.HelloRequest: "
    )
    assert done.stdout == ""  # the call was cancelled, not completed with half the input


def test_handler_error_names_service_and_method(greeter: Node) -> None:
    done = micro("call", greeter.name, "Greeter.SayHello", "{}")
    assert done.returncode == 1
    assert one_line(done.stderr) == (
        f"micro call: {greeter.name} greeter.v1.Greeter/SayHello: "
        "INVALID_ARGUMENT: name is required"
    )


def test_unreachable_registry(unused_port: int) -> None:
    address = f"nats://127.0.0.1:{unused_port}"
    for command in (("services",), ("call", "greeter", "Greeter.SayHello", "{}")):
        done = micro(*command, "--registry", "nats", "--registry-address", address, "--json")
        assert done.returncode == 1
        assert re.fullmatch(
            rf"micro {command[0]}: NATS registry at {address} is unreachable: .*",
            one_line(done.stderr),
        )


def test_unreachable_etcd_registry_is_named_once(unused_port: int) -> None:
    # etcd names its servers without the scheme given: the line must not add ours.
    address = f"127.0.0.1:{unused_port}"
    for command in (("services",), ("call", "greeter", "Greeter.SayHello", "{}")):
        done = micro(*command, MICRO_REGISTRY="etcd", MICRO_REGISTRY_ADDRESS=f"http://{address}")
        assert done.returncode == 1
        line = one_line(done.stderr)
        assert line.startswith(f"micro {command[0]}: etcd registry at {address} is unreachable ")
        assert line.count("registry at") == 1


def test_unreachable_node(unused_port: int) -> None:
    done = micro("call", "x", "Greeter.SayHello", "{}", "--address", f"127.0.0.1:{unused_port}")
    assert done.returncode == 1
    assert one_line(done.stderr).startswith(
        f"micro call: reflection of 127.0.0.1:{unused_port} failed: UNAVAILABLE: "
    )


def test_bad_configuration_names_the_variable() -> None:
    done = micro("services", MICRO_REGISTER_TTL="soon")
    assert done.returncode == 1
    assert one_line(done.stderr).startswith("micro services: MICRO_REGISTER_TTL='soon': ")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ("call",),
            "micro call: error: the following arguments are required: SERVICE, METHOD "
            "(see micro call --help)",
        ),
        (
            ("call", "greeter", "Greeter.SayHello", "--bogus"),
            "micro call: error: unrecognized arguments: --bogus (see micro call --help)",
        ),
        (
            ("call", "greeter", "Greeter.SayHello", "--timeout", "soon"),
            "micro call: error: argument --timeout: invalid float value: 'soon' "
            "(see micro call --help)",
        ),
        ((), "micro: error: the following arguments are required: COMMAND (see micro --help)"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: tuple[str, ...], line: str) -> None:
    done = micro(*args)
    assert done.returncode == 2
    assert one_line(done.stderr) == line
    assert done.stdout == ""


def test_bad_flag_values_fail_before_any_lookup() -> None:
    call = ("call", "x", "Greeter.SayHello")
    for args, line in (
        ((*call, "--retries", "-1"), "micro call: --retries -1: expected 0 or more"),
        (
            (*call, "--timeout", "0"),
            "micro call: --timeout 0.0: expected a positive number of seconds",
        ),
        (
            ("health", "--timeout", "-1"),
            "micro health: --timeout -1.0: expected a positive number of seconds",
        ),
    ):
        done = micro(*args, MICRO_REGISTRY="memory")
        assert done.returncode == 1
        assert one_line(done.stderr) == line
