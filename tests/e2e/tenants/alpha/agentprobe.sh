#!/bin/sh
# Try to reach the agent: its channel device and PID 1 itself.
found=0
for d in /dev/vport*; do
	[ -e "$d" ] || continue
	found=1
	if (exec 3<>"$d") 2>/dev/null; then
		echo "OPENED $d"
	else
		echo "denied $d"
	fi
done
[ $found -eq 1 ] || echo "no channel device"
if kill -0 1 2>/dev/null; then echo "SIGNALLED 1"; else echo "denied pid1"; fi
