"""The inventory's `coordination:` section (remote/coordination.py) and `doctor`'s view of the etcd
cluster from a host's own side, against a real 3-member cluster with TLS and auth (tests/etcdlab.py)."""

import etcdlab
import pytest
from dashproc import invoke, local_inventory

from remote.errors import InventoryError
from remote.inventory import load

cluster = etcdlab.cluster  # the module's cluster fixture (tests/etcdlab.py)


def write(tmp_path, section, ca=True):
    (tmp_path / "ca.pem").write_text("not checked at load\n")
    path = tmp_path / "inventory.yml"
    path.write_text("hosts:\n  pi: {hostname: 10.0.0.1}\ncoordination:\n%s" % section)
    return path


def test_the_section_is_read_and_the_hosts_know_it(tmp_path):
    inventory = load(write(tmp_path, "  etcd: [https://10.0.0.2:2379, https://10.0.0.3:2379]\n  ca: ca.pem\n"
                                     "  user: sulfur\n  lease_ttl: 15s\n"))
    c = inventory.coordination
    assert c.endpoints == ["https://10.0.0.2:2379", "https://10.0.0.3:2379"] and c.lease_ttl == 15
    assert c.ca == str(tmp_path / "ca.pem") and inventory.hosts["pi"].coordination is c
    assert c.request()["ca_pem"] == "not checked at load\n" and "password" not in c.request()
    assert load(write(tmp_path, "  etcd: https://10.0.0.2:2379\n")).coordination.lease_ttl == 10


@pytest.mark.parametrize("section, where, why", [
    ("  etcd: [https://a:2379]\n  password: hunter2\n", "coordination.password", "ETCD_PASSWORD"),
    ("  etcd: [ftp://a:2379]\n", "coordination.etcd", "is not an endpoint"),
    ("  etcd: []\n", "coordination.etcd", "give one endpoint"),
    ("  etcd: [https://a:2379]\n  lease_ttl: 3s\n", "coordination.lease_ttl", "at least 5s"),
    ("  etcd: [https://a:2379]\n  lease_ttl: 7.5\n", "coordination.lease_ttl", "whole number"),
    ("  etcd: [https://a:2379]\n  ca: nowhere.pem\n", "coordination.ca", "is not a readable file"),
    ("  etcd: [https://a:2379]\n  ttl: 10s\n", "coordination.ttl", "unknown key"),
    ("  user: sulfur\n", "coordination.etcd", "missing"),
])
def test_a_bad_section_is_one_line_with_its_place(tmp_path, section, where, why):
    with pytest.raises(InventoryError) as bad:
        load(write(tmp_path, section))
    line = str(bad.value)
    assert line.startswith(str(tmp_path / "inventory.yml") + ":") and where in line and why in line, line
    assert "\n" not in line and "hunter2" not in line




def local_host(tmp_path, cluster, password=etcdlab.PASSWORD, endpoints=None):
    app = tmp_path / "app"
    (app / "shared").mkdir(parents=True, exist_ok=True)
    (app / "shared" / ".env").write_text("ETCD_PASSWORD=%s\n" % password if password else "")
    path = local_inventory(tmp_path / "inventory.yml", app)
    path.write_text(path.read_text() + "coordination:\n  etcd: [%s]\n  ca: %s\n  user: %s\n  lease_ttl: 10s\n" % (
        ", ".join(endpoints or cluster.endpoints), cluster.ca, etcdlab.USER))
    return path


def test_doctor_says_what_the_host_sees_of_the_cluster(tmp_path, cluster):
    out = invoke(local_host(tmp_path, cluster), "doctor")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "local: etcd 3 of 3 endpoints answer, login ok" in out.stdout, out.stdout
    assert "PROBLEM" not in out.stdout and etcdlab.PASSWORD not in out.stdout + out.stderr
    out = invoke(local_host(tmp_path, cluster, password="wrong"), "doctor")
    assert "local: etcd PROBLEM: etcd refused user 'sulfur': wrong name or password" in out.stdout, out.stdout
    out = invoke(local_host(tmp_path, cluster, password=None), "doctor")
    assert "no ETCD_PASSWORD in shared/.env" in out.stdout, out.stdout
    out = invoke(local_host(tmp_path, cluster, endpoints=cluster.endpoints[:1]), "doctor")
    assert "etcd warning: a single etcd endpoint" in out.stdout, out.stdout
    cluster.kill(2)
    try:
        out = invoke(local_host(tmp_path, cluster), "doctor")
        assert "local: etcd 2 of 3 endpoints answer, login ok" in out.stdout, out.stdout
        assert "etcd PROBLEM: etcd %s unreachable from here" % cluster.endpoints[2] in out.stdout
    finally:
        cluster.start(2, state="existing")
