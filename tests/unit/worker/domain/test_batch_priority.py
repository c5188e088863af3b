"""A batch's positions at the broker's priority steps (pure)."""

from worker.domain.batch import queue_priority


def test_tiers_grow_four_times_and_use_the_brokers_steps():
    assert [queue_priority(p) for p in (0, 63, 64, 255, 256, 1023, 1024, 100_000)] == [
        0, 0, 3, 3, 6, 6, 9, 9,
    ]


def test_a_batch_continues_its_accounts_line():
    """A batch behind 250 of its account's waiting contacts starts in the second tier; one
    of an account with nothing waiting starts at the front."""
    from worker.domain.batch import queue_priorities

    assert queue_priorities(0, 3) == [0, 0, 0]
    assert queue_priorities(62, 4) == [0, 0, 3, 3]
    assert queue_priorities(250, 8) == [3] * 6 + [6] * 2
    assert queue_priorities(5000, 2) == [9, 9]
