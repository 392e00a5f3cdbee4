"""add-host's and remove-host's edits of inventory.yml: comments, order and layout kept, every layout
of hosts and groups, and the result always a valid inventory (or nothing written)."""

import pytest

from remote import inventory_text
from remote.errors import InventoryError

PHONE = {"hostname": "192.168.1.50", "port": 8022, "platform": "termux", "python": "python"}
FLEET = """# my fleet: do not lose this comment
defaults:
  user: bot   # everyone
hosts:
  pi:
    hostname: raspberrypi.local   # the Pi
    # its port
    port: 22
  # the VPS below
  vps: {hostname: vps.example.com}

# groups
groups:
  home: [pi]
  cloud:
    - vps
"""


def test_a_host_is_appended_after_the_last_one_with_everything_else_kept(tmp_path):
    path = tmp_path / "inventory.yml"
    text = inventory_text.add_host(FLEET, path, "phone", PHONE, group="home")
    added = '  phone: {hostname: "192.168.1.50", port: 8022, platform: termux, python: python}'
    assert text == FLEET.replace("  vps: {hostname: vps.example.com}\n",
                                 "  vps: {hostname: vps.example.com}\n%s\n" % added).replace(
        "home: [pi]", "home: [pi, phone]")
    inventory = inventory_text.check(path, text)
    assert list(inventory.hosts) == ["pi", "vps", "phone"] and inventory.groups["home"] == ["pi", "phone"]
    assert inventory.hosts["phone"].port == 8022 and inventory.hosts["phone"].platform == "termux"
    # and back: remove-host gives the very text it started from
    assert inventory_text.remove_host(text, path, "phone") == FLEET


@pytest.mark.parametrize("text", ["hosts:\n", "defaults:\n  user: bot\n", "", "hosts:\n  pi: {hostname: pi}\n"
                                  "# trailing\n"])
def test_sparse_inventories_get_the_sections_they_lack(tmp_path, text):
    path = tmp_path / "inventory.yml"
    new = inventory_text.add_host(text, path, "phone", PHONE, group="home")
    inventory = inventory_text.check(path, new)
    assert "phone" in inventory.hosts and inventory.groups == {"home": ["phone"]}
    assert all(line in new.splitlines() for line in text.splitlines())  # nothing of theirs went


def test_a_block_style_host_and_its_place_in_a_block_list_go_whole(tmp_path):
    path = tmp_path / "inventory.yml"
    text = inventory_text.remove_host(FLEET, path, "pi")
    assert "raspberrypi" not in text and "# its port" not in text
    assert "# the VPS below" in text and "# my fleet" in text  # the next host's comment stays
    assert inventory_text.check(path, text).groups == {"home": [], "cloud": ["vps"]}
    text = inventory_text.remove_host(text, path, "vps")
    assert "    - vps" not in text and "  cloud: []" in text and inventory_text.check(path, text).hosts == {}


def test_layouts_it_cannot_follow_and_bad_values_are_one_line_and_write_nothing(tmp_path):
    path = tmp_path / "inventory.yml"
    path.write_text(FLEET)
    with pytest.raises(InventoryError, match="hosts is written in flow style"):
        inventory_text.add_host("hosts: {pi: {hostname: pi}}\n", path, "phone", PHONE)
    text = inventory_text.add_host(FLEET, path, "phone", dict(PHONE, port=70000))
    with pytest.raises(InventoryError, match=r"inventory.yml:11: hosts.phone.port: 70000 is outside 1-65535"):
        inventory_text.check(path, text)
    assert path.read_text() == FLEET and sorted(p.name for p in tmp_path.iterdir()) == ["inventory.yml"]


def test_values_that_yaml_would_misread_are_quoted():
    assert inventory_text.scalar("yes") == '"yes"' and inventory_text.scalar("10.0.0.2") == '"10.0.0.2"'
    assert inventory_text.scalar("pi.local") == "pi.local" and inventory_text.scalar(8022) == "8022"
    assert inventory_text.scalar("a: b") == '"a: b"'
