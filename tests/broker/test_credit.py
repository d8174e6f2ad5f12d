"""JetStream pull credit on its own: a subscription asks for no more messages than it
has free handlers, counting what it asked for and has not received."""

from __future__ import annotations

from micro.broker.credit import PULL_EXPIRES, PullCredit


def test_the_first_pull_asks_for_every_handler() -> None:
    credit = PullCredit(8)
    pull = credit.pull(held=0, now=100.0)
    assert pull is not None
    assert (pull.batch, pull.expires, credit.requested) == (8, 100.0 + PULL_EXPIRES, 8)
    assert credit.pull(held=0, now=100.0) is None  # all of them are asked for


def test_messages_count_against_the_oldest_request() -> None:
    credit = PullCredit(8)
    first = credit.pull(held=0, now=0.0)
    assert first is not None
    for _ in range(6):
        credit.took_one()
    second = credit.pull(held=0, now=1.0)  # six handled and free again, two still to come
    assert second is not None
    assert (first.left, second.batch, credit.requested) == (2, 6, 8)
    for _ in range(3):
        credit.took_one()  # two finish the first request, the third is the second's
    assert (first.left, second.left, credit.requested) == (0, 5, 5)
    credit.forget(first)  # done already: nothing changes
    assert credit.requested == 5


def test_a_top_up_waits_until_half_the_handlers_are_free() -> None:
    credit = PullCredit(8)
    assert credit.pull(held=0, now=0.0) is not None
    for _ in range(8):
        credit.took_one()
    assert credit.pull(held=5, now=0.0) is not None  # 3 free, nothing open: ask
    assert credit.requested == 3
    assert credit.pull(held=2, now=0.0) is None  # 3 more free, but a request is open
    assert credit.pull(held=1, now=0.0) is not None  # 4 free: half
    assert credit.requested == 7


def test_a_request_not_sent_gives_its_credit_back() -> None:
    credit = PullCredit(4)
    pull = credit.pull(held=0, now=0.0)
    assert pull is not None
    credit.forget(pull)
    assert credit.requested == 0
    assert credit.pull(held=0, now=0.0) is not None


def test_a_request_the_server_ended_brings_nothing_more() -> None:
    credit = PullCredit(4)
    first = credit.pull(held=0, now=0.0)
    credit.took_one()
    credit.ended()  # 408: the rest of the oldest request will not come
    assert first is not None
    assert credit.requested == 0
    credit.ended()  # with nothing open: nothing to end
    assert credit.requested == 0


def test_requests_whose_end_never_came_are_forgotten_after_a_grace() -> None:
    credit = PullCredit(4)
    assert credit.pull(held=0, now=0.0) is not None
    credit.took_one()
    assert credit.pull(held=0, now=2.0) is None  # 1 free, 3 still asked for
    credit.expire(now=PULL_EXPIRES + 1.0, grace=1.0)  # expired, but within the grace
    assert credit.requested == 3
    credit.expire(now=PULL_EXPIRES + 1.5, grace=1.0)
    assert credit.requested == 0


def test_a_lost_connection_drops_every_open_request() -> None:
    credit = PullCredit(8)
    assert credit.pull(held=0, now=0.0) is not None
    credit.clear()
    assert credit.requested == 0
    pull = credit.pull(held=3, now=1.0)  # handlers still busy are not asked for again
    assert pull is not None
    assert pull.batch == 5
