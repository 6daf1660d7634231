#!/bin/sh
# install-deps.sh PACKAGE...: install the Debian packages that are missing.
# Runs apt-get only when something is missing, so a second make is quiet.
set -eu
missing=
for p in "$@"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
	    grep -q 'install ok installed'; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages:$missing; run as root" >&2
	exit 1
fi
echo "install-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# Package lists may be absent on a fresh machine or a stale image.
apt-get update -q >/dev/null || echo "install-deps: apt-get update failed" >&2
# Installing nginx would start Debian's own nginx on port 80; vmcgi's demo
# and tests start their own.  A policy-rc.d that says "no" (101) keeps
# package scripts from starting services, as Debian's policy allows.
guard=
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	guard=/usr/sbin/policy-rc.d
	trap 'rm -f "$guard"' EXIT INT TERM
fi
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
