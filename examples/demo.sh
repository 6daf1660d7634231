#!/bin/bash
# examples/demo.sh [--serve]: vmcgi behind nginx on a loopback port.
#
# Runs vmcgi with etc/vmcgi.ini (a generated copy with its own socket and
# state directory, paths made absolute) and nginx with etc/nginx-demo.conf,
# then posts every event in examples/events/ the way its sender would
# (body plus the headers in NAME.headers) and prints status and body.
# Everything started here is stopped again by its pid on the way out.
#
# --serve   keep serving in the foreground instead (make run); Ctrl-C stops.
#
# Environment: BUILD_DIR (default build/), PORT (default 8080, or a free
# port if 8080 is taken), VMCGI_STATE_DIR (keep template snapshots between
# runs), KEEP=1 (keep the run directory with its logs).

set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
etc=$repo/etc
build=${BUILD_DIR:-$repo/build}
build=$(cd "$build" 2>/dev/null && pwd || echo "$build")
prefix=/hooks

usage() {
	echo "usage: $0 [--serve]"
}

die() {
	echo "demo: $*" >&2
	exit 1
}

serve=0
case ${1:-} in
--serve) serve=1 ;;
"") ;;
-h | --help) usage; exit 0 ;;
*) usage >&2; exit 2 ;;
esac

for f in vmcgi guest/vmlinuz guest/initrd.img; do
	[ -e "$build/$f" ] || die "$build/$f is missing: run make && make image"
done
for cmd in nginx curl python3 awk; do
	command -v "$cmd" >/dev/null || die "$cmd is not installed"
done

port_free() {
	python3 - "$1" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
EOF
}

port=${PORT:-8080}
if ! port_free "$port"; then
	port=$(python3 -c 'import socket; s = socket.socket()
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi

# nginx workers run as www-data where we can make them (as Debian does),
# so the socket's owner, group and mode are exercised as in production.
if [ "$(id -u)" = 0 ] && id www-data >/dev/null 2>&1; then
	user=www-data
	group=www-data
else
	user=$(id -un)
	group=$(id -gn)
fi

run=$(mktemp -d /tmp/vmcgi-demo.XXXXXX)
chmod 755 "$run"	# the nginx workers reach the socket through it
state=${VMCGI_STATE_DIR:-$run/state}
sock=$run/vmcgi.sock
mkdir -p "$state" "$run/nginx"
vmcgi_pid=
nginx_pid=
tail_pid=

# stop PID: SIGNAL, then up to 20 s, then SIGKILL.  Our own children only.
stop() {
	local pid=$1 sig=$2 i=0
	[ -n "$pid" ] || return 0
	kill -"$sig" "$pid" 2>/dev/null || return 0
	while kill -0 "$pid" 2>/dev/null && [ $i -lt 200 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "demo: pid $pid ignored SIG$sig; killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	[ -n "$tail_pid" ] && kill "$tail_pid" 2>/dev/null
	stop "$nginx_pid" QUIT
	stop "$vmcgi_pid" TERM
	if [ "$rc" != 0 ] && [ -s "$run/vmcgi.log" ]; then
		echo "--- last lines of the vmcgi log:" >&2
		tail -n 20 "$run/vmcgi.log" >&2
	fi
	if [ -n "${KEEP:-}" ]; then
		echo "demo: logs kept in $run"
	else
		rm -rf "$run"
	fi
	exit "$rc"
}
trap cleanup EXIT
if [ "$serve" = 1 ]; then
	trap 'echo; echo "demo: stopping"; exit 0' INT TERM	# the way out
else
	trap 'exit 130' INT TERM
fi

# The configuration: etc/vmcgi.ini with our socket, owner and state
# directory, and its relative paths made absolute (they were relative to
# etc/, and the copy lives elsewhere).
awk -v etc="$etc" -v sock="$sock" -v state="$state" -v user="$user" \
    -v group="$group" '
function absolute(v,   q) {
	q = ""
	if (v ~ /^"/) {
		q = "\""
		v = substr(v, 2)
	}
	return v ~ /^\// ? q v : q etc "/" v
}
BEGIN {
	over["listen"] = sock
	over["state_dir"] = state
	over["listen_owner"] = user
	over["listen_group"] = group
}
/^[ \t]*\[/ {
	sec = tolower($0)
	gsub(/^[ \t]*\[[ \t]*|[ \t]*\][ \t]*$/, "", sec)
	print
	if (sec == "vmcgi")
		for (k in over)
			print k " = " over[k]
	next
}
/^[ \t]*[A-Za-z_]+[ \t]*=/ {
	key = tolower($0)
	sub(/[ \t]*=.*/, "", key)
	gsub(/[ \t]/, "", key)
	val = $0
	sub(/^[^=]*=[ \t]*/, "", val)
	if (sec == "vmcgi" && key in over)
		next
	if (key == "kernel" || key == "initrd" || key == "dir" ||
	    key == "qemu") {
		print key " = " absolute(val)
		next
	}
}
{ print }
' "$etc/vmcgi.ini" >"$run/vmcgi.ini"

sed -e "s|@DIR@|$run/nginx|g" -e "s|@USER@|$user|g" -e "s|@PORT@|$port|g" \
    -e "s|@PREFIX@|$prefix|g" -e "s|@SOCKET@|$sock|g" \
    -e "s|@REQUEST_BUFFERING@|on|g" -e "s|@MAX_BODY@|1m|g" \
    -e "s|@READ_TIMEOUT@|30s|g" "$etc/nginx-demo.conf" >"$run/nginx/nginx.conf"

"$build/vmcgi" -t -c "$run/vmcgi.ini" >/dev/null 2>"$run/check.log" ||
	die "configuration refused: $(cat "$run/check.log")"

echo "demo: starting vmcgi (the first start boots and snapshots a template)"
"$build/vmcgi" -c "$run/vmcgi.ini" 2>"$run/vmcgi.log" &
vmcgi_pid=$!
i=0
while [ ! -S "$sock" ]; do
	kill -0 "$vmcgi_pid" 2>/dev/null || die "vmcgi exited early"
	[ $i -lt 3000 ] || die "vmcgi made no socket in 300 s"
	sleep 0.1
	i=$((i + 1))
done

nginx -p "$run/nginx" -c "$run/nginx/nginx.conf" -e "$run/nginx/error.log" \
    -g 'daemon off;' 2>"$run/nginx/stderr.log" &
nginx_pid=$!
i=0
until curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null; do
	kill -0 "$nginx_pid" 2>/dev/null ||
		die "nginx exited: $(cat "$run/nginx/stderr.log")"
	[ $i -lt 100 ] || die "nginx does not answer on port $port"
	sleep 0.1
	i=$((i + 1))
done
base=http://127.0.0.1:$port$prefix
echo "demo: vmcgi pid $vmcgi_pid, nginx pid $nginx_pid, $base/"

# post NAME: send examples/events/NAME.json as NAME.headers describes.
post() {
	local name=$1 route="" line
	local -a hdrs=()
	while IFS= read -r line; do
		case $line in
		"# route:"*) route=${line#"# route:"}; route=${route# } ;;
		"#"* | "") ;;
		*) hdrs+=(-H "$line") ;;
		esac
	done <"$here/events/$name.headers"
	[ -n "$route" ] || { echo "$name.headers names no route" >&2; return 1; }
	echo
	echo "=== $name -> POST $prefix/$route"
	curl -sS -N --max-time 60 -o - -D "$run/headers" "${hdrs[@]}" \
	    --data-binary "@$here/events/$name.json" "$base/$route" || true
	echo "--- $(head -n 1 "$run/headers" | tr -d '\r')," \
	    "$(grep -i '^x-request-id:' "$run/headers" | tr -d '\r')"
}

if [ "$serve" = 1 ]; then
	echo "demo: serving; try for example:"
	for h in "$here"/events/*.headers; do
		name=$(basename "$h" .headers)
		route=$(sed -n 's/^# route: *//p' "$h")
		echo "  curl -sS -N --data-binary @examples/events/$name.json" \
		    "$(grep -v '^#' "$h" | grep -v '^$' | sed "s/.*/-H '&'/" |
		    tr '\n' ' ')$base/$route"
		break
	done
	echo "  (every event and its headers: examples/events/; Ctrl-C stops)"
	echo "--- vmcgi log:"
	tail -n +1 -f "$run/vmcgi.log" &
	tail_pid=$!
	wait "$vmcgi_pid" || true
	vmcgi_pid=
	die "vmcgi exited"
fi

for h in "$here"/events/*.headers; do
	post "$(basename "$h" .headers)"
done
echo
echo "--- vmcgi log, one line per request:"
grep -E 'req=[0-9a-f]+ [a-z0-9_-]+/' "$run/vmcgi.log" ||
	tail -n 20 "$run/vmcgi.log"
