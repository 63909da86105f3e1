#!/bin/sh
# make test-daemons: real daemons nobody here wrote, under rs (the tests
# behind the daemons build tag in tests/daemons_test.go). Installs what
# they need from Debian when missing; a daemon that cannot be had is
# skipped with one line saying so.
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}

# have PACKAGE BINARY: BINARY is there, or PACKAGE installs it.
have() {
	command -v "$2" >/dev/null 2>&1 && return 0
	# Debian's postinst would start the system's own instance where
	# nothing says not to: a policy-rc.d of ours says so for the install.
	policy=
	if [ ! -e /usr/sbin/policy-rc.d ] && [ "$(id -u)" -eq 0 ]; then
		policy=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
	fi
	ok=0
	sh tests/bench/install-peers.sh "$1" || ok=1
	[ -z "$policy" ] || rm -f "$policy"
	[ "$ok" -eq 0 ] && command -v "$2" >/dev/null 2>&1
}

run=
if have redis-server redis-server && have redis-tools redis-cli; then
	run="${run}|TestDaemonRedis"
else
	echo "test-daemons: skipping redis-server: it is not installed and could not be installed from Debian"
fi
if have postgresql-15 /usr/lib/postgresql/15/bin/postgres && have postgresql-client-15 /usr/lib/postgresql/15/bin/psql; then
	run="${run}|TestDaemonPostgres"
else
	echo "test-daemons: skipping PostgreSQL: postgresql-15 is not installed and could not be installed from Debian"
fi
if [ -z "$run" ]; then
	echo "test-daemons: no daemon to test"
	exit 0
fi
exec $GO test -race -count=1 -timeout 10m -tags daemons -run "^(${run#|})\$" ./tests/
