#!/usr/bin/env bash
# samba.sh — a private Samba 4 AD DC on loopback for tests (see
# /work/shared/TEST-PEERS.md, "Active Directory").
#
#   scripts/samba.sh start DIR   install if missing, provision DIR (or reuse it),
#                                start samba, wait for LDAPS, write DIR/env
#   scripts/samba.sh stop DIR    TERM exactly the PID recorded in DIR/samba.master.pid
#   scripts/samba.sh env DIR     print DIR/env
#
# Everything Samba writes (databases, pid files, sockets, logs, TLS material)
# stays inside DIR. LDAP ports 389/636/3268/3269 cannot be moved in Samba 4.17,
# so start fails clearly when they are taken. The KDC port defaults to 88 and
# may be moved with SAMBA_KDC_PORT (only when DIR is provisioned).
#
# Source DIR/env to get AMTOPS_TEST_LDAP_* and AMTOPS_TEST_KRB5_REALM/KDC.
set -euo pipefail

REALM=AMT.TEST
DOMAIN=AMT
BASE_DN=DC=amt,DC=test
HOST=dc1
PKGS=(samba samba-ad-dc samba-ad-provision samba-dsdb-modules samba-vfs-modules winbind krb5-user ldb-tools ldap-utils openssl)

die() { echo "samba.sh: $*" >&2; exit 1; }
log() { echo "samba.sh: $*" >&2; }

usage() { die "usage: $0 start|stop|env DIR"; }

# missing_packages prints the packages of PKGS that are not installed.
missing_packages() {
	local p
	for p in "${PKGS[@]}"; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
	done
}

# install_packages installs what is missing, with a policy-rc.d that exits
# 101 so no daemon auto-starts on all interfaces; the previous policy-rc.d
# (or its absence) is restored afterwards, also when apt-get fails.
POLICY=/usr/sbin/policy-rc.d
POLICY_SAVED=""
POLICY_TOUCHED=0
restore_policy() {
	[ "$POLICY_TOUCHED" = 1 ] || return 0
	if [ -n "$POLICY_SAVED" ]; then
		cp -p "$POLICY_SAVED" "$POLICY"
		rm -f "$POLICY_SAVED"
	else
		rm -f "$POLICY"
	fi
	POLICY_TOUCHED=0
}
install_packages() {
	local missing
	missing=$(missing_packages | tr '\n' ' ')
	[ -n "${missing// /}" ] || return 0
	[ "$(id -u)" = 0 ] || die "missing packages ($missing); installing needs root: apt-get install $missing"
	if [ -e "$POLICY" ]; then
		POLICY_SAVED=$(mktemp)
		cp -p "$POLICY" "$POLICY_SAVED"
	fi
	POLICY_TOUCHED=1
	trap restore_policy EXIT
	printf '#!/bin/sh\nexit 101\n' >"$POLICY"
	chmod 0755 "$POLICY"
	log "installing $missing"
	local apt=(apt-get -o DPkg::Lock::Timeout=300 -y --no-install-recommends)
	# shellcheck disable=SC2086 # $missing is a list of package names
	DEBIAN_FRONTEND=noninteractive "${apt[@]}" install $missing >&2 ||
		{ DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update >&2 &&
			DEBIAN_FRONTEND=noninteractive "${apt[@]}" install $missing >&2; }
	restore_policy
	trap - EXIT
}

# port_busy PORT reports whether something listens on TCP PORT on any address.
port_busy() {
	ss -Hltn "sport = :$1" 2>/dev/null | grep -q . 
}

# running reports whether DIR's recorded master PID is a live samba.
running() {
	local pidf="$1/samba.master.pid" pid
	[ -s "$pidf" ] || return 1
	pid=$(cat "$pidf")
	[ -d "/proc/$pid" ] || return 1
	grep -q samba "/proc/$pid/comm" 2>/dev/null
}

make_tls() {
	local d="$1/tls"
	[ -s "$d/server.pem" ] && return 0
	mkdir -p "$d"
	chmod 0700 "$d"
	(
		cd "$d"
		umask 077
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out ca.key 2>/dev/null
		openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/O=amtops test/CN=amtops test CA" \
			-addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign" \
			-addext "subjectKeyIdentifier=hash" -out ca.pem
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out server.key 2>/dev/null
		openssl req -new -key server.key -subj "/O=amtops test/CN=${HOST}.amt.test" -out server.csr
		cat >server.ext <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:${HOST}.amt.test
authorityKeyIdentifier=keyid
EXT
		# A positive 63-bit serial: Go rejects negative serials.
		serial=$(( (RANDOM << 48 | RANDOM << 32 | RANDOM << 16 | RANDOM) & 0x7fffffffffffffff | 1 ))
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial "$serial" \
			-sha256 -days 825 -extfile server.ext -out server.pem 2>/dev/null
		rm -f server.csr server.ext
		chmod 0600 ca.key server.key
		chmod 0644 ca.pem server.pem
	)
}

provision() {
	local dir="$1" kdcport="${SAMBA_KDC_PORT:-88}" pass
	log "provisioning $REALM into $dir"
	rm -rf "$dir"
	mkdir -p "$dir"/{run,log,ncalrpc,winbindd,ntp_signd}
	chmod 0700 "$dir"
	# Complex enough for the default password policy: all four classes.
	pass="Adm1n-$(openssl rand -hex 12)-Zz!"
	(umask 077; printf '%s' "$pass" >"$dir/admin.pass")
	make_tls "$dir"
	samba-tool domain provision --targetdir="$dir" \
		--realm="$REALM" --domain="$DOMAIN" --server-role=dc --dns-backend=NONE \
		--use-rfc2307 --host-name="$HOST" --adminpass="$pass" \
		--option="interfaces=lo" \
		--option="bind interfaces only=yes" \
		--option="disable netbios=yes" \
		--option="server services=ldap, kdc" \
		--option="prefork children=1" \
		--option="pid directory=$dir/run" \
		--option="ncalrpc dir=$dir/ncalrpc" \
		--option="winbindd socket directory=$dir/winbindd" \
		--option="ntp signd socket directory=$dir/ntp_signd" \
		--option="log file=$dir/log/samba.log" \
		--option="krb5 port=$kdcport" \
		--option="tls enabled=yes" \
		--option="tls keyfile=$dir/tls/server.key" \
		--option="tls certfile=$dir/tls/server.pem" \
		--option="tls cafile=$dir/tls/ca.pem" \
		>"$dir/log/provision.log" 2>&1 || { tail -20 "$dir/log/provision.log" >&2; die "provision failed (log: $dir/log/provision.log)"; }
	echo "$kdcport" >"$dir/kdc.port"
}

write_env() {
	local dir="$1" kdcport
	kdcport=$(cat "$dir/kdc.port")
	(
		umask 077
		cat >"$dir/env" <<ENV
export AMTOPS_TEST_LDAP_URL=ldaps://127.0.0.1:636
export AMTOPS_TEST_LDAP_CA=$dir/tls/ca.pem
export AMTOPS_TEST_LDAP_BIND_DN='CN=Administrator,CN=Users,$BASE_DN'
export AMTOPS_TEST_LDAP_PASSWORD='$(cat "$dir/admin.pass")'
export AMTOPS_TEST_LDAP_BASE_DN=$BASE_DN
export AMTOPS_TEST_KRB5_REALM=$REALM
export AMTOPS_TEST_KDC=127.0.0.1:$kdcport
ENV
	)
}

wait_ldaps() {
	local dir="$1" i
	for i in $(seq 1 300); do
		if ! running "$dir"; then
			tail -30 "$dir/log/samba.out" >&2 || true
			die "samba exited during start (log: $dir/log/samba.out)"
		fi
		if LDAPTLS_CACERT="$dir/tls/ca.pem" LDAPTLS_REQCERT=demand ldapsearch -LLL -o nettimeout=2 \
			-H ldaps://127.0.0.1:636 -x -D "CN=Administrator,CN=Users,$BASE_DN" -y "$dir/admin.pass" \
			-b "$BASE_DN" -s base dn >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
	done
	die "LDAPS on 127.0.0.1:636 did not answer within 30 s (log: $dir/log/samba.out)"
}

start() {
	local dir="$1" t0 kdcport
	t0=$(date +%s.%N)
	install_packages
	case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac
	if running "$dir"; then
		log "already running (pid $(cat "$dir/samba.master.pid"))"
		wait_ldaps "$dir"
		write_env "$dir"
		return 0
	fi
	for p in 389 636 3268 3269; do
		port_busy "$p" && die "TCP port $p is already in use; Samba 4.17 cannot move its LDAP ports. Stop the other directory, or run in a network namespace (unshare -n) or on a loopback alias."
	done
	mkdir -p "$dir"
	if [ ! -s "$dir/etc/smb.conf" ] || [ ! -e "$dir/private/sam.ldb" ] || [ ! -s "$dir/admin.pass" ] || [ ! -s "$dir/kdc.port" ]; then
		provision "$dir"
	else
		log "reusing provisioned $dir"
	fi
	kdcport=$(cat "$dir/kdc.port")
	port_busy "$kdcport" && die "TCP port $kdcport (KDC) is already in use; reprovision with SAMBA_KDC_PORT=<free port> after removing $dir"
	mkdir -p "$dir/log"
	samba -s "$dir/etc/smb.conf" -F --debug-stdout -d 1 </dev/null >>"$dir/log/samba.out" 2>&1 &
	echo $! >"$dir/samba.master.pid"
	wait_ldaps "$dir"
	write_env "$dir"
	log "LDAPS up in $(echo "$(date +%s.%N) - $t0" | bc 2>/dev/null || echo '?') s, pid $(cat "$dir/samba.master.pid"); source $dir/env"
}

stop() {
	local dir="$1" pid i
	[ -s "$dir/samba.master.pid" ] || { log "no pid recorded in $dir"; return 0; }
	pid=$(cat "$dir/samba.master.pid")
	if running "$dir"; then
		kill -TERM "$pid"
		for i in $(seq 1 100); do
			[ -d "/proc/$pid" ] || break
			sleep 0.1
		done
		[ -d "/proc/$pid" ] && die "samba pid $pid did not exit within 10 s"
		log "stopped pid $pid"
	else
		log "pid $pid is not running"
	fi
	rm -f "$dir/samba.master.pid"
}

[ $# -eq 2 ] || usage
case "$1" in
start) start "$2" ;;
stop) stop "$2" ;;
env) cat "$2/env" ;;
*) usage ;;
esac
