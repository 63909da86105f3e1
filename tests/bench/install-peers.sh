#!/bin/sh
# install-peers.sh [PACKAGE ...] installs the Debian packages of the
# outside programs the bench (and later tests) drive; by default all of
# them: redis-tools (redis-benchmark, redis-cli), runit (runsv), s6
# (s6-supervise, s6-svc, s6-notifyoncheck), wrk and apache2-utils (ab),
# the HTTP load tools of the http scenario. The bench names the ones it
# misses. Packages already installed are skipped, so it is cheap to run
# again. Quiet unless something fails; needs root (or sudo -n).
#
# --no-install-recommends matters for runit: its recommends (runit-init)
# would offer to replace the system's init. The bench only ever runs
# runsv on a directory of its own, as its child.
set -eu
[ $# -gt 0 ] || set -- redis-tools runit s6 wrk apache2-utils

missing=
for p in "$@"; do
	if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing="$missing $p"
	fi
done
[ -n "$missing" ] || exit 0

if [ "$(id -u)" -eq 0 ]; then
	sudo=
elif command -v sudo >/dev/null 2>&1; then
	sudo="sudo -n"
else
	echo "install-peers.sh: need root to install:$missing" >&2
	exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
apt="$sudo env DEBIAN_FRONTEND=noninteractive apt-get"
# shellcheck disable=SC2086 # $apt and $missing are word lists
if ! { $apt update -q && $apt install -y -q --no-install-recommends $missing; } >"$log" 2>&1; then
	echo "install-peers.sh: installing$missing failed:" >&2
	tail -n 20 "$log" >&2
	exit 1
fi
