#!/bin/sh
# octo/push: answer GitHub-style webhooks in plain POSIX sh (busybox ash).
#
# The event kind comes from the X-GitHub-Event header (HTTP_X_GITHUB_EVENT),
# the payload from stdin.  There is no jq in the guest, so a small awk
# parser flattens the JSON into "path=value" lines first:
#   repository.full_name=octo-org/widgets
#   commits.0.id=...
# A push is answered with its repository, branch, commit count and pusher;
# a ping with its hook id; anything else is acknowledged and ignored.

flatten() {
	awk '
	function ws() {
		while (pos <= n && index(" \t\r\n", substr(s, pos, 1)))
			pos++
	}
	function str(   out, c, e) {
		out = ""
		pos++
		while (pos <= n) {
			c = substr(s, pos, 1)
			if (c == "\"") {
				pos++
				return out
			}
			if (c == "\\") {
				e = substr(s, pos + 1, 1)
				pos += 2
				if (e == "u") {
					out = out "\\u" substr(s, pos, 4)
					pos += 4
				} else if (e == "n" || e == "t" || e == "r")
					out = out " "
				else
					out = out e
				continue
			}
			out = out c
			pos++
		}
		bad = 1
		return out
	}
	function value(path,   c, k, i) {
		ws()
		c = substr(s, pos, 1)
		if (c == "{" || c == "[") {
			pos++
			ws()
			if (substr(s, pos, 1) == (c == "{" ? "}" : "]")) {
				pos++
				return
			}
			for (i = 0; !bad; i++) {
				ws()
				if (c == "{") {
					if (substr(s, pos, 1) != "\"") {
						bad = 1
						return
					}
					k = str()
					ws()
					if (substr(s, pos++, 1) != ":") {
						bad = 1
						return
					}
				} else
					k = i
				value(path == "" ? k : path "." k)
				ws()
				k = substr(s, pos++, 1)
				if (k == (c == "{" ? "}" : "]"))
					return
				if (k != ",")
					bad = 1
			}
			return
		}
		if (c == "\"") {
			print path "=" str()
			return
		}
		k = ""
		while (pos <= n && !index(",}] \t\r\n", substr(s, pos, 1))) {
			k = k substr(s, pos, 1)
			pos++
		}
		if (k == "")
			bad = 1
		print path "=" k
	}
	{ s = s $0 "\n" }
	END {
		n = length(s)
		pos = 1
		value("")
		if (bad) {
			print "push.sh: payload is not valid JSON" > "/dev/stderr"
			exit 1
		}
	}'
}

# get KEY: the value at path KEY in the flattened payload, or nothing
get() {
	sed -n "s/^$1=//p" "$flat" | head -n 1
}

event=${HTTP_X_GITHUB_EVENT:-}
if [ -z "$event" ]; then
	echo "push.sh: no X-GitHub-Event header" >&2
	exit 2
fi

flat=$(mktemp) || exit 1
trap 'rm -f "$flat"' EXIT
flatten >"$flat" || exit 1

case $event in
push)
	ref=$(get ref)
	case $ref in
	refs/heads/*) branch=${ref#refs/heads/} ;;
	refs/tags/*) branch="tag ${ref#refs/tags/}" ;;
	*) branch=$ref ;;
	esac
	commits=$(grep -c '^commits\.[0-9][0-9]*\.id=' "$flat")
	echo "event: push"
	echo "delivery: ${HTTP_X_GITHUB_DELIVERY:-none}"
	echo "repo: $(get repository.full_name)"
	echo "branch: $branch"
	echo "commits: $commits"
	echo "pusher: $(get pusher.name)"
	if [ "$(get deleted)" = true ]; then
		echo "note: branch deleted"
	fi
	;;
ping)
	echo "event: ping"
	echo "hook: $(get hook_id)"
	echo "repo: $(get repository.full_name)"
	echo "zen: $(get zen)"
	;;
*)
	echo "event: $event"
	echo "ignored: no action for this event"
	;;
esac
