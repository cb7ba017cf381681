"""runs/live.py's Inbox: the direct path never lets a later hint overtake an earlier one."""

from __future__ import annotations

from runs import live


class Taker:
    """Takes hints up to `upto` (seq) at once; leaves the rest."""

    def __init__(self, upto: int) -> None:
        self.upto = upto
        self.taken: list[int] = []
        self.offered = 0

    def __call__(self, hints: list[live.Hint]) -> list[live.Hint]:
        self.offered += 1
        for i, (seq, _) in enumerate(hints):
            if seq > self.upto:
                return hints[i:]
            self.taken.append(seq)
        return []


def hints(*seqs: int) -> list[live.Hint]:
    return [(s, f'{{"seq":{s}}}') for s in seqs]


async def test_what_the_consumer_takes_at_once_never_queues() -> None:
    taker = Taker(upto=10)
    inbox = live.Inbox(direct=taker)
    inbox.put(hints(1, 2))
    inbox.put(hints(3))
    assert taker.taken == [1, 2, 3]
    assert not inbox.batches and not inbox._ready.is_set()


async def test_once_something_waits_later_hints_queue_behind_it() -> None:
    taker = Taker(upto=2)
    inbox = live.Inbox(direct=taker)
    inbox.put(hints(1, 2, 3, 4))  # 3 and 4 left to the pump
    taker.upto = 10
    inbox.put(hints(5))  # must not overtake 3 and 4
    assert taker.taken == [1, 2]
    got, overflowed = await inbox.get()
    assert [s for s, _ in got] == [3, 4, 5] and not overflowed


async def test_while_the_pump_works_through_a_batch_nothing_goes_direct() -> None:
    taker = Taker(upto=0)
    inbox = live.Inbox(direct=taker)
    inbox.put(hints(1))
    got, _ = await inbox.get()  # the pump took 1 and is sending it
    taker.upto = 10
    inbox.put(hints(2))
    assert taker.taken == [] and [s for s, _ in got] == [1]
    inbox.done()
    got, _ = await inbox.get()
    assert [s for s, _ in got] == [2]
    inbox.done()
    inbox.put(hints(3))
    assert taker.taken == [3]
