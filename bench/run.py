#!/usr/bin/env python3
"""bench/run.py BUILD_DIR [--out FILE] [--quick]: vmcgi against its peers.

Runs, side by side and with the same two handlers (a trivial shell script
and examples/tenants/acme/checkout.py fed a Stripe-style event):

  vmcgi, warm pool     nginx -> vmcgi (pool_size 2) in a namespace with lo only
  vmcgi, on demand     the same with pool_size 0: every event restores a clone
  cold boot            a new microVM per event from the same kernel and
                       initrd, no snapshot (tests/agent_test.py's driver)
  gVisor               runsc --platform=ptrace --network=none, one sandbox
                       per event, rootfs a copy of the guest's root tree
  fcgiwrap             nginx -> fcgiwrap, the script on the host: the floor

and prints a Markdown table, also written to FILE (docs/bench-results.md).
It measures and reports; it asserts nothing.  Everything it starts is
stopped by pid, and the namespace and temporary directories are removed,
also on Ctrl-C, SIGTERM or its own time limit (it stops by itself within
ten minutes).  Traffic stays on loopback.  Run as root.
"""

import argparse
import itertools
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))
import agent_test as drv  # noqa: E402  the guest agent driver

PREFIX = "/hooks"
MEMORY = "512M"          # guest memory, as in etc/vmcgi.ini
POOL_SIZE = 2            # vmcgi's default
# More workers than VMs: an event over max_vms waits for a slot (up to
# queue_timeout) instead of meeting "every worker is busy" while a worker
# still reaps the VM of a response its client already has.
WORKERS = 8
MAX_VMS = 4
HARD_LIMIT = 570         # seconds: the alarm that ends the run
SOFT_LIMIT = 480         # seconds: no cell starts or goes on after this
CELL_CAP = 75            # seconds one cell may take

EVENT = os.path.join(REPO, "examples", "events", "stripe-checkout-completed")
SHELL_SCRIPT = b"#!/bin/sh\necho ok\n"
SCRIPTS = {"shell": "shell.sh", "checkout": "checkout.py"}

# Samples per cell: (system, concurrency) -> count.  p99 of fewer than
# 100 samples is the slowest one.
SAMPLES = {1: 20, 4: 40}
SLOW_SAMPLES = {"cold": {1: 5, 4: 4}, "gvisor": {1: 20, 4: 40}}
QUICK = {1: 4, 4: 8}


class Stop(Exception):
    """The run's time limit was reached."""


def log(msg):
    print("# " + msg, flush=True)


def run(argv, timeout=30):
    r = subprocess.run(argv, capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(argv),
                                                 r.returncode,
                                                 r.stderr.strip()))
    return r.stdout


# ---------------------------------------------------------------------------
# Processes, found through /proc by parent pid, never by name

def proc_stat(pid):
    """(ppid, comm, starttime) of PID, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    comm = data[data.index("(") + 1:data.rindex(")")]
    rest = data[data.rindex(")") + 2:].split()
    return int(rest[1]), comm, int(rest[19])


def descendants(root):
    """{pid: (comm, starttime)} of every process below ROOT."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st:
                table[int(name)] = st
    kids = {}
    for pid, st in table.items():
        kids.setdefault(st[0], []).append(pid)
    out, todo = {}, list(kids.get(root, []))
    while todo:
        pid = todo.pop()
        out[pid] = table[pid][1:]
        todo += kids.get(pid, [])
    return out


def alive(pid, start):
    st = proc_stat(pid)
    return st is not None and st[2] == start


def kill_tree(procs, sig=signal.SIGKILL):
    """Kills the processes of PROCS, {pid: (comm, starttime)}, by pid."""
    for pid, (_, start) in procs.items():
        if alive(pid, start):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def become_subreaper():
    """Orphans of our children come to us, not to init: a child server
    that leaves its own children behind cannot leak them."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:     # PR_SET_CHILD_SUBREAPER
        log("prctl(PR_SET_CHILD_SUBREAPER): errno %d" % ctypes.get_errno())


def reap(procs, timeout=5):
    """Waits for the processes of PROCS that are our children to end."""
    deadline = time.monotonic() + timeout
    todo = set(procs)
    while todo:
        for pid in list(todo):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    todo.discard(pid)
            except ChildProcessError:
                todo.discard(pid)       # not ours, or already reaped
        if not todo or time.monotonic() >= deadline:
            break
        time.sleep(0.05)


def smaps_rollup(pid):
    out = {}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                m = re.match(r"(\w+):\s+(\d+) kB", line)
                if m:
                    out[m.group(1)] = int(m.group(2))
    except OSError:
        pass
    return out


# ---------------------------------------------------------------------------
# The load generator: raw HTTP/1.1 over loopback

def dechunk(data):
    """(body so far, complete) of a chunked body."""
    out, pos = [], 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return b"".join(out), False
        try:
            size = int(data[pos:end].split(b";")[0], 16)
        except ValueError:
            return b"".join(out), False
        if size == 0:
            return b"".join(out), data.find(b"\r\n\r\n", end) >= 0
        start = end + 2
        out.append(data[start:start + size])
        if len(data) < start + size + 2:
            return b"".join(out), False
        pos = start + size + 2


def http_post(port, path, body, headers, timeout=120):
    """One POST; a sample dict: status, body, ttfb and done in seconds
    (first body byte, complete response), complete."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    lines = ["POST %s HTTP/1.1" % path, "Host: localhost",
             "Connection: close", "Content-Length: %d" % len(body)]
    lines += ["%s: %s" % kv for kv in headers.items()]
    raw, hend, status, chunked, clen = b"", -1, None, False, None
    ttfb = done = None
    data = b""
    try:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                  + body)
        while True:
            d = s.recv(65536)
            now = time.monotonic()
            if not d:
                break
            raw += d
            if hend < 0:
                hend = raw.find(b"\r\n\r\n")
                if hend < 0:
                    continue
                head = raw[:hend].decode("latin-1").lower()
                status = int(head.split(" ", 2)[1])
                chunked = "transfer-encoding: chunked" in head
                m = re.search(r"\ncontent-length:\s*(\d+)", head)
                clen = int(m.group(1)) if m else None
            rest = raw[hend + 4:]
            if chunked:
                data, complete = dechunk(rest)
            else:
                data = rest
                complete = clen is not None and len(rest) >= clen
            if data and ttfb is None:
                ttfb = now - t0
            if complete:
                done = now - t0
                break
    except OSError as e:
        return {"status": None, "body": b"", "ttfb": None, "done": None,
                "complete": False, "error": str(e)}
    finally:
        s.close()
    complete = done is not None
    if done is None:
        done = time.monotonic() - t0
        if clen is None and not chunked and hend >= 0:
            complete = True     # ended by the close
    if ttfb is None:
        ttfb = done
    return {"status": status, "body": data, "ttfb": ttfb, "done": done,
            "complete": complete}


def read_event():
    with open(EVENT + ".json", "rb") as f:
        body = f.read()
    headers = {}
    with open(EVENT + ".headers") as f:
        for line in f.read().splitlines():
            if line.strip() and not line.startswith("#"):
                k, v = line.split(":", 1)
                headers[k.strip()] = v.strip()
    return body, headers


def cgi_env(route, body, headers):
    """The CGI variables a handler sees, for the sandboxes driven here."""
    env = ["REQUEST_METHOD=POST", "GATEWAY_INTERFACE=CGI/1.1",
           "SERVER_PROTOCOL=HTTP/1.1", "QUERY_STRING=",
           "SCRIPT_NAME=%s/%s" % (PREFIX, route),
           "CONTENT_LENGTH=%d" % len(body),
           "PATH=/usr/local/bin:/usr/bin:/bin"]
    for k, v in headers.items():
        if k.lower() == "content-type":
            env.append("CONTENT_TYPE=" + v)
        else:
            env.append("HTTP_%s=%s" % (k.upper().replace("-", "_"), v))
    return env


# ---------------------------------------------------------------------------
# Cells: N samples of one (system, handler) at concurrency C

def percentile(xs, p):
    """Nearest rank: with fewer than 100 samples p99 is the maximum."""
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100.0 * len(xs)) - 1)]


class Cell:
    def __init__(self, system, handler, conc):
        self.system, self.handler, self.conc = system, handler, conc
        self.samples = []
        self.errors = []
        self.elapsed = None
        self.note = ""
        self.load = []              # 1-minute load average, start and end

    def add(self, s):
        self.samples.append(s)
        if not s["ok"]:
            self.errors.append(s.get("error") or
                               "status %s" % s.get("status"))

    def ok(self):
        return [s for s in self.samples if s["ok"]]

    def stat(self, key, p):
        xs = [s[key] for s in self.ok()]
        if not xs:
            return None
        return statistics.median(xs) if p == 50 else percentile(xs, p)

    def eps(self):
        if not self.elapsed or not self.ok():
            return None
        return len(self.ok()) / self.elapsed

    def report(self):
        log("%-10s %-8s c=%d: %d ok, %d errors, ttfb p50 %s, done p50 %s, "
            "load %s" % (self.system, self.handler, self.conc,
                         len(self.ok()), len(self.errors),
                         fmt_s(self.stat("ttfb", 50)),
                         fmt_s(self.stat("done", 50)),
                         "-".join("%.1f" % x for x in self.load)))
        if self.errors:
            log("  first error: %s" % self.errors[0])


def run_cell(cell, n, fn, stop_at):
    """Runs FN() N times from CELL.conc threads (closed loop).  FN returns
    a sample dict with ttfb, done and ok.  Stops issuing at STOP_AT."""
    counter = itertools.count()
    lock = threading.Lock()
    cap = min(stop_at, time.monotonic() + CELL_CAP)

    def worker():
        while time.monotonic() < cap and next(counter) < n:
            s = safe(fn)
            with lock:
                cell.add(s)

    cell.load.append(load1())
    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True)
               for _ in range(cell.conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cell.elapsed = time.monotonic() - t0
    cell.load.append(load1())
    if len(cell.samples) < n and n < 10 ** 6:
        cell.note = "time cap: %d of %d" % (len(cell.samples), n)
    cell.report()


def fmt_s(x):
    if x is None:
        return "-"
    if x < 1:
        return "%.0f ms" % (x * 1000)
    return "%.2f s" % x


def check_output(handler, out):
    if handler == "shell":
        return out == b"ok\n"
    try:
        j = json.loads(out)
    except ValueError:
        return False
    return j.get("signature_ok") is True and j.get("amount") == "49.99"


# ---------------------------------------------------------------------------
# vmcgi, one process per pool size, in the namespace

class Vmcgi:
    def __init__(self, bench, label, prefix, pool_size):
        self.b = bench
        self.label, self.prefix, self.pool_size = label, prefix, pool_size
        self.sock = os.path.join(bench.tmp, label + ".sock")
        self.ini = os.path.join(bench.tmp, label + ".ini")
        self.log = os.path.join(bench.tmp, label + ".log")
        self.proc = None
        self.seen = {}              # every QEMU child it had
        self.facts = {}

    def ini_text(self):
        b, g = self.b, os.path.join(self.b.build, "guest")
        return (
            "; generated by bench/run.py\n"
            "[vmcgi]\nlisten = %s\nlisten_owner = www-data\n"
            "listen_group = www-data\nlisten_mode = 0660\nworkers = %d\n"
            "max_vms = %d\nprefix = %s\nstate_dir = %s\n"
            "log_level = info\n\n"
            "[template bench]\nkernel = %s\ninitrd = %s\nmemory = %s\n"
            "vcpus = 1\naccel = auto\nboot_timeout = 180s\n"
            "pool_size = %d\n\n"
            "[tenant bench]\ndir = %s\n\n"
            "[handler bench/shell]\nscript = shell.sh\ntimeout = 30s\n"
            "content_type = text/plain\n\n"
            "[handler bench/checkout]\nscript = checkout.py\n"
            "timeout = 30s\nmax_body = 256K\n"
            "content_type = application/json\n"
            % (self.sock, WORKERS, MAX_VMS, self.prefix,
               os.path.join(b.tmp, "state"), os.path.join(g, "vmlinuz"),
               os.path.join(g, "initrd.img"), MEMORY, self.pool_size,
               b.handlers))

    def start(self):
        """Starts it and waits for its first answer; the template boots
        unless an earlier run left its snapshot in the state directory."""
        os.makedirs(os.path.join(self.b.tmp, "state"), exist_ok=True)
        with open(self.ini, "w") as f:
            f.write(self.ini_text())
        t0 = time.monotonic()
        # ip netns exec execs vmcgi in place: the pid is vmcgi's own.
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.b.ns,
             os.path.join(self.b.build, "vmcgi"), "-c", self.ini],
            stdin=subprocess.DEVNULL, stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 240
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited: %s" % (self.label,
                                                      self.tail()))
            if time.monotonic() > deadline:
                raise RuntimeError("%s never answered" % self.label)
            self.track()
            if os.path.exists(self.sock):
                r = http_post(self.b.port, self.prefix + "/bench/shell",
                              b"", {})
                if r["status"] == 200:
                    break
            time.sleep(0.2)
        log("%s pid %d, pool_size %d, first answer after %.1f s"
            % (self.label, self.proc.pid, self.pool_size,
               time.monotonic() - t0))
        text = self.since(0)
        m = re.search(r"accelerator (\S+) \(([^)]*)\)", text)
        if m:
            self.facts["accel"], self.facts["accel why"] = m.groups()
        m = re.search(r"booted in (\d+) ms", text)
        if m:
            self.facts["template boot ms"] = int(m.group(1))
        self.facts["reused snapshot"] = "reusing snapshot" in text

    def track(self):
        """Its QEMU children now, {pid: (comm, starttime)}."""
        if self.proc is None or self.proc.poll() is not None:
            return {}
        q = {p: v for p, v in descendants(self.proc.pid).items()
             if v[0].startswith("qemu-system")}
        self.seen.update(q)
        return q

    def wait_pool(self, timeout=30):
        """Until it has pool_size idle QEMU children; those."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            q = self.track()
            if len(q) == self.pool_size:
                return q
            time.sleep(0.05)
        return self.track()

    def stop(self):
        """SIGTERM, then SIGKILL after 30 s; any QEMU of it left is
        killed by pid and reported."""
        problems = []
        if self.proc is None:
            return problems
        self.track()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                rc = self.proc.wait(30)
                if rc != 0:
                    problems.append("%s exited %d" % (self.label, rc))
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                problems.append("%s ignored SIGTERM" % self.label)
        deadline = time.monotonic() + 5
        while any(alive(p, s) for p, (_, s) in self.seen.items()) and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        left = {p: v for p, v in self.seen.items() if alive(p, v[1])}
        if left:
            problems.append("QEMU of %s left: %s" % (self.label,
                                                     sorted(left)))
            kill_tree(left)
        self.proc = None
        return problems

    def size(self):
        try:
            return os.path.getsize(self.log)
        except OSError:
            return 0

    def since(self, mark):
        with open(self.log, "rb") as f:
            f.seek(mark)
            return f.read().decode("utf-8", "replace")

    def tail(self):
        return " | ".join(self.since(0).splitlines()[-8:])


# ---------------------------------------------------------------------------
# The bench: temporary directory, namespace, nginx, fcgiwrap, vmcgi, runsc

class Bench:
    def __init__(self, build):
        self.build = os.path.abspath(build)
        self.t_start = time.monotonic()
        self.stop_at = self.t_start + SOFT_LIMIT
        self.tmp = tempfile.mkdtemp(prefix="vmcgi-bench-")
        os.chmod(self.tmp, 0o755)   # nginx workers (www-data) pass through
        self.ns = "vmcgi-bench-%d" % os.getpid()
        self.ns_made = False
        self.handlers = os.path.join(self.tmp, "tenants", "bench")
        self.nginx = self.fcgiwrap = None
        self.fcgi_kids = {}
        # The two vmcgi runs side by side, each behind its own prefix.
        self.workers, self.max_vms = WORKERS, MAX_VMS
        self.runs = {}
        self.pool = Vmcgi(self, "vmcgi-pool", PREFIX, POOL_SIZE)
        self.od = Vmcgi(self, "vmcgi-od", "/od", 0)
        self.driver = None
        self.runsc_root = os.path.join(self.tmp, "runsc", "state")
        self.runsc_procs = []
        self.runsc_ids = itertools.count()
        self.body, self.headers = read_event()
        self.port = None
        self.facts = {}

    # -- set-up ------------------------------------------------------------

    def write_handlers(self):
        os.makedirs(self.handlers)
        with open(os.path.join(self.handlers, "shell.sh"), "wb") as f:
            f.write(SHELL_SCRIPT)
        shutil.copy(os.path.join(REPO, "examples", "tenants", "acme",
                                 "checkout.py"), self.handlers)
        for name in os.listdir(self.handlers):
            os.chmod(os.path.join(self.handlers, name), 0o755)
        for d in (os.path.join(self.tmp, "tenants"), self.handlers):
            os.chmod(d, 0o755)

    def make_netns(self):
        run(["ip", "netns", "add", self.ns])
        self.ns_made = True
        run(["ip", "-n", self.ns, "link", "set", "lo", "up"])
        links = run(["ip", "-n", self.ns, "-o", "link", "show"])
        names = [l.split(":")[1].strip() for l in links.splitlines()]
        if names != ["lo"]:
            raise RuntimeError("namespace has links %r" % names)
        log("namespace %s: lo only" % self.ns)

    def start_fcgiwrap(self):
        """fcgiwrap as www-data on a unix socket; CGI wrappers that print
        the header block and exec the very same handler files."""
        d = os.path.join(self.tmp, "fcgiwrap")
        cgi = os.path.join(self.tmp, "cgi")
        os.makedirs(d)
        os.makedirs(cgi)
        shutil.chown(d, "www-data", "www-data")
        os.chmod(cgi, 0o755)
        for name, ctype, script in (
                ("shell", "text/plain", "shell.sh"),
                ("checkout", "application/json", "checkout.py")):
            path = os.path.join(cgi, name)
            with open(path, "w") as f:
                f.write("#!/bin/sh\nprintf 'Content-Type: %s\\r\\n\\r\\n'\n"
                        "exec %s\n" % (ctype, os.path.join(self.handlers,
                                                           script)))
            os.chmod(path, 0o755)
        self.fcgi_sock = os.path.join(d, "fcgiwrap.sock")
        self.fcgiwrap = subprocess.Popen(
            ["fcgiwrap", "-c", str(WORKERS), "-s", "unix:" + self.fcgi_sock],
            user="www-data", group="www-data", cwd=d,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(d, "stderr.log"), "w"),
            start_new_session=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.fcgi_sock):
            if self.fcgiwrap.poll() is not None or \
                    time.monotonic() > deadline:
                raise RuntimeError("fcgiwrap did not start")
            time.sleep(0.05)
        time.sleep(0.2)
        self.fcgi_kids = descendants(self.fcgiwrap.pid)
        log("fcgiwrap pid %d (%d children)" % (self.fcgiwrap.pid,
                                               len(self.fcgi_kids)))

    def start_nginx(self):
        ndir = os.path.join(self.tmp, "nginx")
        os.makedirs(ndir)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        with open(os.path.join(REPO, "etc", "nginx-demo.conf")) as f:
            conf = f.read()
        fcgi = ("        location /cgi/ {\n"
                "            fastcgi_pass unix:%s;\n"
                "            include /etc/nginx/fastcgi_params;\n"
                "            fastcgi_param SCRIPT_FILENAME %s"
                "$fastcgi_script_name;\n"
                "            fastcgi_buffering off;\n"
                "            fastcgi_read_timeout 120s;\n"
                "        }\n\n" % (self.fcgi_sock, self.tmp))
        # The template's vmcgi location, once more for the second vmcgi.
        m = re.search(r"\n( +location @PREFIX@/ \{.*?\n +\}\n)", conf,
                      re.S)
        od = m.group(1).replace("@PREFIX@", self.od.prefix).replace(
            "@SOCKET@", self.od.sock)
        conf = conf.replace(m.group(1), fcgi + od + "\n" + m.group(1))
        subst = {"@DIR@": ndir, "@USER@": "www-data",
                 "@PORT@": str(self.port), "@PREFIX@": self.pool.prefix,
                 "@SOCKET@": self.pool.sock, "@REQUEST_BUFFERING@": "on",
                 "@MAX_BODY@": "1m", "@READ_TIMEOUT@": "120s"}
        for k, v in subst.items():
            conf = conf.replace(k, v)
        # Latency, not logging, is measured.
        conf = conf.replace("access_log %s/access.log;" % ndir,
                            "access_log off;")
        path = os.path.join(ndir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        err = os.path.join(ndir, "error.log")
        self.nginx = subprocess.Popen(
            ["nginx", "-p", ndir, "-c", path, "-e", err,
             "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(ndir, "stderr.log"), "w"),
            start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.nginx.poll() is not None:
                raise RuntimeError("nginx exited")
            try:
                c = socket.create_connection(("127.0.0.1", self.port), 1)
                c.close()
                log("nginx pid %d on 127.0.0.1:%d" % (self.nginx.pid,
                                                      self.port))
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("nginx did not listen on %d" % self.port)

    # -- gVisor --------------------------------------------------------------

    def prepare_runsc(self):
        """One OCI bundle per handler over one read-only copy of the
        guest's root tree (busybox, python3), the scripts under /srv."""
        base = os.path.join(self.tmp, "runsc")
        rootfs = os.path.join(base, "rootfs")
        os.makedirs(self.runsc_root)
        shutil.copytree(os.path.join(self.build, "guest", "root"), rootfs,
                        symlinks=True)
        srv = os.path.join(rootfs, "srv")
        os.makedirs(srv, exist_ok=True)
        for name in ("shell.sh", "checkout.py"):
            shutil.copy(os.path.join(self.handlers, name), srv)
            os.chmod(os.path.join(srv, name), 0o755)
        self.bundles = {}
        for handler, script in (("shell", "shell.sh"),
                                ("checkout", "checkout.py")):
            b = os.path.join(base, handler)
            os.makedirs(b)
            run(["runsc", "spec", "--bundle", b])
            with open(os.path.join(b, "config.json")) as f:
                cfg = json.load(f)
            p = cfg["process"]
            p["terminal"] = False
            p["args"] = ["/srv/" + script]
            p["env"] = cgi_env("bench/" + handler, self.body
                               if handler == "checkout" else b"",
                               self.headers if handler == "checkout"
                               else {})
            p["cwd"] = "/tmp"
            p["user"] = {"uid": 1000, "gid": 1000}
            cfg["root"] = {"path": rootfs, "readonly": True}
            cfg["hostname"] = "sandbox"
            cfg["mounts"].append({"destination": "/tmp", "type": "tmpfs",
                                  "source": "tmpfs",
                                  "options": ["nosuid", "nodev"]})
            with open(os.path.join(b, "config.json"), "w") as f:
                json.dump(cfg, f)
            self.bundles[handler] = b
        self.facts["runsc"] = run(["runsc", "--version"]).splitlines()[0]

    def runsc_event(self, handler, body):
        cid = "bench-%d-%d" % (os.getpid(), next(self.runsc_ids))
        argv = ["runsc", "--root", self.runsc_root, "--platform=ptrace",
                "--network=none", "--ignore-cgroups", "run",
                "--bundle", self.bundles[handler], cid]
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        self.runsc_procs.append(p)
        try:
            out, err, ttfb = b"", b"", None
            p.stdin.write(body)
            p.stdin.close()
            fds = {p.stdout.fileno(): "o", p.stderr.fileno(): "e"}
            deadline = t0 + 60
            while fds and time.monotonic() < deadline:
                r, _, _ = select.select(list(fds), [], [], 1)
                for fd in r:
                    d = os.read(fd, 65536)
                    if not d:
                        del fds[fd]
                    elif fds[fd] == "o":
                        if ttfb is None:
                            ttfb = time.monotonic() - t0
                        out += d
                    else:
                        err += d
            rc = p.wait(max(1, deadline - time.monotonic()))
            done = time.monotonic() - t0
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
            p.stderr.close()
            self.runsc_procs.remove(p)
        ok = rc == 0 and check_output(handler, out)
        return {"ok": ok, "ttfb": ttfb or done, "done": done,
                "error": None if ok else "runsc rc %s: %r %r"
                % (rc, out[:100], err[-300:])}

    def stop_runsc(self):
        for p in list(self.runsc_procs):
            if p.poll() is None:
                p.kill()
        if os.path.isdir(self.runsc_root):
            try:
                ids = run(["runsc", "--root", self.runsc_root, "list",
                           "-quiet"]).split()
            except (RuntimeError, subprocess.TimeoutExpired):
                ids = []
            for cid in ids:
                subprocess.run(["runsc", "--root", self.runsc_root,
                                "delete", "-force", cid],
                               capture_output=True, timeout=30)
        # Sandbox and gofer processes name our unique state directory.
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if self.runsc_root.encode() in cmd:
                try:
                    os.kill(int(name), signal.SIGKILL)
                    log("killed runsc process %s left over" % name)
                except ProcessLookupError:
                    pass

    # -- cold boot -----------------------------------------------------------

    def prepare_driver(self):
        """tests/agent_test.py's driver, set to vmcgi's guest memory and
        accelerator: its QEMU command line is the template's."""
        accel = self.pool.facts.get("accel", "tcg")
        base = drv.QEMU_BASE
        base[base.index("-m") + 1] = MEMORY
        base[base.index("-accel") + 1] = accel
        base[base.index("-cpu") + 1] = "host" if accel == "kvm" else \
            "qemu64"
        drv.MEM = MEMORY
        self.driver = drv.Harness(self.build)
        if accel == "kvm":      # vmcgi's command line with kvm-clock
            self.driver.cmdline = "console=ttyS0 quiet panic=-1 " \
                "rdinit=/init"

    def cold_event(self, handler, body, env, script):
        """A new microVM, booted from the kernel (share=off, no
        -incoming): READY(0), HELLO, then the event."""
        h = self.driver
        t0, w0 = time.monotonic(), time.time()
        c = drv.Clone.__new__(drv.Clone)    # booted, not restored
        c.h = h
        c.p, c.chan, qsock = h.qemu("off", "null", [], [])
        try:
            m = c.chan.wait(drv.BOOT_TIMEOUT)
            if m is None or m[0] != drv.READY:
                raise RuntimeError("no READY(0) from a cold boot")
            boot = time.monotonic() - t0
            c.t0 = t0
            # The port is open since READY(0), so no HELLO is lost; a
            # resend would only bring a second READY after RUN.
            c.hello(resend=30)
            r = c.run(script, env=env, stdin=body, quiet_after=0)
            done = time.monotonic() - t0
        finally:
            qsock.close()
            c.close()
        ok = r.exit[:2] == (drv.EXITED, 0) and \
            check_output(handler, bytes(r.stdout))
        ttfb = (r.t_first_out - w0) if r.t_first_out else done
        return {"ok": ok, "ttfb": ttfb, "done": done, "boot": boot,
                "ready": c.t_ready,
                "error": None if ok else "exit %r %r" % (r.exit,
                                                         bytes(r.stderr))}

    # -- teardown ----------------------------------------------------------

    def teardown(self):
        problems = []
        for what, p in (("nginx", self.nginx),):
            if p and p.poll() is None:
                os.kill(p.pid, signal.SIGQUIT)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait(5)
        for vm in (self.pool, self.od):
            try:
                problems += vm.stop()
            except Exception as e:
                problems.append("stopping %s: %s" % (vm.label, e))
        if self.fcgiwrap and self.fcgiwrap.poll() is None:
            # fcgiwrap respawns a child that dies and leaves its children
            # behind when it exits: the parent goes first, its children
            # then come to us (a subreaper) and are ended and reaped.
            kids = descendants(self.fcgiwrap.pid)
            os.kill(self.fcgiwrap.pid, signal.SIGTERM)
            try:
                self.fcgiwrap.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.fcgiwrap.pid, signal.SIGKILL)
                self.fcgiwrap.wait(5)
            kill_tree(kids)
            reap(kids)
        if self.driver:
            self.driver.cleanup()
        try:
            self.stop_runsc()
        except Exception as e:
            problems.append("stopping runsc: %s" % e)
        # runsc run exits before its sandbox and gofer processes are
        # reaped: as subreaper we inherit them as zombies; reap those,
        # report anything still running.
        reap(descendants(os.getpid()), timeout=0)
        left = descendants(os.getpid())
        if left:
            problems.append("processes left: %s" % sorted(
                "%s %d" % (v[0], p) for p, v in left.items()))
            kill_tree(left)
            reap(left)
        if self.ns_made:
            r = subprocess.run(["ip", "netns", "del", self.ns],
                               capture_output=True, text=True)
            if r.returncode:
                problems.append("ip netns del: %s" % r.stderr.strip())
        shutil.rmtree(self.tmp, ignore_errors=True)
        return problems


# ---------------------------------------------------------------------------
# The run

def vmcgi_facts(text):
    """Per-request figures from vmcgi's log lines: route -> list of dicts."""
    out = {}
    for line in text.splitlines():
        m = re.search(r" bench/(\w+) status=(\d+).* ms=(\d+) vm=(\w+) "
                      r"load_ms=(\d+) resume_ms=(\d+) first_byte_ms=(-?\d+)",
                      line)
        if m:
            code = re.search(r" code=([a-z-]+)", line)
            out.setdefault(m.group(1), []).append({
                "status": int(m.group(2)), "ms": int(m.group(3)),
                "vm": m.group(4), "load_ms": int(m.group(5)),
                "resume_ms": int(m.group(6)),
                "first_byte_ms": int(m.group(7)),
                "code": code.group(1) if code else None})
    return out


def http_sample(port, path, handler, body, headers):
    r = http_post(port, path, body, headers)
    ok = r["status"] == 200 and r["complete"] and \
        check_output(handler, r["body"])
    return {"ok": ok, "ttfb": r["ttfb"], "done": r["done"],
            "status": r["status"],
            "error": None if ok else "status %s complete %s body %r %s" %
            (r["status"], r["complete"], r["body"][:80], r.get("error", ""))}


def machine_facts(b):
    f = b.facts
    with open("/proc/cpuinfo") as fh:
        m = re.search(r"model name\s*:\s*(.*)", fh.read())
    f["cpu"] = m.group(1).strip() if m else platform.processor()
    f["cores"] = os.cpu_count()
    f["kernel"] = platform.release()
    f["qemu"] = run(["qemu-system-x86_64", "--version"]).splitlines()[0]
    f["nginx"] = subprocess.run(["nginx", "-v"], capture_output=True,
                                text=True).stderr.strip()
    f["fcgiwrap"] = run(["dpkg-query", "-W", "-f", "${Version}",
                         "fcgiwrap"])
    f["memory"] = MEMORY
    f["commit"] = run(["git", "-C", REPO, "log", "-1",
                       "--format=%h %s"]).strip()[:72]
    f["dirty"] = bool(run(["git", "-C", REPO, "status", "--porcelain",
                           "--untracked-files=no"]).strip())
    initrd = os.path.join(b.build, "guest", "initrd.img")
    f["initrd"] = "%.1f MB, built %s" % (
        os.path.getsize(initrd) / 1e6,
        time.strftime("%Y-%m-%d %H:%M UTC",
                      time.gmtime(os.path.getmtime(initrd))))
    with open("/proc/loadavg") as fh:
        f["loadavg at start"] = " ".join(fh.read().split()[:3])
    f["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def cell_systems(b, handler):
    """[(system, sample function)] for HANDLER, in the order they run."""
    body = b.body if handler == "checkout" else b"ping"
    headers = b.headers if handler == "checkout" else \
        {"Content-Type": "text/plain"}
    out = []
    for vm in (b.pool, b.od):
        out.append((vm.label, lambda path=vm.prefix + "/bench/" + handler:
                    http_sample(b.port, path, handler, body, headers)))
    out.append(("gvisor", lambda: b.runsc_event(handler, body)))
    out.append(("fcgiwrap", lambda: http_sample(
        b.port, "/cgi/" + handler, handler, body, headers)))
    env = cgi_env("bench/" + handler, body, headers)
    with open(os.path.join(b.handlers, SCRIPTS[handler]), "rb") as f:
        script = f.read()
    out.append(("cold", lambda: b.cold_event(handler, body, env, script)))
    return out


def safe(fn):
    try:
        return fn()
    except Exception as e:              # a failed event is a result
        return {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}


def load1():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def phase_serial(b, cells, handler, counts):
    """Concurrency 1, round robin: one event of each system in turn, so
    the load others put on the machine falls on every system alike."""
    systems = cell_systems(b, handler)
    mine = {}
    for name, fn in systems:
        s = safe(fn)                    # unmeasured: page cache, first exec
        if not s["ok"]:
            log("%s %s warm-up failed: %s" % (name, handler, s["error"]))
        mine[name] = Cell(name, handler, 1)
        mine[name].load = [load1()]
    marks = {vm.label: vm.size() for vm in (b.pool, b.od)}
    n = max(counts(name, 1) for name, _ in systems)
    for i in range(n):
        for name, fn in systems:
            if i >= counts(name, 1):
                continue
            if time.monotonic() > b.stop_at:
                raise Stop()
            mine[name].add(safe(fn))
        if i % 5 == 4:
            log("%s c=1: round %d of %d" % (handler, i + 1, n))
    for name, _ in systems:
        c = mine[name]
        c.elapsed = sum(x["done"] for x in c.ok())
        c.load.append(load1())
        cells.append(c)
        c.report()
    for vm in (b.pool, b.od):
        mine[vm.label].vm = vmcgi_facts(vm.since(marks[vm.label])).get(
            handler, [])


def phase_parallel(b, cells, handler, counts):
    """Concurrency 4: each system's cell right after the other's."""
    for name, fn in cell_systems(b, handler):
        if time.monotonic() > b.stop_at:
            raise Stop()
        c = Cell(name, handler, 4)
        vm = {b.pool.label: b.pool, b.od.label: b.od}.get(name)
        if vm is b.pool:
            vm.wait_pool(10)
        mark = vm.size() if vm else 0
        run_cell(c, counts(name, 4), fn, b.stop_at)
        if vm:
            c.vm = vmcgi_facts(vm.since(mark)).get(handler, [])
        cells.append(c)


def phase_saturation(b, cells, quick):
    """Closed loop on the shell handler at and above max_vms."""
    for conc in (MAX_VMS, 2 * MAX_VMS):
        if time.monotonic() > b.stop_at:
            raise Stop()
        b.pool.wait_pool(10)
        cell = Cell(b.pool.label, "shell", conc)
        cell.kind = "saturation"
        cap = time.monotonic() + (4 if quick else 12)
        run_cell(cell, 10 ** 6, lambda: http_sample(
            b.port, PREFIX + "/bench/shell", "shell", b"ping",
            {"Content-Type": "text/plain"}), min(cap, b.stop_at))
        cell.note = "%.0f s closed loop" % cell.elapsed
        cells.append(cell)


def phase_memory(b):
    b.pool.wait_pool(30)
    time.sleep(1)
    q = b.pool.wait_pool(10)
    per = [x for x in (smaps_rollup(pid) for pid in q) if x]
    f = b.facts
    f["pool clones measured"] = len(per)
    if per:
        f["pss per idle clone kB"] = statistics.median(
            x.get("Pss", 0) for x in per)
        f["rss per idle clone kB"] = statistics.median(
            x.get("Rss", 0) for x in per)
        f["pss pool total kB"] = sum(x.get("Pss", 0) for x in per)
        for k in ("Pss_Anon", "Pss_File", "Pss_Shmem"):
            if k in per[0]:
                f["%s per clone kB" % k.lower()] = statistics.median(
                    x.get(k, 0) for x in per)
    log("memory: %s" % {k: v for k, v in f.items() if "kB" in k})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--out", default=os.path.join(REPO, "docs",
                                                  "bench-results.md"))
    ap.add_argument("--quick", action="store_true",
                    help="a few samples per cell, to check the harness")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (namespace, nginx, runsc)")

    def on_signal(sig, frame):
        raise KeyboardInterrupt("signal %d" % sig)

    def on_alarm(sig, frame):
        raise Stop()

    def counts(system, conc):
        if args.quick:
            return QUICK[conc] if system != "cold" else QUICK[conc] // 2
        return SLOW_SAMPLES.get(system, SAMPLES)[conc]

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(HARD_LIMIT)
    become_subreaper()
    b = Bench(args.build)
    cells, stopped = [], None
    try:
        machine_facts(b)
        b.write_handlers()
        b.make_netns()
        b.start_fcgiwrap()
        b.start_nginx()
        b.prepare_runsc()
        b.pool.start()          # boots the template and snapshots it
        b.od.start()            # reuses that snapshot
        b.facts.update(b.pool.facts)
        phase_memory(b)
        b.prepare_driver()
        for handler in ("shell", "checkout"):
            phase_serial(b, cells, handler, counts)
        for handler in ("shell", "checkout"):
            phase_parallel(b, cells, handler, counts)
        phase_saturation(b, cells, args.quick)
    except Stop:
        stopped = "time limit reached after %.0f s: later cells skipped" \
            % (time.monotonic() - b.t_start)
        log(stopped)
    except KeyboardInterrupt as e:
        stopped = "interrupted (%s)" % e
        log(stopped)
    finally:
        signal.alarm(0)
        b.runs = {vm.label: vmcgi_facts(vm.since(0)) if
                  os.path.exists(vm.log) else {} for vm in (b.pool, b.od)}
        try:
            problems = b.teardown()
        except Exception as e:
            problems = ["teardown: %s" % e]
    for p in problems:
        log("cleanup problem: %s" % p)
    b.facts["wall time s"] = round(time.monotonic() - b.t_start)
    import report
    text = report.render(b, cells, stopped, problems)
    print(text)
    if cells:
        with open(args.out, "w") as f:
            f.write(text)
        log("written to %s" % os.path.relpath(args.out, os.getcwd()))
    sys.exit(0)


if __name__ == "__main__":
    main()
