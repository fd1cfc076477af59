#!/usr/bin/env bash
# Installs the Debian packages a make target needs, if missing.
# Usage: scripts/deps.sh test|chaos|protoc
set -euo pipefail

want=()
need() { command -v "$1" >/dev/null 2>&1 || want+=("${@:2}"); }

case "${1:-test}" in
test)
  need redis-server redis-server
  need samba samba samba-ad-dc samba-ad-provision samba-dsdb-modules samba-vfs-modules winbind ldb-tools
  need kinit krb5-user
  need ldapsearch ldap-utils
  need openssl openssl
  need promtool prometheus
  need chromium chromium   # the console's browser tests (server/console)
  need curl curl           # the README test runs its curl examples (scripts/demo)
  ;;
chaos)
  need redis-server redis-server
  ;;
protoc)
  need protoc protobuf-compiler
  [ -f /usr/include/google/protobuf/timestamp.proto ] || want+=(libprotobuf-dev)
  ;;
*) echo "usage: $0 test|chaos|protoc" >&2; exit 2 ;;
esac

[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing packages: ${want[*]} (run as root or install them)" >&2
  exit 1
fi
echo "installing: ${want[*]}"
# Keep package scripts from starting daemons on every interface.
guard=/usr/sbin/policy-rc.d
had_guard=0; [ -e "$guard" ] && had_guard=1
[ $had_guard = 1 ] || { printf '#!/bin/sh\nexit 101\n' >"$guard"; chmod +x "$guard"; }
trap '[ $had_guard = 1 ] || rm -f "$guard"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -q -o DPkg::Lock::Timeout=300 >/dev/null
apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends "${want[@]}" >/dev/null
