#!/usr/bin/env bash
# private-postgres.sh starts (or stops) a private PostgreSQL server for a benchmark, from the
# installed binaries, on its own port and data directory, so a run can choose settings such
# as autovacuum without touching the shared server:
#
#	bash examples/fanout/private-postgres.sh start /tmp/pg-av 5499 on   # autovacuum on
#	go run ./examples/fanout -backend postgres -n 1000000 -progress 1m \
#	    -dsn 'postgres://postgres@127.0.0.1:5499/postgres?sslmode=disable'
#	bash examples/fanout/private-postgres.sh stop /tmp/pg-av
#
# Every other setting is PostgreSQL's default, as on the shared server (which runs with
# autovacuum off). The data directory is created afresh on start and removed on stop.
set -euo pipefail

cmd=${1:?usage: private-postgres.sh start DIR PORT on|off | stop DIR}
dir=${2:?data directory}
bin=$(dirname "$(readlink -f "$(command -v initdb)")")

# PostgreSQL refuses to run as root; run its binaries as the postgres user then.
as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case $cmd in
start)
	port=${3:?port}
	autovacuum=${4:?autovacuum on or off}
	rm -rf "$dir"
	mkdir -p "$dir"
	[ "$(id -u)" = 0 ] && chown postgres "$dir"
	as_pg "$bin/initdb" -D "$dir" -U postgres --auth=trust >/dev/null
	as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w start \
		-o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c autovacuum=$autovacuum" >/dev/null
	echo "private PostgreSQL on 127.0.0.1:$port (autovacuum $autovacuum), data in $dir"
	;;
stop)
	as_pg "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
	rm -rf "$dir"
	;;
*)
	echo "unknown command $cmd (start or stop)" >&2
	exit 2
	;;
esac
