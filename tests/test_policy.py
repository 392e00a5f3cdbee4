"""The supervisor's policy on a fake monotonic clock: backoff, giving up, forgetting, handover deadlines.

These are the rules a real supervisor applies (tests/test_stack_*.py run it); here a day of crashes
takes milliseconds. The "process" handed to Service is a placeholder with a pid: the policy never looks further
into it, and real processes are what the stack tests exercise.
"""

from dashproc import Clock, Running

from remote.host.supervision.handover import Handover, WarmSpare
from remote.host.supervision.loop import DEFAULTS
from remote.host.supervision.service import RestartPolicy, Service


def bot(clock, **policy):
    return Service("bot", ["bot"], {}, "/", "/nonexistent.log",
                   RestartPolicy.from_config(dict(DEFAULTS, **policy)), clock)


def crash_loop(svc, clock, run_for, until):
    """Start, run ``run_for`` seconds, crash, wait out the backoff, again, until the clock says ``until``
    or the service is given up. Returns the delays it was given."""
    delays = []
    svc.running(Running())
    while clock() < until:
        clock.advance(run_for)
        delay = svc.exited(1, ["boom"])
        if delay is None:
            return delays
        delays.append(delay)
        assert not svc.due()
        clock.advance(delay)
        assert svc.due()
        svc.restarts += 1
        svc.running(Running())
    return delays


def test_an_immediate_crash_backs_off_doubling_then_is_given_up():
    clock = Clock()
    svc = bot(clock)
    delays = crash_loop(svc, clock, 0.5, clock() + 3600)
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert svc.state == "failed" and svc.failures == 5 and svc.next_start is None and not svc.due()


def test_a_day_of_crashes_every_ten_minutes_is_restarted_all_day():
    """Each run outlives stable_after (60 s), so each crash starts a fresh count: never given up."""
    clock = Clock()
    svc = bot(clock)
    delays = crash_loop(svc, clock, 600, clock() + 24 * 3600)
    assert svc.state == "running" and set(delays) == {1.0}
    assert svc.restarts == len(delays) == 144  # one per 601 s (600 up, 1 backoff), until the day is over


def test_crashes_under_the_stable_time_add_up():
    clock = Clock()
    svc = bot(clock)
    delays = crash_loop(svc, clock, 59, clock() + 24 * 3600)
    assert delays == [1.0, 2.0, 4.0, 8.0] and svc.state == "failed"


def test_the_backoff_is_capped():
    clock = Clock()
    svc = bot(clock, max_failures=10)
    assert crash_loop(svc, clock, 0, clock() + 3600) == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


def test_uptime_is_measured_on_the_clock_the_supervisor_gives():
    clock = Clock()
    svc = bot(clock)
    svc.running(Running(), since=clock() - 30)  # a handover: it started 30 s before it was READY
    clock.advance(90)
    assert svc.uptime() == 120 and svc.describe()["state"] == "running"


def test_a_handover_expires_at_its_deadline_and_answers_every_waiter():
    clock = Clock()

    handover = Handover(bot(clock), Running(), clock(), DEFAULTS["ready_timeout"], "first.result")
    handover.join("second.result")
    handover.join(None)  # a request nobody waits for adds nobody
    assert handover.waiters == ["first.result", "second.result"]
    assert handover.is_from(4242) and not handover.is_from(4243)
    clock.advance(DEFAULTS["ready_timeout"] - 0.01)
    assert not handover.expired(clock())
    clock.advance(0.01)
    assert handover.expired(clock())


def test_a_spare_fits_only_armed_alive_and_with_the_same_code():
    class Proc:
        def __init__(self, code):
            self.code = code

        def poll(self):
            return self.code

    spare = WarmSpare(Proc(None), ("rel", "py", [("a", 1)]))
    assert not spare.fits(("rel", "py", [("a", 1)]))  # not armed yet
    spare.armed = True
    assert spare.fits(("rel", "py", [("a", 1)]))
    assert not spare.fits(("rel", "py", [("a", 2)]))  # the code changed since it loaded it
    exited = WarmSpare(Proc(0), spare.code_key)
    exited.armed = True
    assert not exited.fits(spare.code_key)  # it exited: never
