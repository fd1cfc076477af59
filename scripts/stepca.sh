#!/usr/bin/env bash
# Start or stop a private smallstep step-ca on loopback for tests and the demo.
#
#   scripts/stepca.sh start DIR   # build (once, cached), init, start, wait for /health
#   scripts/stepca.sh stop DIR    # stop exactly the step-ca started in DIR
#
# start writes DIR/env (export AMTOPS_TEST_STEPCA_* lines for `make test`
# to source) and DIR/step-ca.pid, and prints the env file's path.
#
# The CA is made by scripts/stepcainit (no step CLI needed): RSA-2048 root
# and intermediate, because older AMT firmware (< 12) accepts no larger or
# EC CA keys, whereas `step ca init` would make EC P-256 ones; one JWK
# provisioner with a random password; CRL enabled and regenerated on revoke.
set -euo pipefail

STEPCA_MODULE=github.com/smallstep/certificates
STEPCA_VERSION=v0.30.2
PROVISIONER=amtops
REPO=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "stepca.sh: $*" >&2; exit 1; }

# stepca_bin prints the path of a step-ca binary of STEPCA_VERSION, building
# it into GOBIN (default GOPATH/bin) the first time (about 100 s cold).
stepca_bin() {
	local gobin bin
	gobin=$(go env GOBIN)
	[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
	bin="$gobin/step-ca"
	if [ -x "$bin" ] && go version -m "$bin" 2>/dev/null | grep -q "mod[[:space:]]*$STEPCA_MODULE[[:space:]]*$STEPCA_VERSION"; then
		echo "$bin"
		return
	fi
	echo "stepca.sh: building step-ca $STEPCA_VERSION into $gobin (cached afterwards)" >&2
	(cd "$REPO" && CGO_ENABLED=0 GOBIN="$gobin" go install "$STEPCA_MODULE/cmd/step-ca@$STEPCA_VERSION") >&2
	echo "$bin"
}

running() { # running PIDFILE: the recorded step-ca still runs
	local pid
	[ -f "$1" ] || return 1
	pid=$(cat "$1")
	[ -n "$pid" ] && [ "$(ps -p "$pid" -o comm= 2>/dev/null)" = "step-ca" ]
}

start() {
	local dir=$1 bin port url pid
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	if running "$dir/step-ca.pid"; then
		echo "$dir/env"
		return
	fi
	bin=$(stepca_bin)
	(cd "$REPO" && go build -o "$dir/stepcainit" ./scripts/stepcainit)
	# A free port can be taken between choosing and binding: try a few times.
	for attempt in 1 2 3; do
		rm -rf "$dir/certs" "$dir/secrets" "$dir/config" "$dir/db" "$dir/env"
		port=$("$dir/stepcainit" -dir "$dir" -provisioner "$PROVISIONER")
		url="https://127.0.0.1:$port"
		"$bin" "$dir/config/ca.json" </dev/null >"$dir/step-ca.log" 2>&1 &
		pid=$!
		echo "$pid" >"$dir/step-ca.pid"
		for _ in $(seq 1 150); do
			if curl -sf --max-time 2 --cacert "$dir/certs/root_ca.crt" "$url/health" >/dev/null 2>&1; then
				cat >"$dir/env" <<EOF
export AMTOPS_TEST_STEPCA_URL=$url
export AMTOPS_TEST_STEPCA_ROOT=$dir/certs/root_ca.crt
export AMTOPS_TEST_STEPCA_PROVISIONER=$PROVISIONER
export AMTOPS_TEST_STEPCA_PASSWORD_FILE=$dir/secrets/password
export AMTOPS_TEST_STEPCA_CAJSON=$dir/config/ca.json
EOF
				echo "$dir/env"
				return
			fi
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		rm -f "$dir/step-ca.pid"
		echo "stepca.sh: attempt $attempt failed; log:" >&2
		tail -5 "$dir/step-ca.log" >&2 || true
	done
	die "step-ca did not become healthy; see $dir/step-ca.log"
}

stop() {
	local dir=$1 pid
	[ -f "$dir/step-ca.pid" ] || return 0
	pid=$(cat "$dir/step-ca.pid")
	if running "$dir/step-ca.pid"; then
		kill -TERM "$pid"
		for _ in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			kill -KILL "$pid"
		fi
	fi
	rm -f "$dir/step-ca.pid" "$dir/env"
}

case "${1:-}" in
start) [ -n "${2:-}" ] || die "usage: $0 start DIR"; start "$2" ;;
stop) [ -n "${2:-}" ] || die "usage: $0 stop DIR"; stop "$2" ;;
*) die "usage: $0 start|stop DIR" ;;
esac
