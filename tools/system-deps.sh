#!/bin/sh
# Install the Debian packages the tests need, when they are missing and we are root.
# Not root: say what is missing (the tests that need it will skip) and carry on.
set -eu
missing=""
need() {  # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] || missing="$missing $2"
}
need sshd openssh-server
need ssh openssh-client
need ssh-keygen openssh-client
need ip iproute2
need unshare util-linux
need setpriv util-linux
need ss iproute2
need lsof lsof
need netstat net-tools
need fuser psmisc
need ps procps
need chromium chromium
need faketime faketime  # steps the wall clock under one process tree: the clock tests
need etcd etcd-server    # a real etcd cluster for the bot's lease (tests/etcdlab.py); a package-started one is left alone
need etcdctl etcd-client
need openssl openssl     # the test cluster's CA
# the test users get Debian's own python3 (root's pyenv is out of their reach), with venv for deploys
[ -x /usr/bin/python3 ] || missing="$missing python3"
/usr/bin/python3 -c "import ensurepip, venv" 2>/dev/null || missing="$missing python3-venv"
[ -z "$missing" ] && exit 0
missing=$(echo $missing | tr ' ' '\n' | sort -u | tr '\n' ' ')
if [ "$(id -u)" != 0 ]; then
    echo "system-deps: missing$missing- install them as root (apt-get install$missing); tests needing them will skip" >&2
    exit 0
fi
echo "system-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
