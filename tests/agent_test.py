#!/usr/bin/env python3
"""agent_test.py BUILD_DIR: drive the guest agent through real QEMU.

Boots a template VM from BUILD_DIR/guest/{vmlinuz,initrd.img}, snapshots
it once the agent reports READY, then restores clones from the snapshot
and runs one handler in each through the channel protocol of
include/proto.h, checking what comes back.

Every QEMU started here is killed by its pid and every temporary file
removed, also on failure or SIGTERM.  The last line is
"agent_test: N passed, M failed"; the exit status is 1 if anything failed.
"""

import errno
import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

# include/proto.h
HELLO, READY, SCRIPT, ENV, RUN, STDIN, STDIN_EOF, STDOUT, STDERR, EXIT, \
    WARM, WARMED, CODE = range(1, 14)
EXITED, SIGNALED, TIMEDOUT, FAILED = range(1, 5)
MAX_PAYLOAD = 64 * 1024
HDR = struct.Struct("=II")
HELLO_MSG = struct.Struct("=Qqq64s")
RUN_MSG = struct.Struct("=II")
EXIT_MSG = struct.Struct("=IiII")

MEM = "256M"
# Under TCG the guest's TSC is the host's.  The guest kernel cannot always
# calibrate it (no HPET or PM timer on microvm, and PIT calibration fails
# on a busy host, which then hangs the boot), so the host tells it the
# rate; tsc=reliable keeps the jiffies-based watchdog, itself unreliable
# under TCG, from demoting the TSC later.
CMDLINE = ("console=ttyS0 quiet panic=-1 rdinit=/init "
           "tsc_early_khz=%d tsc=reliable clocksource=tsc")
BOOT_TIMEOUT = 120
RESTORE_TIMEOUT = 30
TIMING_RUNS = int(os.environ.get("AGENT_TEST_TIMING_RUNS", "11"))

QEMU_BASE = [
    "qemu-system-x86_64", "-nodefaults", "-no-user-config",
    "-display", "none", "-M", "microvm", "-accel", "tcg", "-cpu", "qemu64",
    "-smp", "1", "-m", MEM,
]

figures = {}
warm_times = []
# Script bytes -> the CODE the zygote sent back for them, for the runs
# that give it to a later clone (Clone.cached).
code_seen = {}


def host_tsc_khz():
    """Measures the host TSC rate with rdtsc against CLOCK_MONOTONIC_RAW."""
    import ctypes
    import mmap
    # rdtsc; shl rdx, 32; or rax, rdx; ret
    code = bytes.fromhex("0f3148c1e2204809d0c3")
    try:
        buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ |
                        mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError):
        buf = None
    if buf is None:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return int(float(line.split(":")[1]) * 1000)
        raise SystemExit("agent_test: cannot find the host TSC rate")
    buf.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    rdtsc = ctypes.CFUNCTYPE(ctypes.c_uint64)(addr)
    best = []
    for _ in range(3):
        t0, c0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW), rdtsc()
        time.sleep(0.05)
        t1, c1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW), rdtsc()
        best.append((c1 - c0) * 10**6 // (t1 - t0))
    return sorted(best)[1]


class TestFailure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise TestFailure(what)


class Qmp:
    """A QMP client on one end of a socketpair."""

    def __init__(self, sock):
        self.sock = sock
        self.rfile = sock.makefile("rb")
        self.events = []
        greeting = json.loads(self.rfile.readline())
        check("QMP" in greeting, "no QMP greeting")
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            line = self.rfile.readline()
            if not line:
                raise TestFailure("qmp %s: connection closed" % name)
            reply = json.loads(line)
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise TestFailure("qmp %s: %s" % (name, reply["error"]))
            return reply.get("return")

    def getfd(self, name, fd):
        """Hands fd to QEMU as a named fd (SCM_RIGHTS on the socket)."""
        msg = {"execute": "getfd", "arguments": {"fdname": name}}
        self.sock.sendmsg([json.dumps(msg).encode() + b"\n"],
                          [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                            struct.pack("i", fd))])
        while True:
            reply = json.loads(self.rfile.readline())
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise TestFailure("qmp getfd: %s" % reply["error"])
            return

    def wait_migration(self, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            st = self.cmd("query-migrate").get("status")
            if st == "completed":
                return
            if st in ("failed", "cancelled"):
                raise TestFailure("migration %s" % st)
            time.sleep(0.002)
        raise TestFailure("migration not completed in %ss" % timeout)


class Chan:
    """The host end of the agent channel."""

    def __init__(self, sock):
        self.sock = sock
        self.sock.setblocking(False)
        self.inbuf = b""
        self.out = b""

    def queue(self, mtype, payload=b""):
        self.out += HDR.pack(mtype, len(payload)) + payload

    def pump(self, timeout):
        """Sends what is queued and reads what comes within timeout."""
        w = [self.sock] if self.out else []
        r, w, _ = select.select([self.sock], w, [], max(timeout, 0))
        if w:
            try:
                n = self.sock.send(self.out[:1 << 20])
                self.out = self.out[n:]
            except BlockingIOError:
                pass
        if r:
            data = self.sock.recv(1 << 20)
            if not data:
                raise TestFailure("agent channel closed")
            self.inbuf += data

    def next(self):
        if len(self.inbuf) < HDR.size:
            return None
        mtype, n = HDR.unpack_from(self.inbuf)
        check(n <= MAX_PAYLOAD, "guest message of %d bytes" % n)
        if len(self.inbuf) < HDR.size + n:
            return None
        payload = self.inbuf[HDR.size:HDR.size + n]
        self.inbuf = self.inbuf[HDR.size + n:]
        return mtype, payload

    def wait(self, timeout):
        end = time.monotonic() + timeout
        while True:
            m = self.next()
            if m:
                return m
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.pump(left)


class Harness:
    """Owns every QEMU process and temporary file of the test run."""

    def __init__(self, build):
        self.kernel = os.path.join(build, "guest", "vmlinuz")
        self.initrd = os.path.join(build, "guest", "initrd.img")
        for f in (self.kernel, self.initrd):
            if not os.path.exists(f):
                raise SystemExit("agent_test: %s missing" % f)
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.dir = tempfile.mkdtemp(prefix="vmcgi-agent-test.", dir=base)
        self.mem = os.path.join(self.dir, "t.mem")
        self.state = os.path.join(self.dir, "t.state")
        self.procs = []
        self.cmdline = CMDLINE % host_tsc_khz()
        figures["kernel cmdline"] = self.cmdline

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []
        shutil.rmtree(self.dir, ignore_errors=True)

    def reap(self, p):
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        self.procs.remove(p)

    def qemu(self, share, serial, extra, fds):
        agent_host, agent_vm = socket.socketpair()
        qmp_host, qmp_vm = socket.socketpair()
        argv = QEMU_BASE + [
            "-object", "memory-backend-file,id=ram,size=%s,mem-path=%s,"
            "share=%s" % (MEM, self.mem, share),
            "-machine", "memory-backend=ram",
            "-kernel", self.kernel, "-initrd", self.initrd,
            "-append", self.cmdline, "-serial", serial,
            "-device", "virtio-serial-device",
            "-chardev", "socket,id=agent,fd=%d" % agent_vm.fileno(),
            "-device", "virtserialport,chardev=agent,name=vmcgi.0",
            "-chardev", "socket,id=qmp,fd=%d" % qmp_vm.fileno(),
            "-mon", "chardev=qmp,mode=control",
            "-nic", "none", "-no-reboot",
        ] + extra
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                             pass_fds=[agent_vm.fileno(), qmp_vm.fileno()]
                             + fds)
        self.procs.append(p)
        agent_vm.close()
        qmp_vm.close()
        return p, Chan(agent_host), qmp_host

    def template(self):
        """Boots the template, snapshots it at READY(0), ends it."""
        t0 = time.monotonic()
        sfd = os.open(self.state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                      0o600)
        try:
            p, chan, qsock = self.qemu(
                "on", "file:" + os.path.join(self.dir, "console.log"),
                [], [])
            qmp = Qmp(qsock)
            m = chan.wait(BOOT_TIMEOUT)
            check(m is not None, "template: no READY in %ds" % BOOT_TIMEOUT)
            check(m[0] == READY and struct.unpack("=Q", m[1])[0] == 0,
                  "template: first message %r" % (m,))
            figures["template boot to READY(0)"] = time.monotonic() - t0
            t1 = time.monotonic()
            qmp.cmd("stop")
            qmp.cmd("migrate-set-capabilities", capabilities=[
                {"capability": "x-ignore-shared", "state": True}])
            # QEMU 7.2 resolves an outgoing "fd:" only by name (getfd),
            # unlike migrate-incoming, which also takes a number.
            qmp.getfd("state", sfd)
            qmp.cmd("migrate", uri="fd:state")
            qmp.wait_migration(30)
            figures["snapshot (stop..completed)"] = time.monotonic() - t1
            try:
                qmp.cmd("quit")
            except (TestFailure, OSError):
                pass
            p.wait(timeout=10)
            self.reap(p)
        finally:
            os.close(sfd)
        figures["state file bytes"] = os.path.getsize(self.state)

    def console(self):
        try:
            with open(os.path.join(self.dir, "console.log"), "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def clone(self):
        return Clone(self)


class Clone:
    """One VM restored from the template; serves one handler run."""

    # Set: each python3 run gets the CODE an earlier run of the same
    # script sent back, and must not send one itself (it loaded it).
    cached = False

    def __init__(self, h):
        self.h = h
        t0 = time.monotonic()
        sfd = os.open(h.state, os.O_RDONLY)
        try:
            self.p, self.chan, qsock = h.qemu(
                "off", "null", ["-incoming", "defer"], [sfd])
            self.qmp = Qmp(qsock)
            self.qmp.cmd("migrate-set-capabilities", capabilities=[
                {"capability": "x-ignore-shared", "state": True}])
            self.qmp.cmd("migrate-incoming", uri="fd:%d" % sfd)
            self.qmp.wait_migration(RESTORE_TIMEOUT)
        finally:
            os.close(sfd)
        self.t_loaded = time.monotonic() - t0
        self.status = self.qmp.cmd("query-status").get("status")
        if self.status != "running":
            self.qmp.cmd("cont")
        self.t0 = t0

    def close(self):
        self.h.reap(self.p)

    def warm(self):
        """WARM, as vmcgi's pool sends it before HELLO; waits for WARMED."""
        nonce = int.from_bytes(os.urandom(8), "little") or 1
        t0 = time.monotonic()
        self.chan.queue(WARM, struct.pack("=Q", nonce))
        m = self.chan.wait(RESTORE_TIMEOUT)
        check(m is not None and m[0] == WARMED and
              m[1] == struct.pack("=Q", nonce), "WARM answered %r" % (m,))
        warm_times.append(time.monotonic() - t0)

    def hello(self, resend=0.1, dup=False):
        """Sends HELLO until READY(nonce).  Returns the host time sent."""
        nonce = int.from_bytes(os.urandom(8), "little") or 1
        end = time.monotonic() + RESTORE_TIMEOUT
        sent = 0
        while time.monotonic() < end:
            now = time.time_ns()
            payload = HELLO_MSG.pack(nonce, now // 10**9, now % 10**9,
                                     os.urandom(64))
            self.chan.queue(HELLO, payload)
            if dup:
                self.chan.queue(HELLO, payload)
            sent += 1
            m = self.chan.wait(resend)
            if m is None:
                continue
            check(m[0] == READY, "HELLO answered with type %d" % m[0])
            got = struct.unpack("=Q", m[1])[0]
            check(got == nonce, "READY nonce %x, sent %x" % (got, nonce))
            self.t_ready = time.monotonic() - self.t0
            self.hellos = sent
            self.nonce = nonce
            if dup:
                m = self.chan.wait(5)
                check(m is not None and m[0] == READY and
                      struct.unpack("=Q", m[1])[0] == nonce,
                      "duplicate HELLO not answered: %r" % (m,))
            return
        raise TestFailure("no READY after %d HELLOs" % sent)

    def run(self, script, env=(), stdin=b"", timeout_ms=20000, wall=60,
            quiet_after=0.3, extra=None, code=None):
        """Runs one handler; returns a Result.  Fails on protocol errors.
        CODE, if given, follows the script."""
        if isinstance(script, str):
            script = script.encode()
        if self.cached and code is None:
            code = code_seen.get(script)
        for i in range(0, len(script), MAX_PAYLOAD):
            self.chan.queue(SCRIPT, script[i:i + MAX_PAYLOAD])
        if code is not None:
            self.chan.queue(CODE, code)
        for e in env:
            self.chan.queue(ENV, e.encode() if isinstance(e, str) else e)
        self.chan.queue(RUN, RUN_MSG.pack(timeout_ms, 0))
        if extra:
            self.chan.queue(*extra)
        for i in range(0, len(stdin), MAX_PAYLOAD):
            self.chan.queue(STDIN, stdin[i:i + MAX_PAYLOAD])
        self.chan.queue(STDIN_EOF)
        r = self.collect(wall, quiet_after)
        if self.cached:
            check(r.code is None, "CODE sent back for a script run from "
                  "its CODE")
        elif r.code is not None:
            code_seen[script] = r.code
        return r

    def collect(self, wall, quiet_after):
        res = Result()
        t0 = time.monotonic()
        end = t0 + wall
        while res.exit is None:
            m = self.chan.next()
            if m is None:
                left = end - time.monotonic()
                check(left > 0, "no EXIT within %ds" % wall)
                self.chan.pump(min(left, 1))
                continue
            # A busy host resends HELLO before the first READY arrives;
            # the answers to the copies may come this late.
            if m[0] == READY and m[1] == struct.pack(
                    "=Q", getattr(self, "nonce", -1) & (2**64 - 1)):
                continue
            res.add(m)
        res.wall = time.monotonic() - t0
        # Nothing may follow EXIT.
        late = self.chan.wait(quiet_after)
        while late is not None and late[0] == READY:
            late = self.chan.wait(quiet_after)
        check(late is None, "message type %s after EXIT" %
              (late[0] if late else None))
        return res


class Result:
    def __init__(self):
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.exit = None
        self.t_first_out = None
        self.t_first_mono = None
        self.t_exit_mono = None
        self.code = None

    def add(self, m):
        mtype, payload = m
        check(self.exit is None, "message after EXIT")
        if mtype == CODE:
            check(self.code is None and not self.stdout and
                  not self.stderr, "CODE twice or after output")
            self.code = payload
        elif mtype == STDOUT:
            if self.t_first_out is None:
                self.t_first_out = time.time()
                self.t_first_mono = time.monotonic()
            self.stdout += payload
        elif mtype == STDERR:
            self.stderr += payload
        elif mtype == EXIT:
            check(len(payload) == EXIT_MSG.size, "EXIT of %d bytes"
                  % len(payload))
            self.exit = EXIT_MSG.unpack(payload)[:3]
            self.t_exit_mono = time.monotonic()
        else:
            raise TestFailure("unexpected guest message type %d" % mtype)

    def expect(self, kind, code, stdout=None, stderr=None):
        check(self.exit[0] == kind and self.exit[1] == code,
              "exit %r, wanted (%d, %d); stderr %r" %
              (self.exit, kind, code, bytes(self.stderr[:500])))
        if stdout is not None:
            check(bytes(self.stdout) == stdout, "stdout %r, wanted %r" %
                  (bytes(self.stdout[:300]), stdout[:300]))
        if stderr is not None:
            check(bytes(self.stderr) == stderr, "stderr %r, wanted %r" %
                  (bytes(self.stderr[:300]), stderr[:300]))


# ---- the cases: each gets a fresh clone, HELLO done ----------------------

def t_shell(c):
    r = c.run("#!/bin/sh\necho hello from $(uname -s)\nexit 0\n")
    r.expect(EXITED, 0, b"hello from Linux\n", b"")


def t_python_json_stdin(c, head="#!/usr/bin/python3\n"):
    doc = {"text": "h\u00e9llo w\u00f6rld \u2603 \U0001f600 \u65e5\u672c",
           "n": [1, 2.5, None, True], "nested": {"k": "\u00ff" * 100}}
    body = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    script = (
        head +
        "import hashlib, json, sys\n"
        "raw = sys.stdin.buffer.read()\n"
        "doc = json.loads(raw)\n"
        "sys.stdout.buffer.write(json.dumps(doc, ensure_ascii=False,"
        " sort_keys=True).encode())\n"
        "sys.stderr.write(hashlib.sha256(raw).hexdigest())\n")
    t0 = time.monotonic()
    r = c.run(script, stdin=body)
    figures["first python3 json run, %s (RUN..EXIT)" % head.strip()] = \
        time.monotonic() - t0
    want = json.dumps(doc, ensure_ascii=False, sort_keys=True).encode()
    r.expect(EXITED, 0, want, hashlib.sha256(body).hexdigest().encode())


def t_python_binary_stdin(c, head="#!/usr/bin/python3\n"):
    body = bytes(range(256)) * 64 + "\u20ac\u00e9\U0001f600".encode() \
        + b"\r\n\0\xff\xfe"
    script = (head + "import sys\n"
              "sys.stdout.buffer.write(sys.stdin.buffer.read())\n")
    r = c.run(script, stdin=body)
    r.expect(EXITED, 0, body, b"")


def t_stderr_separate(c):
    r = c.run("#!/bin/sh\necho out1\necho err1 >&2\necho out2\n"
              "echo err2 >&2\n")
    r.expect(EXITED, 0, b"out1\nout2\n", b"err1\nerr2\n")


def t_exit_code(c):
    r = c.run("#!/bin/sh\necho partial\nexit 42\n")
    r.expect(EXITED, 42, b"partial\n")


def t_signal(c):
    r = c.run("#!/bin/sh\necho dying\nkill -SEGV $$\nsleep 5\n")
    r.expect(SIGNALED, signal.SIGSEGV, b"dying\n")


def t_timeout(c):
    r = c.run("#!/bin/sh\necho spinning\nwhile :; do :; done\n",
              timeout_ms=1500, wall=10)
    r.expect(TIMEDOUT, 0)
    check(r.stdout in (b"", b"spinning\n"), "stdout %r" % r.stdout)
    check(1400 <= r.exit[2] <= 3000, "elapsed_ms %d" % r.exit[2])


def t_timeout_children(c):
    # Descendants that detach (setsid, double fork) and ignore TERM.
    script = ("#!/bin/sh\n"
              "trap '' TERM HUP INT\n"
              "setsid sh -c 'trap \"\" TERM; while :; do sleep 1; done' &\n"
              "( ( while :; do :; done ) & ) \n"
              "sleep 1000\n")
    r = c.run(script, timeout_ms=1500, wall=10)
    r.expect(TIMEDOUT, 0)
    check(r.wall < 6, "EXIT came %.1fs after RUN" % r.wall)


def t_children_killed_at_exit(c):
    # A detached grandchild keeps stdout open: unless the agent kills it
    # when the handler exits, EXIT waits for it and "late" shows up.
    script = ("#!/bin/sh\n"
              "setsid sh -c 'sleep 4; echo late' &\n"
              "echo main done\n")
    r = c.run(script, timeout_ms=20000, wall=30)
    r.expect(EXITED, 0, b"main done\n")
    check(r.wall < 3.5, "EXIT came %.1fs after RUN" % r.wall)


def t_big_output(c):
    n = 6 * 1024 * 1024
    script = ("#!/usr/bin/python3\nimport sys\n"
              "blk = bytes(range(256)) * 256\n"
              "err = b'e' * 4096\n"
              "for i in range(%d // len(blk)):\n"
              "    sys.stdout.buffer.write(blk)\n"
              "    if i %% 4 == 0:\n"
              "        sys.stderr.buffer.write(err)\n" % n)
    r = c.run(script, timeout_ms=60000, wall=90)
    want = bytes(range(256)) * 256 * (n // 65536)
    r.expect(EXITED, 0)
    check(bytes(r.stdout) == want, "big stdout: %d bytes, wanted %d, "
          "equal prefix %s" % (len(r.stdout), len(want),
                               bytes(r.stdout) == want[:len(r.stdout)]))
    check(len(r.stderr) == 4096 * ((n // 65536 + 3) // 4),
          "stderr %d bytes" % len(r.stderr))
    figures["6 MB stdout run (RUN..EXIT)"] = r.wall


def t_write_before_read(c):
    body = os.urandom(3 * 1024 * 1024)
    script = ("#!/usr/bin/python3\nimport hashlib, sys\n"
              "sys.stdout.buffer.write(b'x' * (2 * 1024 * 1024))\n"
              "sys.stdout.flush()\n"
              "raw = sys.stdin.buffer.read()\n"
              "sys.stderr.write('%d %s' % (len(raw),"
              " hashlib.sha256(raw).hexdigest()))\n")
    r = c.run(script, stdin=body, timeout_ms=60000, wall=90)
    r.expect(EXITED, 0, b"x" * (2 * 1024 * 1024),
             ("%d %s" % (len(body), hashlib.sha256(body).hexdigest()))
             .encode())


def t_never_reads_stdin(c):
    body = os.urandom(2 * 1024 * 1024)
    r = c.run("#!/bin/sh\necho ignoring\nsleep 1\n", stdin=body,
              timeout_ms=20000, wall=30)
    r.expect(EXITED, 0, b"ignoring\n", b"")


def t_identity(c):
    r = c.run("#!/bin/sh\nid -u; id -g; id -G; pwd\n"
              "cat /proc/self/oom_score_adj\nls /sys/class/net\n"
              "echo x > /run/vmcgi/handler && echo writable\n"
              "cat /proc/1/oom_score_adj\n")
    r.expect(EXITED, 0)
    lines = bytes(r.stdout).decode().split("\n")
    check(lines[:4] == ["1000", "1000", "1000", "/tmp"],
          "uid/gid/groups/cwd %r" % lines[:4])
    check(lines[4] == "1000", "oom_score_adj %r" % lines[4])
    check(lines[5] == "lo", "network interfaces %r" % lines[5])
    check(lines[6] == "-1000", "agent oom_score_adj %r" % lines[6])
    check(b"writable" not in r.stdout, "handler can rewrite its script")


def t_env_exact(c):
    env = ["REQUEST_METHOD=POST", "SCRIPT_NAME=/hooks/a/b",
           "HTTP_X_BIG=" + "v" * 60000, "EMPTY=", "UTF8=\u00e9\u2603"]
    # /bin/cat prints the environment the kernel gave the handler, then
    # the script itself.
    script = "#!/bin/cat /proc/self/environ\n"
    r = c.run(script, env=env)
    r.expect(EXITED, 0)
    want = b"".join(e.encode() + b"\0" for e in env) + script.encode()
    check(bytes(r.stdout) == want, "environ %r" % bytes(r.stdout[:200]))


def t_exec_failure(c):
    r = c.run(b"\x7fELF not really\n")
    r.expect(FAILED, errno.ENOEXEC)
    check(os.strerror(errno.ENOEXEC).encode() in r.stderr,
          "stderr %r" % bytes(r.stderr))


def urandom_of(c):
    r = c.run("#!/bin/sh\nhead -c 32 /dev/urandom | od -An -tx1\n"
              "head -c 16 /dev/random | od -An -tx1\n")
    r.expect(EXITED, 0)
    return bytes(r.stdout)


def t_clock(c, sent_ns=None):
    # busybox date has no %N; the guest's python prints its clock.
    r = c.run("#!/usr/bin/python3\nimport time\n"
              "print(repr(time.time()), flush=True)\n")
    host = r.t_first_out
    r.expect(EXITED, 0)
    guest = float(r.stdout)
    check(abs(host - guest) < 2.0, "guest clock %.3f, host %.3f" %
          (guest, host))
    figures["guest clock minus host after restore (s)"] = \
        round(guest - host, 3)


def t_malformed(c):
    # A host message of a type the host never sends, in the middle of the
    # body: the agent stops the handler and reports EXIT{FAILED, EPROTO}.
    r = c.run("#!/bin/sh\ncat\n", stdin=b"abc", extra=(EXIT, b""))
    check(r.exit[0] == FAILED and r.exit[1] == errno.EPROTO,
          "exit %r" % (r.exit,))


def t_oversized(c):
    c.chan.queue(SCRIPT, b"#!/bin/sh\n")
    c.chan.out += HDR.pack(STDIN, MAX_PAYLOAD + 1)
    r = c.collect(20, 0.3)
    check(r.exit[0] == FAILED and r.exit[1] == errno.EPROTO,
          "exit %r" % (r.exit,))


def t_duplicate_hello(c):
    # hello(dup=True) already sent every HELLO twice; a third, late one
    # is answered too, with no other effect.
    r = c.run("#!/bin/sh\necho ok\n")
    r.expect(EXITED, 0, b"ok\n")


# ---- python3 handlers: zygote and execve ----------------------------------
#
# A first line of #!/usr/bin/python3 (or python3.11, or via /usr/bin/env,
# optionally -u) runs in a child of the zygote the template started; any
# other flag, such as -E, makes the agent exec python3 as before.  Each
# check below runs once per path and must give the same answer.

PY_PATHS = [
    ("zygote", "#!/usr/bin/python3\n"),
    ("execve", "#!/usr/bin/python3 -E\n"),
]
# Env entries as the host sends them (src/request.c).
PY_ENV = ["REQUEST_METHOD=POST", "CONTENT_TYPE=application/json",
          "HTTP_X_HUB_SIGNATURE_256=sha256=00ff", "CONTENT_LENGTH=2",
          "GATEWAY_INTERFACE=CGI/1.1", "PATH=/usr/local/bin:/usr/bin:/bin",
          "VMCGI_TENANT=t", "EMPTY=", "UTF8=\u00e9\u2603", "TZ=EST5EDT"]
# Per check and path, what came back, for the cross-path comparisons.
py_seen = {}


def py_run(c, head, body, **kw):
    return c.run(head + body, **kw)


def t_py_json(c, head):
    t_python_json_stdin(c, head)


def t_py_binary(c, head):
    t_python_binary_stdin(c, head)


def t_py_body_exact(c, head):
    body = os.urandom(1536 * 1024)
    r = py_run(c, head, "import hashlib, sys\n"
               "raw = sys.stdin.buffer.read()\n"
               "print(len(raw), hashlib.sha256(raw).hexdigest())\n",
               stdin=body)
    r.expect(EXITED, 0, ("%d %s\n" % (len(body), hashlib.sha256(body)
                                      .hexdigest())).encode(), b"")


def t_py_exception(c, head):
    r = py_run(c, head, "print('before')\n"
               "def f(x):\n    return {}[x]\n"
               "f('missing')\n")
    r.expect(EXITED, 1, b"before\n")
    err = bytes(r.stderr)
    check(err.startswith(b"Traceback (most recent call last):\n"
                         b'  File "/run/vmcgi/handler", line 5, in'
                         b" <module>\n"), "traceback %r" % err)
    check(err.endswith(b"KeyError: 'missing'\n"), "traceback %r" % err)
    check(b"zygote" not in err, "zygote frames in %r" % err)
    py_seen.setdefault("exception", []).append(err)


def t_py_syntax_error(c, head):
    r = py_run(c, head, "print('never')\nx = (1,\n")
    r.expect(EXITED, 1, b"")
    err = bytes(r.stderr)
    check(err.startswith(b'  File "/run/vmcgi/handler", line 3\n') and
          b"SyntaxError: '(' was never closed" in err, "stderr %r" % err)
    py_seen.setdefault("syntax error", []).append(err)


def t_py_exit3(c, head):
    r = py_run(c, head, "import sys\nprint('x', end='')\nsys.exit(3)\n")
    r.expect(EXITED, 3, b"x", b"")


def t_py_exit_message(c, head):
    r = py_run(c, head, "import atexit, sys\n"
               "atexit.register(lambda: print('atexit'))\n"
               "sys.exit('bad signature')\n")
    r.expect(EXITED, 1, b"atexit\n", b"bad signature\n")


def t_py_exit_flushes(c, head):
    # What CPython's exit does that a reader can see: it waits for
    # threads, and a file left open is flushed when it is torn down.
    r = py_run(c, head, "import os, threading, time\n"
               "out = os.fdopen(os.dup(1), 'w')\n"
               "out.write('unclosed\\n')\n"
               "def late():\n"
               "    time.sleep(0.3)\n"
               "    print('thread', flush=True)\n"
               "threading.Thread(target=late).start()\n"
               "print('main', flush=True)\n")
    r.expect(EXITED, 0, b"main\nthread\nunclosed\n", b"")


def t_py_os_exit(c, head):
    # os._exit skips the zygote's own exit: the status comes from the
    # kernel, as for any process.
    r = py_run(c, head, "import os, sys\nprint('x', flush=True)\n"
               "os._exit(5)\n")
    r.expect(EXITED, 5, b"x\n", b"")


def t_py_fork_child_exits(c, head):
    # A forked child that ends normally does not speak for the handler:
    # the parent's exit 3 is the answer.
    r = py_run(c, head, "import os, sys, time\n"
               "print('parent start', flush=True)\n"
               "if os.fork() == 0:\n"
               "    sys.exit(0)\n"
               "time.sleep(1)\n"
               "print('parent failing', flush=True)\n"
               "sys.exit(3)\n", timeout_ms=20000, wall=30)
    r.expect(EXITED, 3, b"parent start\nparent failing\n", b"")


def t_py_exit_huge(c, head):
    # (int)PyLong_AsLong(code) is -1 past a long: exit status 255.
    r = py_run(c, head, "import sys\nsys.exit(2**64)\n")
    r.expect(EXITED, 255, b"", b"")


def t_py_stdout_closed(c, head):
    # CPython skips a closed sys.stdout at exit: still 0.
    r = py_run(c, head, "import sys\nprint('hi')\nsys.stdout.close()\n")
    r.expect(EXITED, 0, b"hi\n", b"")


def t_py_flush_order(c, head):
    # sys.stdout is flushed before files the script left open.
    r = py_run(c, head, "import os, sys\nsys.stdout.write('A')\n"
               "g = os.fdopen(os.dup(1), 'w')\ng.write('B')\n")
    r.expect(EXITED, 0, b"AB", b"")


def t_py_fork(c, head):
    # The child outlives the handler with stdout open: the agent must kill
    # it when the handler exits, as for any exec'd handler.
    script = ("import os, sys, time\n"
              "r, w = os.pipe()\n"
              "if os.fork() == 0:\n"
              "    print('child', os.getuid(), flush=True)\n"
              "    os.write(w, b'.')\n"
              "    time.sleep(4)\n"
              "    print('late', flush=True)\n"
              "    os._exit(0)\n"
              "os.read(r, 1)\n"
              "print('parent')\n")
    r = py_run(c, head, script, timeout_ms=20000, wall=30)
    r.expect(EXITED, 0, b"child 1000\nparent\n", b"")
    check(r.wall < 3.5, "EXIT came %.1fs after RUN" % r.wall)


def t_py_identity(c, head):
    r = py_run(c, head, "import os\n"
               "print(os.getuid(), os.geteuid(), os.getgid(),"
               " os.getegid(), os.getgroups(), os.getcwd(), os.getppid(),"
               " os.getsid(0) == os.getpid(), sorted(os.listdir("
               "'/proc/self/fd')))\n"
               "print(open('/proc/self/oom_score_adj').read().strip())\n")
    # A zygote handler holds one more descriptor: the write end of the
    # pipe it reports its exit status on (docs/guest.md).
    fds = "'0', '1', '2', '3'"
    if "-E" not in head:
        status = re.findall(rb"'3', '(\d+)'\]", bytes(r.stdout))
        check(len(status) == 1, "no status descriptor in %r" % r.stdout)
        fds += ", '%s'" % status[0].decode() if status else ""
    r.expect(EXITED, 0, ("1000 1000 1000 1000 [] /tmp 1 True [%s]\n1000\n"
                         % fds).encode(), b"")


def t_py_main(c, head):
    r = py_run(c, head, "import pickle, sys\n"
               "class Event:\n    pass\n"
               "e = pickle.loads(pickle.dumps(Event()))\n"
               "print(sys.modules['__main__'] is sys.modules[__name__],"
               " type(e) is Event, __name__, __file__, sys.argv,"
               " sys.path[0], __spec__, __package__)\n")
    r.expect(EXITED, 0, b"True True __main__ /run/vmcgi/handler "
             b"['/run/vmcgi/handler'] /run/vmcgi None None\n", b"")


def t_py_env(c, head):
    # os.environ and the C environ that a child process inherits.
    r = py_run(c, head, "import json, os, subprocess, sys\n"
               "print(json.dumps(list(os.environ.items())))\n"
               "sys.stdout.flush()\n"
               "subprocess.run(['/bin/cat', '/proc/self/environ'])\n",
               env=PY_ENV)
    r.expect(EXITED, 0)
    line, _, environ = bytes(r.stdout).partition(b"\n")
    want = [e.split("=", 1) for e in PY_ENV]
    check(json.loads(line) == want, "os.environ %r" % line)
    check(environ == b"".join(e.encode() + b"\0" for e in PY_ENV),
          "environ of a child %r" % environ)


def t_py_unbuffered(c, head):
    # -u (with -E, the execve path): binary stdout unbuffered, text
    # written through.
    head = head.rstrip("\n") + ("u\n" if "-E" in head else " -u\n")
    r = c.run(head + "import sys\nsys.stdout.write('a')\n"
              "sys.stdout.buffer.write(b'b')\n"
              "print(type(sys.stdout.buffer).__name__,"
              " sys.stdout.write_through, sys.stderr.line_buffering)\n")
    r.expect(EXITED, 0, b"abFileIO True False\n", b"")


PY_CHECKS = [
    ("json stdin, multibyte", t_py_json),
    ("binary stdin byte for byte", t_py_binary),
    ("reads exactly the 1.5 MB body", t_py_body_exact),
    ("uncaught exception: 1, traceback", t_py_exception),
    ("syntax error: 1, message", t_py_syntax_error),
    ("sys.exit(3)", t_py_exit3),
    ("sys.exit(str) and atexit", t_py_exit_message),
    ("exit waits for threads, flushes open files", t_py_exit_flushes),
    ("os._exit(5)", t_py_os_exit),
    ("a forked child's exit 0 is not the handler's", t_py_fork_child_exits),
    ("sys.exit(2**64): 255", t_py_exit_huge),
    ("sys.stdout closed: exit 0", t_py_stdout_closed),
    ("stdout flushed before files left open", t_py_flush_order),
    ("os.fork works, children killed at exit", t_py_fork),
    ("uid, gid, cwd, ppid, session, fds, oom", t_py_identity),
    ("__main__ is the script", t_py_main),
    ("os.environ and child environ exact", t_py_env),
    ("-u unbuffered", t_py_unbuffered),
]

# ---- CODE: the script compiled, kept by the host between events ---------

CODE_SCRIPT = ("#!/usr/bin/python3\n"
               "import sys\n"
               "def greet(who):\n"
               "    return 'hello %s' % who\n"
               "print(greet(sys.stdin.read().strip()))\n")


def code_of(h, script):
    """The CODE a zygote run of SCRIPT sent back (runs it in a clone of
    its own the first time)."""
    key = script.encode()
    if key not in code_seen:
        c = Clone(h)
        try:
            c.hello()
            c.run(script, stdin=b"x").expect(EXITED, 0)
        finally:
            c.close()
    return code_seen[key]


def t_code_sent(c):
    # A hash-based .pyc of these very bytes (PEP 552: checked flag), as
    # this host's python3.11 would write it.
    import importlib.util
    import marshal
    r = c.run(CODE_SCRIPT, stdin=b"world")
    r.expect(EXITED, 0, b"hello world\n", b"")
    head = importlib.util.MAGIC_NUMBER + (3).to_bytes(4, "little") + \
        importlib.util.source_hash(CODE_SCRIPT.encode())
    check(r.code is not None and r.code.startswith(head),
          "CODE %r" % (r.code[:16] if r.code else None))
    code = marshal.loads(r.code[16:])
    check(code.co_filename == "/run/vmcgi/handler" and
          "greet" in code.co_names, "code %r" % code)


def t_code_used(c):
    # Given back with the same script, it is run instead of a compile:
    # nothing is sent back.
    code = code_of(c.h, CODE_SCRIPT)
    r = c.run(CODE_SCRIPT, stdin=b"again", code=code)
    r.expect(EXITED, 0, b"hello again\n", b"")
    check(r.code is None, "CODE sent back though the given one fits")


def t_code_damaged(c):
    # The right header over bytes marshal cannot read: compiled afresh.
    good = code_of(c.h, CODE_SCRIPT)
    r = c.run(CODE_SCRIPT, stdin=b"x", code=good[:16] + b"\xff" * 40)
    r.expect(EXITED, 0, b"hello x\n", b"")
    check(r.code == good, "CODE after a damaged one %r" % (r.code,))


def t_code_huge_length(c):
    # The right header over a marshal list claiming 2**31 items: loading
    # fails (MemoryError), the zygote still serves (hmac is imported in
    # it, not in an exec'd python3) and compiles afresh.
    import importlib.util
    script = ("#!/usr/bin/python3\nimport sys\n"
              "print('hmac' in sys.modules)\n")
    head = importlib.util.MAGIC_NUMBER + (3).to_bytes(4, "little") + \
        importlib.util.source_hash(script.encode())
    r = c.run(script, code=head + b"[" + (0x7fffffff).to_bytes(4, "little"))
    r.expect(EXITED, 0, b"True\n", b"")
    check(r.code is not None and r.code.startswith(head),
          "CODE %r" % (r.code[:16] if r.code else None))


def t_code_too_deep(c):
    # Code nested deeper than marshal writes: run from the zygote all the
    # same, and not offered for keeping.
    script = ("#!/usr/bin/python3\nimport sys\nf = " + "lambda: " * 1100 +
              "0\nprint('hmac' in sys.modules)\n")
    r = c.run(script)
    r.expect(EXITED, 0, b"True\n", b"")
    check(r.code is None, "CODE for code marshal cannot write")


def t_code_other_script(c):
    # The CODE of another script (its hash differs): not run.
    script = CODE_SCRIPT.replace("hello", "bye")
    r = c.run(script, stdin=b"x", code=code_of(c.h, CODE_SCRIPT))
    r.expect(EXITED, 0, b"bye x\n", b"")
    check(r.code is not None and r.code != code_of(c.h, CODE_SCRIPT),
          "CODE %r" % (r.code,))


def t_code_warning(c):
    # python3 compiles a script on every run and prints its warnings
    # each time: a script that warns is not offered for keeping.
    r = c.run("#!/usr/bin/python3\nprint(1 is 1)\n")
    r.expect(EXITED, 0, b"True\n")
    check(b"SyntaxWarning" in r.stderr, "stderr %r" % bytes(r.stderr))
    check(r.code is None, "CODE for a script that warned")


def t_code_not_for_shell(c):
    r = c.run("#!/bin/sh\necho ok\n")
    r.expect(EXITED, 0, b"ok\n")
    check(r.code is None, "CODE for a shell script")


def code_refused(c, msgs):
    """Sends MSGS (type, payload) as the setup, then RUN: EPROTO."""
    for m in msgs:
        c.chan.queue(*m)
    c.chan.queue(RUN, RUN_MSG.pack(20000, 0))
    c.chan.queue(STDIN_EOF)
    r = c.collect(20, 0.3)
    check(r.exit[0] == FAILED and r.exit[1] == errno.EPROTO,
          "exit %r" % (r.exit,))


CODE_CASES = [
    ("CODE: sent back, a .pyc of the script", t_code_sent),
    ("CODE: given back, run without compiling", t_code_used),
    ("CODE: damaged, compiled afresh", t_code_damaged),
    ("CODE: of another script, not run", t_code_other_script),
    ("CODE: claims 2**31 items, compiled afresh", t_code_huge_length),
    ("CODE: none for code marshal cannot write", t_code_too_deep),
    ("CODE: none for a script that warns", t_code_warning),
    ("CODE: none for a shell script", t_code_not_for_shell),
    ("CODE before SCRIPT: EPROTO", lambda c: code_refused(
        c, [(CODE, b"x"), (SCRIPT, CODE_SCRIPT.encode())])),
    ("CODE twice: EPROTO", lambda c: code_refused(
        c, [(SCRIPT, CODE_SCRIPT.encode()), (CODE, b"x"), (CODE, b"x")])),
    ("CODE empty: EPROTO", lambda c: code_refused(
        c, [(SCRIPT, CODE_SCRIPT.encode()), (CODE, b"")])),
]

# Prints, as JSON, what a script can see of how it was started.
PROBE = r'''
import sys, os
zygote = "hmac" in sys.modules
def stream(f):
    raw = getattr(f.buffer, "raw", f.buffer)
    return [f.encoding, f.errors, f.line_buffering, f.write_through,
            f.mode, type(f.buffer).__name__, raw.name, raw.closefd,
            f.fileno(), f is getattr(sys, "__%s__" % raw.name[1:-1])]
def status(field):
    with open("/proc/self/status") as f:
        return f.read().split(field + ":")[1].split()[0]
import json, locale, site, time
print(json.dumps({
    "zygote": zygote, "argv": sys.argv, "orig_argv": sys.orig_argv,
    "executable": sys.executable, "path": sys.path,
    "globals": [[k, type(v).__name__] for k, v in globals().items()],
    "doc": __doc__, "flags": repr(sys.flags),
    "stdio": [stream(f) for f in (sys.stdin, sys.stdout, sys.stderr)],
    "environ": list(os.environ.items()),
    "fs": [sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()],
    "locale": locale.setlocale(locale.LC_CTYPE),
    "tz": [time.tzname, time.timezone],
    "site": [site.USER_BASE, site.USER_SITE, site.ENABLE_USER_SITE],
    "signals": [status(f) for f in ("SigBlk", "SigIgn", "SigCgt")],
    "comm": open("/proc/self/comm").read(),
    "prefix": [sys.prefix, sys.base_prefix, sys.exec_prefix],
}, sort_keys=True))
'''
# Line 2 of every variant, so line numbers and __doc__ agree.
PROBE_LINE2 = '"exec" "/usr/bin/python3" "$0" "$@"\n'
PROBE_HEADS = {
    "zygote": "#!/usr/bin/python3\n",
    "zygote, env": "#!/usr/bin/env python3\n",
    # sh runs line 2, which execs python3 just as the kernel would.
    "execve via sh": "#!/bin/sh\n",
    "execve, -E": "#!/usr/bin/python3 -E\n",
    "execve, env, LANG": "#!/usr/bin/env python3\n",
    # HOME moves site.USER_BASE, which the template computed without it.
    "zygote, HOME": "#!/usr/bin/python3\n",
    "execve via sh, HOME": "#!/bin/sh\n",
}
probes = {}


def t_probe(c, name):
    env = PY_ENV + (["LANG=C"] if "LANG" in name else []) + \
        (["HOME=/tmp/h"] if "HOME" in name else [])
    r = c.run(PROBE_HEADS[name] + PROBE_LINE2 + PROBE, env=env)
    r.expect(EXITED, 0, stderr=b"")
    probes[name] = json.loads(bytes(r.stdout))
    check(probes[name]["zygote"] == name.startswith("zygote"),
          "path taken: zygote %s" % probes[name]["zygote"])


def t_probe_warmed(c):
    # c got WARM first: its zygote forked the warm-up child and must
    # still start a handler exactly as an unwarmed one does.
    r = c.run(PROBE_HEADS["zygote"] + PROBE_LINE2 + PROBE, env=PY_ENV)
    r.expect(EXITED, 0, stderr=b"")
    probes["zygote, warmed"] = json.loads(bytes(r.stdout))
    probe_diff("zygote", "zygote, warmed", set())


# What a handler could find of an earlier process: files, other processes
# of its uid (but the zygote, which may not have exited or been reaped
# yet), modules.
LEFTOVERS = r"""#!/usr/bin/python3
import json, os, sys
def read(pid, name):
    try:
        with open("/proc/%s/%s" % (pid, name), "rb") as f:
            return f.read()
    except OSError:
        return b""
def other(pid):
    st = read(pid, "status")
    return (b"Uid:\t1000\t" in st and b"State:\tZ" not in st and
            int(pid) != os.getpid() and
            not (read(pid, "comm") == b"python3\n" and
                 b"zygote.py" in read(pid, "cmdline")))
procs = [p for p in os.listdir("/proc") if p.isdigit() and other(p)]
tree = sorted(os.path.join(d, f) for top in ("/tmp", "/run", "/var")
              for d, _, fs in os.walk(top) for f in fs)
print(json.dumps([procs, tree, sorted(sys.modules)]))
"""
leftovers = {}


def t_leftovers(c, name):
    r = c.run(LEFTOVERS, env=PY_ENV)
    r.expect(EXITED, 0, stderr=b"")
    leftovers[name] = json.loads(bytes(r.stdout))
    check(leftovers[name][0] == [], "uid 1000 processes %r"
          % leftovers[name][0])
    if len(leftovers) == 2:
        check(leftovers["plain"] == leftovers["warmed"],
              "after WARM %r, without %r" % (leftovers["warmed"],
                                            leftovers["plain"]))


def probe_diff(a, b, skip):
    pa, pb = probes[a], probes[b]
    bad = [k for k in sorted(set(pa) | set(pb))
           if k not in skip and pa.get(k) != pb.get(k)]
    check(not bad, "%s and %s differ in %s" % (a, b, ", ".join(
        "%s: %r / %r" % (k, pa.get(k), pb.get(k)) for k in bad)))


def t_probes_agree(c):
    # sh adds PWD and SHLVL and execs python3 by name; -E shows in
    # sys.flags and argv; LANG shows in the environment.
    probe_diff("zygote", "execve via sh",
               {"zygote", "environ", "comm"})
    probe_diff("zygote", "execve, -E", {"zygote", "flags", "orig_argv"})
    probe_diff("zygote, env", "execve, env, LANG", {"zygote", "environ"})
    probe_diff("zygote, HOME", "execve via sh, HOME",
               {"zygote", "environ", "comm"})
    check(probes["zygote, HOME"]["site"][0] == "/tmp/h/.local",
          "USER_BASE with HOME %r" % probes["zygote, HOME"]["site"])
    check(probes["zygote"]["environ"] == [e.split("=", 1) for e in PY_ENV],
          "environ %r" % probes["zygote"]["environ"])
    for name, seen in py_seen.items():
        check(len(seen) == 3 and seen[0] == seen[1] == seen[2],
              "%s: stderr differs between paths: %r" % (name, seen))


STATE_SCRIPT = ("#!/usr/bin/python3\n"
                "import json, os, sys\n"
                "seen = [getattr(json, 'vmcgi_mark', None),"
                " os.environ.get('VMCGI_MARK'), os.path.exists('/tmp/mark'),"
                " 'vmcgi_mark' in sys.modules]\n"
                "json.vmcgi_mark = 1\n"
                "os.environ['VMCGI_MARK'] = '1'\n"
                "open('/tmp/mark', 'w').close()\n"
                "sys.modules['vmcgi_mark'] = json\n"
                "print(seen, 'hmac' in sys.modules)\n")


def t_no_shared_state(c):
    r = c.run(STATE_SCRIPT)
    r.expect(EXITED, 0, b"[None, None, False, False] True\n", b"")


def t_fallback(c, head, env, want):
    r = c.run(head + "import sys\nprint('hmac' in sys.modules)\n", env=env)
    r.expect(EXITED, 0, ("%s\n" % want).encode(), b"")


FALLBACKS = [
    ("-S flag: execve", "#!/usr/bin/python3.11 -S\n", [], False),
    ("PYTHONHASHSEED: execve", "#!/usr/bin/python3\n",
     ["PYTHONHASHSEED=0"], False),
    ("LC_ALL: execve", "#!/usr/bin/python3\n", ["LC_ALL=C"], False),
    ("duplicate name: execve", "#!/usr/bin/python3\n", ["A=1", "A=2"],
     False),
    ("python3.11 -u, blanks: zygote", "#!  /usr/bin/python3.11  -u \n", [],
     True),
    ("env python3.11, no PATH: zygote", "#!/usr/bin/env python3.11\n", [],
     True),
]


def t_crlf_shebang(c):
    # The kernel looks for "python3\r": the zygote must not paper over it.
    r = c.run("#!/usr/bin/python3\r\nprint(1)\n")
    r.expect(FAILED, errno.ENOENT)


TRANSFORM = ("import hashlib, hmac, json, sys\n"
             "raw = sys.stdin.buffer.read()\n"
             "doc = json.loads(raw)\n"
             "sig = hmac.new(b'secret', raw, hashlib.sha256).hexdigest()\n"
             "out = {'type': doc['type'], 'id': doc['id'], 'sig': sig}\n"
             "sys.stdout.write(json.dumps(out) + '\\n')\n")
TRANSFORM_BODY = json.dumps({"id": "evt_1", "type": "checkout.completed",
                             "data": {"amount": 1200, "currency": "eur",
                                      "items": list(range(50))}}).encode()
timings = {}


def t_timing(c, name, head):
    t0 = time.monotonic()
    r = c.run(head + TRANSFORM, stdin=TRANSFORM_BODY, env=PY_ENV)
    # Not after run(): that also waits quiet_after for stray messages.
    t1 = r.t_exit_mono
    r.expect(EXITED, 0, stderr=b"")
    check(json.loads(bytes(r.stdout))["type"] == "checkout.completed",
          "stdout %r" % bytes(r.stdout))
    timings.setdefault(name, []).append((r.t_first_mono - t0, t1 - t0,
                                         r.exit[2] / 1000))


def timing_figures():
    for name, runs in timings.items():
        first = sorted(x[0] for x in runs)
        ends = sorted(x[1] for x in runs)
        figures["json transform, %s: RUN..first stdout, median of %d (s)"
                % (name, len(runs))] = round(first[len(first) // 2], 3)
        figures["json transform, %s: RUN..EXIT, median of %d (s)"
                % (name, len(runs))] = round(ends[len(ends) // 2], 3)
        figures["json transform, %s: RUN..EXIT, min..max (s)" % name] = \
            "%.3f..%.3f" % (ends[0], ends[-1])
        guest = sorted(x[2] for x in runs)
        figures["json transform, %s: elapsed_ms in EXIT, median (s)"
                % name] = guest[len(guest) // 2]


CASES = [
    ("shell stdout and exit 0", t_shell),
    ("python3 json stdin, multibyte", t_python_json_stdin),
    ("python3 binary stdin byte for byte", t_python_binary_stdin),
    ("stderr separate from stdout", t_stderr_separate),
    ("non-zero exit", t_exit_code),
    ("signal death", t_signal),
    ("timeout of a busy loop", t_timeout),
    ("timeout with detached children", t_timeout_children),
    ("children killed when handler exits", t_children_killed_at_exit),
    ("6 MB stdout with heavy stderr", t_big_output),
    ("writes 2 MB before reading 3 MB stdin", t_write_before_read),
    ("handler never reads stdin", t_never_reads_stdin),
    ("uid 1000, cwd, oom, only lo", t_identity),
    ("environment exactly the ENV entries", t_env_exact),
    ("exec failure reported", t_exec_failure),
    ("clock within 2 s after restore", t_clock),
    ("malformed message ends the run", t_malformed),
    ("oversized length ends the run", t_oversized),
]


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: agent_test.py BUILD_DIR")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    h = Harness(sys.argv[1])
    passed = failed = 0
    restore = []

    def case(name, fn, *args, dup=False, warm=False, cached=False):
        nonlocal passed, failed
        c = None
        try:
            c = h.clone()
            c.cached = cached
            if warm:
                c.warm()
            c.hello(dup=dup)
            restore.append((c.t_loaded, c.t_ready, c.status))
            fn(c, *args)
            passed += 1
            print("ok   %s" % name, flush=True)
        except Exception as e:
            failed += 1
            print("FAIL %s: %s" % (name, e), flush=True)
            if not isinstance(e, TestFailure):
                traceback.print_exc()
        finally:
            if c:
                c.close()

    try:
        try:
            h.template()
            passed += 1
            print("ok   template boots and snapshots", flush=True)
        except Exception as e:
            failed += 1
            print("FAIL template: %s" % e, flush=True)
            print(h.console()[-3000:])
            raise SystemExit(1)
        for name, fn in CASES:
            case(name, fn)
        case("duplicate HELLO answered", t_duplicate_hello, dup=True)
        for pname, head in PY_PATHS:
            for name, fn in PY_CHECKS:
                case("python3, %s: %s" % (pname, name), fn, head)
        # Each script again, given the CODE its zygote run sent back.
        for name, fn in PY_CHECKS:
            case("python3, zygote from CODE: %s" % name, fn,
                 PY_PATHS[0][1], cached=True)
        for name, fn in CODE_CASES:
            case(name, fn)
        for name in PROBE_HEADS:
            case("probe: %s" % name, t_probe, name)
        case("probes agree; same stderr on both paths", t_probes_agree)
        case("probe: zygote after WARM, same as without",
             t_probe_warmed, warm=True)
        case("what a handler finds, no WARM", t_leftovers, "plain")
        case("what a handler finds after WARM: the same", t_leftovers,
             "warmed", warm=True)
        case("no state shared through the zygote (1)", t_no_shared_state)
        case("no state shared through the zygote (2)", t_no_shared_state)
        for name, head, env, want in FALLBACKS:
            case("first line %r, %s" % (head.strip(), name), t_fallback,
                 head, env, want)
        case("#!/usr/bin/python3 with CRLF: ENOENT", t_crlf_shebang)
        for i in range(TIMING_RUNS):
            for pname, head in PY_PATHS:
                case("json transform timing, %s (%d)" % (pname, i + 1),
                     t_timing, pname, head)
                case("json transform timing, %s, warmed (%d)"
                     % (pname, i + 1), t_timing, pname + ", warmed", head,
                     warm=True)
        timing_figures()
        seen = []
        case("two clones read different urandom",
             lambda c: seen.append(urandom_of(c)))
        case("two clones read different urandom (2)",
             lambda c: (seen.append(urandom_of(c)),
                        check(len(seen) == 2 and seen[0] != seen[1],
                              "same random bytes: %r" % seen)))
        # WARM runs the HELLO's clock and RNG calls once already (with
        # no host time or entropy): the HELLO after it must still count.
        case("clock within 2 s after WARM and restore", t_clock,
             warm=True)
        warmed = []
        case("two warmed clones read different urandom",
             lambda c: warmed.append(urandom_of(c)), warm=True)
        case("two warmed clones read different urandom (2)",
             lambda c: (warmed.append(urandom_of(c)),
                        check(len(warmed) == 2 and
                              warmed[0] != warmed[1],
                              "same random bytes: %r" % warmed)),
             warm=True)
    finally:
        h.cleanup()
    if warm_times:
        warm_times.sort()
        figures["WARM..WARMED, median of %d (s)" % len(warm_times)] = \
            round(warm_times[len(warm_times) // 2], 3)
    if restore:
        loads = sorted(x[0] for x in restore)
        readys = sorted(x[1] for x in restore)
        figures["clone start..state loaded (median s)"] = \
            round(loads[len(loads) // 2], 3)
        figures["clone start..READY(nonce) (median s)"] = \
            round(readys[len(readys) // 2], 3)
        figures["clone status after migrate-incoming"] = \
            sorted(set(x[2] for x in restore))
    for k, v in figures.items():
        print("figure: %s: %s" % (k, round(v, 3) if isinstance(v, float)
                                  else v))
    print("agent_test: %d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
