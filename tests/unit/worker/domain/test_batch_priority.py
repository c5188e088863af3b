"""A batch's positions at the broker's priority steps (pure)."""

from worker.domain.batch import queue_priority


def test_tiers_grow_four_times_and_use_the_brokers_steps():
    assert [queue_priority(p) for p in (0, 63, 64, 255, 256, 1023, 1024, 100_000)] == [
        0, 0, 3, 3, 6, 6, 9, 9,
    ]
