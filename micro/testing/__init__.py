"""Testing micro services: an in-process harness, test doubles, captured events, a
made-up context for direct handler calls, and the pytest plugin's fixtures
(``micro_harness``, ``micro_sync_harness``) that hand them out.

    async def test_hello(micro_harness: micro.testing.Harness) -> None:
        await micro_harness.serve("greeter", Greeter())
        greeter = micro_harness.client(GreeterClient, "greeter")
        assert (await greeter.say_hello(HelloRequest(name="Ada"))).message == "Hello, Ada!"
"""

from micro.testing.context import context
from micro.testing.events import Delivery, Outcome
from micro.testing.fake import Call, Fake
from micro.testing.harness import Harness, SyncHarness

__all__ = ["Call", "Delivery", "Fake", "Harness", "Outcome", "SyncHarness", "context"]
