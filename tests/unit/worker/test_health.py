"""The liveness rules of worker.health: a heartbeat or tick within the age is alive, a silent
one is not, a refused database write is reported but is no reason to restart."""

from __future__ import annotations

import os

from worker import health


def test_a_worker_that_beat_recently_is_alive_even_while_the_database_refuses():
    verdict = health.judge_workers(
        [{"pid": 7, "at": 100.0, "database": "OperationalError"}], now=104.0, max_age_s=15)
    assert verdict.alive
    assert "not recorded: OperationalError" in verdict.message


def test_one_silent_worker_process_fails_the_container():
    records = [{"pid": 7, "at": 100.0, "database": "ok"}, {"pid": 8, "at": 80.0}]
    verdict = health.judge_workers(records, now=100.0, max_age_s=15)
    assert not verdict.alive and "worker 8" in verdict.message


def test_no_heartbeat_yet_is_not_alive():
    assert not health.judge_workers([], now=1.0, max_age_s=15).alive
    assert not health.judge_beat(None, now=1.0, max_age_s=60).alive


def test_beat_is_alive_until_its_last_tick_is_older_than_the_age():
    assert health.judge_beat({"at": 100.0}, now=159.0, max_age_s=60).alive
    assert not health.judge_beat({"at": 100.0}, now=161.0, max_age_s=60).alive


def test_files_of_processes_that_are_gone_are_not_judged(tmp_path):
    health.record(health.worker_file(tmp_path), database="ok")
    # The pid of a process that has exited (a container restart leaves its file behind).
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    (tmp_path / "health" / f"worker-{pid}.json").write_text(f'{{"pid": {pid}, "at": 0}}')
    verdict = health.check_workers(tmp_path, max_age_s=15)
    assert verdict.alive and f"worker {os.getpid()} " in verdict.message
    assert f"worker {pid}" not in verdict.message
