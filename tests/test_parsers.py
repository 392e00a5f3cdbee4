"""The port tools' parsers on outputs recorded from the real tools (tests/recorded/).

Recorded in a namespace holding: 0.0.0.0:5000 and [::]:5000 (v6only) listeners of pid 9573, a listener
on 10.99.0.2:50000 (5000 is not 50000), a client connected TO 127.0.0.1:5000, one server-side
TIME_WAIT on 5000, and an unrelated listener on 127.0.0.1:6000.
"""

from pathlib import Path

import pytest

from remote.host.probes import ports

REC = Path(__file__).with_name("recorded")


def rec(name):
    return (REC / name).read_text()


def addresses(listeners):
    return sorted((item["address"], item["pid"]) for item in listeners)


def test_ss_as_root_names_owners_and_counts_time_wait():
    listeners, time_wait = ports.parse_ss(rec("ss_root.txt"), 5000)
    assert addresses(listeners) == [("0.0.0.0:5000", 9573), ("[::]:5000", 9573)]
    assert {item["process"] for item in listeners} == {"python3"}
    assert time_wait == 1


def test_ss_without_owner_columns_still_sees_listeners():
    listeners, time_wait = ports.parse_ss(rec("ss_nonroot.txt"), 5000)
    assert addresses(listeners) == [("0.0.0.0:5000", None), ("[::]:5000", None)]
    assert time_wait == 1


def test_ss_unfiltered_output_matches_the_port_exactly():
    text = rec("ss_all_root.txt")
    assert addresses(ports.parse_ss(text, 5000)[0]) == [("0.0.0.0:5000", 9573), ("[::]:5000", 9573)]
    assert addresses(ports.parse_ss(text, 50000)[0]) == [("10.99.0.2:50000", 9573)]
    assert ports.parse_ss(text, 500)[0] == []


def test_lsof_field_output():
    assert addresses(ports.parse_lsof(rec("lsof_root.txt"), 5000)) == [("*:5000", 9573), ("*:5000", 9573)]
    listeners = ports.parse_lsof(rec("lsof_ipv6.txt"), 5000)
    assert addresses(listeners) == [("10.0.0.5:5000", 813), ("[::1]:5000", 812)]
    assert [item["process"] for item in listeners] == ["python", "node"]


@pytest.mark.parametrize("name, owners", [("netstat_root.txt", True), ("netstat_nonroot.txt", False)])
def test_net_tools_netstat(name, owners):
    text = rec(name)
    listeners, time_wait = ports.parse_netstat(text, 5000)
    pid = 9573 if owners else None
    assert addresses(listeners) == [("0.0.0.0:5000", pid), ("[::]:5000", pid)]
    assert time_wait == 1
    assert addresses(ports.parse_netstat(text, 50000)[0]) == [("10.99.0.2:50000", pid)]
    assert ports.parse_netstat(text, 58498)[0] == []  # the client's side of a connection is no listener


def test_busybox_netstat_reports_ipv6_as_tcp():
    listeners, time_wait = ports.parse_netstat(rec("netstat_busybox.txt"), 5000)
    assert addresses(listeners) == [("0.0.0.0:5000", 812), ("[::]:5000", 812)]
    assert time_wait == 1
    assert [item["process"] for item in listeners] == ["python", "python"]


def test_proc_net_tcp_v4_and_v6():
    v4, tw4 = ports.parse_proc_net_tcp(rec("proc_net_tcp.txt"), 5000)
    v6, tw6 = ports.parse_proc_net_tcp(rec("proc_net_tcp6.txt"), 5000)
    assert sorted(item["address"] for item in v4.values()) == ["0.0.0.0:5000"]
    assert sorted(item["address"] for item in v6.values()) == ["[::]:5000"]
    assert (tw4, tw6) == (1, 0)
    assert [item["address"] for item in ports.parse_proc_net_tcp(rec("proc_net_tcp.txt"), 50000)[0].values()] \
        == ["10.99.0.2:50000"]
    assert all(inode.isdigit() for inode in v4)  # keys are socket inodes, for /proc/*/fd lookup


def test_fuser_output_is_pids():
    assert addresses(ports.parse_fuser(" 812 813", 5000)) == [("*:5000", 812), ("*:5000", 813)]


@pytest.mark.parametrize("stderr", [rec("ss_android_stderr.txt"), rec("netstat_android_stderr.txt")])
def test_android_denials_are_failures_never_free(stderr):
    with pytest.raises(ports.MethodFailed) as caught:
        ports._fail_if(stderr.strip(), 1)
    assert "Permission denied" in str(caught.value)
    with pytest.raises(ports.MethodFailed):  # even if the tool exited 0 while saying so
        ports._fail_if(stderr.strip(), 0)


def test_unparsable_output_is_a_failure():
    with pytest.raises(ports.MethodFailed):
        ports.parse_ss("LISTEN banana 0.0.0.0:5000 0.0.0.0:* x\n", 5000)
    with pytest.raises(ports.MethodFailed):
        ports.parse_netstat("garbage line one\nsomething else entirely\n", 5000)


@pytest.mark.parametrize("text, expected", [
    ("0.0.0.0:5000", ("0.0.0.0", 5000)), ("[::]:5000", ("::", 5000)), ("*:5000", ("*", 5000)),
    (":::5000", ("::", 5000)), ("127.0.0.1%lo:5000", ("127.0.0.1", 5000)),
    ("[::ffff:127.0.0.1]:5000", ("::ffff:127.0.0.1", 5000)),
])
def test_split_hostport(text, expected):
    assert ports.split_hostport(text) == expected


def test_the_host_side_runs_on_python_3_8():
    """All of remote/host/ (what ships to hosts), as `make lint` checks it."""
    import shutil
    import subprocess
    import sys

    vermin = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    out = subprocess.run([vermin, "-q", "--no-tips", "-t=3.8-", "--violations", str(Path(ports.__file__).parent)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
