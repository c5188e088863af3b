"""How `provisioner worker --processes N` shares its threads among its processes."""

from __future__ import annotations

import pytest

from worker.runtime.worker_group import child_env, split


@pytest.mark.parametrize(
    ("concurrency", "processes", "threads"),
    [
        (16, 1, [16]),
        (64, 4, [16, 16, 16, 16]),
        (5, 2, [3, 2]),
        (10, 4, [3, 3, 2, 2]),
        (3, 3, [1, 1, 1]),
    ],
)
def test_threads_are_spread_evenly_and_add_up(concurrency, processes, threads):
    assert split(concurrency, processes) == threads


def test_fewer_threads_than_processes_is_refused():
    with pytest.raises(ValueError, match="less than --processes 4"):
        split(3, 4)


def test_each_child_gets_its_own_metrics_port_when_metrics_are_served(monkeypatch):
    monkeypatch.delenv("PROVISIONER_WORKER_METRICS_PORT", raising=False)
    assert child_env(9100, 2)["PROVISIONER_WORKER_METRICS_PORT"] == "9102"
    assert "PROVISIONER_WORKER_METRICS_PORT" not in child_env(0, 2)
