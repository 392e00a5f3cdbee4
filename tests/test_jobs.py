"""Work off the supervisor's loop (remote/host/supervision/jobs.py): real threads and real child processes.

The loop must never wait for a job: these tests check that an outcome arrives through ``collect()``
(and wakes a select on the supervisor's self-pipe), that a deadline ends a job that hangs, that a child
process past its deadline is really killed, and that a failure is an outcome, never an exception.
"""

import os
import select
import sys
import threading
import time

from remote.host.supervision.jobs import Jobs
from remote.host.supervision.selfpipe import SelfPipe


def wait_for(jobs, count, timeout=20.0):
    outcomes, deadline = [], time.monotonic() + timeout
    while len(outcomes) < count and time.monotonic() < deadline:
        outcomes += jobs.collect()
        time.sleep(0.01)
    return outcomes


def test_a_finished_job_wakes_the_loop_and_its_outcome_is_handed_over_on_the_loops_thread():
    pipe = SelfPipe()
    jobs = Jobs(wake=pipe.wake)
    release, seen = threading.Event(), []
    jobs.thread("sum", lambda: release.wait(10) and 42, deadline=30,
                on_done=lambda outcome: seen.append((outcome, threading.current_thread())))
    assert jobs.collect() == [] and jobs.names() == ["sum"]
    assert select.select([pipe], [], [], 0.05)[0] == []  # nothing finished: the loop may sleep
    release.set()
    assert select.select([pipe], [], [], 10)[0] == [pipe]  # the job's end wakes it at once
    pipe.take()
    outcomes = jobs.collect()
    assert [(o.name, o.ok, o.value, o.timed_out) for o in outcomes] == [("sum", True, 42, False)]
    assert seen[0][0] is outcomes[0] and seen[0][1] is threading.current_thread()
    assert jobs.names() == [] and jobs.due_in() is None


def test_a_failing_job_is_an_outcome_with_one_line():
    jobs = Jobs()

    def boom():
        raise ValueError("no such snapshot\nsecond line")

    jobs.thread("boom", boom, deadline=30)
    [outcome] = wait_for(jobs, 1)
    assert not outcome.ok and outcome.error == "ValueError: no such snapshot" and not outcome.timed_out


def test_a_job_that_hangs_times_out_at_its_deadline_and_its_late_result_is_dropped():
    jobs, release = Jobs(), threading.Event()
    jobs.thread("hang", lambda: release.wait(30) and "late", deadline=0.3)
    assert 0 < jobs.due_in() <= 0.3
    started = time.monotonic()
    [outcome] = wait_for(jobs, 1)
    assert outcome.timed_out and not outcome.ok and time.monotonic() - started < 5
    release.set()
    time.sleep(0.1)
    assert wait_for(jobs, 1, timeout=0.5) == []  # the late "late" never shows up


def test_a_child_process_past_its_deadline_is_killed(tmp_path):
    marker = tmp_path / "pid"
    code = "import os, time; open(%r, 'w').write(str(os.getpid())); time.sleep(60)" % str(marker)
    jobs = Jobs()
    jobs.process("sleeper", [sys.executable, "-c", code], deadline=1.0)
    [outcome] = wait_for(jobs, 1)
    assert not outcome.ok and "TimeoutExpired" in outcome.error
    pid = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("pid %d outlived its deadline" % pid)


def test_a_child_process_answers_with_its_status_and_the_tail_of_its_output():
    jobs = Jobs()
    code = "import sys; sys.stdout.write('x' * 200000 + sys.stdin.read()); sys.exit(3)"
    jobs.process("chatty", [sys.executable, "-c", code], deadline=30, stdin=b"END")
    [outcome] = wait_for(jobs, 1)
    assert outcome.ok  # the job ran; whether exit 3 is a failure is its caller's to say
    status, tail = outcome.value
    assert status == 3 and tail.endswith("END") and len(tail) == 64 * 1024


def test_the_limit_refuses_more_jobs_than_a_loop_should_keep():
    jobs, release = Jobs(limit=2), threading.Event()
    assert jobs.thread("a", release.wait, 10, deadline=30) and jobs.thread("b", release.wait, 10, deadline=30)
    assert jobs.thread("c", release.wait, 10, deadline=30) is None
    release.set()
    assert len(wait_for(jobs, 2)) == 2


def test_a_handler_that_raises_is_its_jobs_outcome_never_the_loops_end():
    """The scheduled snapshot's handler once raised on an answer of a new shape and ended the supervisor."""
    jobs = Jobs()

    def broken(outcome):
        raise TypeError("object of type 'int' has no len()")

    jobs.thread("backup", lambda: 7, deadline=10, on_done=broken)
    [outcome] = wait_for(jobs, 10)
    assert not outcome.ok and "its handler failed: TypeError" in outcome.error
