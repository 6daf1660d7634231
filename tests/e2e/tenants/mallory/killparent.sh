#!/bin/sh
# Tries to kill the agent (its parent, PID 1), to reboot the guest, to
# mount, and to read PID 1's environment; each must be refused.  Then
# shows the limits it runs under.
kill -9 1 2>/dev/null && echo "killed 1" || echo "kill 1: refused"
kill -9 "$PPID" 2>/dev/null && echo "killed parent" ||
    echo "kill parent: refused"
reboot -f 2>/dev/null && echo "rebooted" || echo "reboot: refused"
mkdir -p /tmp/m
mount -t tmpfs none /tmp/m 2>/dev/null && echo "mounted" ||
    echo "mount: refused"
cat /proc/1/environ >/dev/null 2>&1 && echo "read 1" ||
    echo "environ of 1: refused"
grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status
cat /proc/self/cgroup /sys/fs/cgroup/sandbox/pids.max \
    /sys/fs/cgroup/sandbox/memory.max
ulimit -n
grep '^Max processes' /proc/self/limits
echo alive
