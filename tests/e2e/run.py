#!/usr/bin/env python3
"""End-to-end tests of vmcgi through a real nginx.

    tests/e2e/run.py BUILD_DIR [--only NAME,...] [--list] [--infra-only]

BUILD_DIR holds vmcgi and guest/{vmlinuz,initrd.img}.  The suite runs as
root.  It makes a temporary directory and a network namespace
vmcgi-e2e-PID with nothing but lo, runs vmcgi inside that namespace (so no
mistake can send a packet off the machine), runs nginx as Debian does
(master as root, workers as www-data) on 127.0.0.1 and a free port, and
talks to it with http.client and raw sockets.  Each test prints
"ok - NAME" or "not ok - NAME: reason"; the run ends with
"e2e: N passed, M failed" and exits 1 if any failed.

Whatever happens, nginx and vmcgi are stopped by pid, QEMU processes that
vmcgi started are checked for (and, if left over, killed by pid and
reported), and the namespace and the temporary directory are removed.

--infra-only checks the harness alone, without vmcgi: namespace, nginx as
www-data, a 502 from nginx for the missing socket, and the teardown.
"""

import argparse
import configparser
import ctypes
import errno
import fcntl
import hashlib
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
EXAMPLES = os.path.join(REPO, "examples")
ETC = os.path.join(REPO, "etc")

PREFIX = "/e2e-hooks"
STDERR_LIMIT = 4096
DEFAULT_TEST_TIMEOUT = 90
SETTLE = 5.0            # seconds a QEMU may outlive its request
E2E_UIDS = 0x70000000 + 1024 * (os.getpid() % 64)  # see the [vmcgi] keys
BOOT_WAIT = 300         # first answer from a cold template
RID_RE = re.compile(r"^[0-9a-f]{16}$")
BETA_SCRIPT_MARKER = "E2E-BETA-SCRIPT-7c0ffee5d41402ab"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Handlers of the test tenants: name -> keys of its [handler] section.
ALPHA = {
    "env": {"script": "env.py", "methods": "GET, POST, PUT",
            "content_type": "application/json"},
    "echo": {"script": "echo.sh"},
    "small": {"script": "echo.sh", "max_body": "1K"},
    "empty": {"script": "empty.sh"},
    "crash": {"script": "crash.sh"},
    "segv": {"script": "segv.sh"},
    "loop": {"script": "loop.sh", "timeout": "4s"},
    "latecrash": {"script": "latecrash.sh"},
    "latehang": {"script": "latehang.sh", "timeout": "3s"},
    "pss": {"script": "pss.sh", "content_type": "text/plain; charset=utf-8"},
    "big": {"script": "big.py", "timeout": "60s"},
    "wbr": {"script": "wbr.py", "timeout": "60s", "max_body": "2M"},
    "cgi": {"script": "cgi.sh", "output": "cgi"},
    "cgibad": {"script": "cgibad.sh", "output": "cgi"},
    "writer": {"script": "writer.py", "content_type": "application/json"},
    "net": {"script": "netprobe.py", "timeout": "20s"},
    "rand": {"script": "rand.sh"},
    "search": {"script": "search.py", "timeout": "90s"},
    "stderr": {"script": "stderr.sh"},
    "sleep3": {"script": "sleep3.sh"},
    "stream": {"script": "stream.py", "timeout": "30s"},
    "missing": {"script": "missing.sh"},
    "escape": {"script": "escape.sh"},
    "subesc": {"script": "sub/run.sh"},
    "unread": {"script": "unread.sh"},
    "quickloop": {"script": "loop.sh", "timeout": "1s"},
    "cgiaccel": {"script": "cgiaccel.sh", "output": "cgi"},
    "cgiframing": {"script": "cgiframing.sh", "output": "cgi"},
    "cgibighead": {"script": "cgibighead.sh", "output": "cgi"},
    "flood": {"script": "flood.sh", "timeout": "3s"},
    "agentprobe": {"script": "agentprobe.sh"},
    "preloaded": {"script": "preloaded.py"},
    "compiled": {"script": "compiled.py"},
}
BETA = {
    "plant": {"script": "plant.sh"},
    "echo": {"script": "echo.sh"},
    "compiled": {"script": "compiled.py"},
}
# Abusive handlers (issue 4), each followed by normal events.
MALLORY = {
    "forkbomb": {"script": "forkbomb.sh", "timeout": "4s"},
    "balloon": {"script": "balloon.py", "timeout": "60s"},
    "fill": {"script": "fill.sh", "timeout": "60s"},
    "outerr": {"script": "outerr.py", "timeout": "90s"},
    "closeout": {"script": "closeout.sh", "timeout": "3s"},
    "killparent": {"script": "killparent.sh"},
    "echo": {"script": "echo.sh"},
}
# A tenant that may run one event at a time, for the backpressure tests.
FLOOD = {
    "slow": {"script": "slow.sh"},
}
TENANT_KEYS = {"flood": {"max_concurrent": "1"}}


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def log(msg):
    print("# " + msg, flush=True)


# ---------------------------------------------------------------------------
# Processes: QEMU children of vmcgi, found through /proc, never by name
# alone: other QEMUs on this machine belong to others.

def proc_stat(pid):
    """(ppid, comm, starttime, cpu ticks) of PID, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    comm = data[data.index("(") + 1:data.rindex(")")]
    rest = data[data.rindex(")") + 2:].split()
    # rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15,
    # starttime 22.
    return int(rest[1]), comm, int(rest[19]), int(rest[11]) + int(rest[12])


def proc_table():
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st:
                table[int(name)] = st
    return table


def qemu_children(root):
    """QEMU processes below ROOT: {pid: (starttime, cpu ticks)}."""
    if root is None:
        return {}
    table = proc_table()
    kids = {}
    for pid, st in table.items():
        kids.setdefault(st[0], []).append(pid)
    out, todo = {}, list(kids.get(root, []))
    while todo:
        pid = todo.pop()
        ppid, comm, start, cpu = table[pid]
        if comm.startswith("qemu-system"):
            out[pid] = (start, cpu)
        todo += kids.get(pid, [])
    return out


def thread_nices(pid):
    """The nice values of PID's threads (a set), empty if it is gone."""
    out = set()
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                data = f.read()
        except OSError:
            continue
        out.add(int(data[data.rindex(")") + 2:].split()[16]))
    return out


def alive(pid, start):
    st = proc_stat(pid)
    return st is not None and st[2] == start


# ---------------------------------------------------------------------------
# HTTP through nginx

class Resp:
    def __init__(self, status, headers, body, elapsed, complete=True):
        self.status = status
        self.headers = headers          # {lower name: [values]}
        self.body = body
        self.elapsed = elapsed
        self.complete = complete
        self.events = []                # raw: [(time, bytes so far)]
        self.raw = b""

    def header(self, name, default=None):
        vals = self.headers.get(name.lower())
        return vals[0] if vals else default

    @property
    def rid(self):
        return self.header("x-request-id")

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise Fail("body is not JSON: %r" % self.body[:200])

    def __repr__(self):
        return "<%s %r%s>" % (self.status, self.body[:120],
                              "" if self.complete else " incomplete")


def hook(route):
    return PREFIX + "/" + route


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.setdefault(k.strip().lower(), []).append(v.strip())
    return int(parts[1]), headers


def dechunk(data):
    """Decode a chunked body: (body, complete)."""
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
            # the last chunk, then trailers, then an empty line
            rest = data[end:]
            return b"".join(out), rest.startswith(b"\r\n\r\n") or \
                b"\r\n\r\n" in rest
        start = end + 2
        if len(data) < start + size + 2:
            out.append(data[start:start + size])
            return b"".join(out), False
        out.append(data[start:start + size])
        pos = start + size + 2


class Client:
    def __init__(self, port):
        self.port = port

    def req(self, method, path, body=None, headers=None, timeout=60):
        """One request with http.client; a cut-short body raises Fail."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=timeout)
        hdrs = {"Connection": "close"}
        hdrs.update(headers or {})
        t = time.monotonic()
        try:
            conn.request(method, path, body=body, headers=hdrs)
            r = conn.getresponse()
            try:
                data = r.read()
            except http.client.IncompleteRead as e:
                raise Fail("%s %s: response cut short after %d bytes"
                           % (method, path, len(e.partial)))
            headers = {}
            for k, v in r.getheaders():
                headers.setdefault(k.lower(), []).append(v)
            return Resp(r.status, headers, data, time.monotonic() - t)
        except (OSError, http.client.HTTPException) as e:
            raise Fail("%s %s: %s: %s" % (method, path, type(e).__name__, e))
        finally:
            conn.close()

    def raw(self, method, path, headers=None, body=None, chunks=None,
            timeout=60, stop=None, chunk_pause=0.0):
        """A request on a raw socket, HTTP/1.1.

        CHUNKS, a list of bytes, is sent as a chunked body.  STOP(raw) is
        called after each read; when it returns true the socket is closed
        at once (a client going away).  Returns a Resp with complete=False
        if the body ended before its framing said it would.
        """
        s = socket.create_connection(("127.0.0.1", self.port),
                                     timeout=timeout)
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: localhost",
                 "Connection: close"]
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        if chunks is not None:
            lines.append("Transfer-Encoding: chunked")
        elif body is not None:
            lines.append("Content-Length: %d" % len(body))
        t0 = time.monotonic()
        raw, events = b"", []
        try:
            s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            if chunks is not None:
                for c in chunks:
                    s.sendall(b"%x\r\n%s\r\n" % (len(c), c))
                    if chunk_pause:
                        time.sleep(chunk_pause)
                s.sendall(b"0\r\n\r\n")
            elif body:
                s.sendall(body)
            deadline = t0 + timeout
            while time.monotonic() < deadline:
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    break
                except ConnectionResetError:
                    break
                if not data:
                    break
                raw += data
                events.append((time.monotonic() - t0, len(raw)))
                if stop and stop(raw):
                    break
        finally:
            s.close()
        elapsed = time.monotonic() - t0
        head_end = raw.find(b"\r\n\r\n")
        if head_end < 0:
            raise Fail("%s %s: no response head (got %r)"
                       % (method, path, raw[:200]))
        status, headers = parse_head(raw[:head_end])
        rest = raw[head_end + 4:]
        te = ",".join(headers.get("transfer-encoding", [])).lower()
        if "chunked" in te:
            body, complete = dechunk(rest)
        elif "content-length" in headers:
            n = int(headers["content-length"][0])
            body, complete = rest[:n], len(rest) >= n
        else:
            body, complete = rest, True
        r = Resp(status, headers, body, elapsed, complete)
        r.events, r.raw = events, raw
        return r

    def arrival(self, resp, needle):
        """Seconds from the request until NEEDLE had arrived, or None."""
        at = resp.raw.find(needle)
        if at < 0:
            return None
        for t, upto in resp.events:
            if upto >= at + len(needle):
                return t
        return None


# ---------------------------------------------------------------------------
# FastCGI, spoken straight to vmcgi's socket

FCGI_BEGIN, FCGI_ABORT, FCGI_END, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT, \
    FCGI_STDERR = 1, 2, 3, 4, 5, 6, 7


def fcgi_record(rtype, content, rid=1, version=1):
    pad = (-len(content)) % 8
    return struct.pack("!BBHHBx", version, rtype, rid, len(content), pad) + \
        content + b"\0" * pad


def fcgi_len(n):
    return bytes([n]) if n < 128 else struct.pack("!I", n | 0x80000000)


def fcgi_pairs(params):
    out = b""
    for k, v in params:
        k = k.encode("latin-1") if isinstance(k, str) else k
        v = v.encode("latin-1") if isinstance(v, str) else v
        out += fcgi_len(len(k)) + fcgi_len(len(v)) + k + v
    return out


def fcgi_stream(rtype, data):
    out = b""
    for i in range(0, len(data), 65535):
        out += fcgi_record(rtype, data[i:i + 65535])
    return out + fcgi_record(rtype, b"")


def fcgi_begin():
    return fcgi_record(FCGI_BEGIN, struct.pack("!HB5x", 1, 0))


def fcgi_request(script_name=None, body=b"", method="POST", extra=()):
    params = [("REQUEST_METHOD", method),
              ("CONTENT_LENGTH", str(len(body))),
              ("CONTENT_TYPE", "text/plain"),
              ("QUERY_STRING", ""),
              ("GATEWAY_INTERFACE", "CGI/1.1"),
              ("SERVER_PROTOCOL", "HTTP/1.1")]
    if script_name is not None:
        params += [("SCRIPT_NAME", script_name), ("REQUEST_URI", "/x")]
    params += list(extra)
    return fcgi_begin() + fcgi_stream(FCGI_PARAMS, fcgi_pairs(params)) + \
        fcgi_stream(FCGI_STDIN, body)


def fcgi_talk(path, data, timeout=10, shut=True):
    """Send DATA, read until EOF.  Returns (bytes, how): how is "eof",
    "reset" or "timeout".  SHUT half-closes after sending, for records
    that are cut short; a complete request must not, because vmcgi takes
    the end of its input as the web server giving up on the request."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    got, how = b"", "eof"
    try:
        s.connect(path)
        try:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            how = "reset"
        deadline = time.monotonic() + timeout
        while how == "eof":
            if time.monotonic() > deadline:
                how = "timeout"
                break
            try:
                d = s.recv(65536)
            except socket.timeout:
                how = "timeout"
                break
            except ConnectionResetError:
                how = "reset"
                break
            if not d:
                break
            got += d
    finally:
        s.close()
    return got, how


def fcgi_parse(data):
    """(stdout bytes, ended with END_REQUEST)."""
    out, pos, ended = b"", 0, False
    while pos + 8 <= len(data):
        ver, rtype, rid, clen, plen = struct.unpack("!BBHHBx",
                                                    data[pos:pos + 8])
        content = data[pos + 8:pos + 8 + clen]
        pos += 8 + clen + plen
        if rtype == FCGI_STDOUT:
            out += content
        elif rtype == FCGI_END:
            ended = True
    return out, ended


def cgi_status(stdout):
    """Status of a FastCGI responder's CGI output (200 if none given)."""
    head = re.split(rb"\r?\n\r?\n", stdout, 1)[0].decode("latin-1")
    for line in re.split(r"\r?\n", head):
        if line.lower().startswith("status:"):
            return int(line.split(":", 1)[1].split()[0])
    return 200 if stdout else None


# ---------------------------------------------------------------------------
# The environment: temporary directory, namespace, nginx, vmcgi

def nsenter(ns):
    """The command prefix that runs a program in network namespace NS."""
    return ["nsenter", "--net=/run/netns/%s" % ns, "--"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ini_value(v):
    """iniparser cuts a value at ';' or '#' unless it is quoted."""
    if re.search(r"[;#]", v) and not v.startswith('"'):
        return '"%s"' % v
    return v


def ini_section(name, keys):
    return "[%s]\n%s\n" % (name, "".join("%s = %s\n" % (k, ini_value(v))
                                          for k, v in keys.items()))


def example_sections():
    """The tenants and handlers of etc/vmcgi.ini, with absolute dirs."""
    cp = configparser.ConfigParser(interpolation=None, strict=False,
                                   comment_prefixes=("#", ";"))
    cp.read(os.path.join(ETC, "vmcgi.ini"))
    out = []
    for sec in cp.sections():
        kind = sec.split()[0].lower()
        keys = dict(cp.items(sec))
        if kind == "tenant":
            keys["dir"] = os.path.normpath(os.path.join(ETC, keys["dir"]))
        elif kind == "handler":
            keys.pop("template", None)
        else:
            continue
        out.append(ini_section(sec, keys))
    return out


class Env:
    def __init__(self, build, infra_only=False):
        self.build = os.path.abspath(build)
        self.infra_only = infra_only
        self.tmp = tempfile.mkdtemp(prefix="vmcgi-e2e-")
        os.chmod(self.tmp, 0o755)     # nginx workers (www-data) reach the
        self.ns = "vmcgi-e2e-%d" % os.getpid()  # socket through it
        self.ns_made = False
        self.sock = os.path.join(self.tmp, "vmcgi.sock")
        self.ini = os.path.join(self.tmp, "vmcgi.ini")
        self.vlog = os.path.join(self.tmp, "vmcgi.log")
        self.ndir = os.path.join(self.tmp, "nginx")
        self.tenants = os.path.join(self.tmp, "tenants")
        self.port = None
        self.nginx = None
        self.vmcgi = None
        self.vlogf = None
        self.baseline = 0
        self.seen = {}                  # every QEMU pid vmcgi ever had
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sampler = None
        self.client = None
        self.restarts = 0

    # -- set-up ------------------------------------------------------------

    def write_files(self):
        shutil.copytree(os.path.join(HERE, "tenants"), self.tenants,
                        symlinks=True)
        outside = os.path.join(self.tmp, "outside")
        os.makedirs(outside)
        for name in ("secret.sh", "run.sh"):
            with open(os.path.join(outside, name), "w") as f:
                f.write("#!/bin/sh\necho OUTSIDE-THE-TENANT\n")
        os.makedirs(os.path.join(self.tmp, "state"))
        with open(self.ini, "w") as f:
            f.write(self.ini_text())

    def ini_text(self):
        g = os.path.join(self.build, "guest")
        parts = [
            "; generated by tests/e2e/run.py\n",
            ini_section("vmcgi", {
                "listen": self.sock, "listen_owner": "www-data",
                "listen_group": "www-data", "listen_mode": "0660",
                "workers": "4", "prefix": PREFIX,
                # A block of the default range of its own, so that runs
                # side by side on one host do not share uids.
                "vm_uids": "%d-%d" % (E2E_UIDS, E2E_UIDS + 1023),
                "state_dir": os.path.join(self.tmp, "state"),
                "stderr_limit": "4k", "log_level": "debug",
                "read_timeout": "5s"}),
            ini_section("template e2e", {
                "kernel": os.path.join(g, "vmlinuz"),
                "initrd": os.path.join(g, "initrd.img"),
                "memory": "512M", "vcpus": "1", "accel": "auto",
                "boot_timeout": "180s"}),
        ]
        for tenant, handlers in (("alpha", ALPHA), ("beta", BETA),
                                 ("flood", FLOOD), ("mallory", MALLORY)):
            keys = {"dir": os.path.join(self.tenants, tenant)}
            keys.update(TENANT_KEYS.get(tenant, {}))
            parts.append(ini_section("tenant " + tenant, keys))
            for name, keys in handlers.items():
                parts.append(ini_section("handler %s/%s" % (tenant, name),
                                         keys))
        return "\n".join(parts + example_sections())

    def make_netns(self):
        run(["ip", "netns", "add", self.ns])
        self.ns_made = True
        run(["ip", "-n", self.ns, "link", "set", "lo", "up"])
        links = run(["ip", "-n", self.ns, "-o", "link", "show"])
        names = [l.split(":")[1].strip() for l in links.splitlines()]
        check(names == ["lo"], "namespace has links %r" % names)
        routes = run(["ip", "-n", self.ns, "route", "show"]).strip()
        check(routes == "", "namespace has routes: %r" % routes)
        log("namespace %s: lo only, no routes" % self.ns)

    def start_nginx(self):
        os.makedirs(self.ndir, exist_ok=True)
        self.port = free_port()
        with open(os.path.join(ETC, "nginx-demo.conf")) as f:
            conf = f.read()
        subst = {"@DIR@": self.ndir, "@USER@": "www-data",
                 "@PORT@": str(self.port), "@PREFIX@": PREFIX,
                 "@SOCKET@": self.sock, "@REQUEST_BUFFERING@": "off",
                 "@MAX_BODY@": "64m", "@READ_TIMEOUT@": "120s"}
        for k, v in subst.items():
            conf = conf.replace(k, v)
        check("@" not in re.sub(r"#.*", "", conf),
              "unsubstituted placeholder in nginx.conf")
        path = os.path.join(self.ndir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        err = os.path.join(self.ndir, "error.log")
        self.nginx = subprocess.Popen(
            ["nginx", "-p", self.ndir, "-c", path, "-e", err,
             "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.ndir, "stderr.log"), "w"),
            start_new_session=True)
        self.client = Client(self.port)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            check(self.nginx.poll() is None,
                  "nginx exited: %s" % tail(err))
            try:
                r = self.client.req("GET", "/healthz", timeout=2)
                if r.status == 200:
                    log("nginx pid %d on 127.0.0.1:%d"
                        % (self.nginx.pid, self.port))
                    return
            except Fail:
                pass
            time.sleep(0.2)
        raise Fail("nginx did not answer on port %d: %s"
                   % (self.port, tail(err)))

    def nginx_workers_user(self):
        users = set()
        for pid, st in proc_table().items():
            if st[0] == self.nginx.pid:
                users.add(os.stat("/proc/%d" % pid).st_uid)
        return users

    def start_vmcgi(self):
        if self.vlogf is None:
            self.vlogf = open(self.vlog, "ab")
        vmcgi = os.path.join(self.build, "vmcgi")
        # nsenter execs vmcgi in place (the pid is vmcgi's own) and, unlike
        # ip netns exec, leaves /sys alone, so the cgroup mounts stay.
        self.vmcgi = subprocess.Popen(
            nsenter(self.ns) + [vmcgi, "-c", self.ini],
            stdin=subprocess.DEVNULL, stdout=self.vlogf, stderr=self.vlogf,
            start_new_session=True)
        deadline = time.monotonic() + BOOT_WAIT
        while not os.path.exists(self.sock):
            check(self.vmcgi.poll() is None,
                  "vmcgi exited with %s: %s" % (self.vmcgi.returncode,
                                                tail(self.vlog)))
            check(time.monotonic() < deadline, "no socket %s" % self.sock)
            time.sleep(0.1)
        log("vmcgi pid %d, socket %s" % (self.vmcgi.pid, self.sock))
        self.warm_up(deadline)

    def warm_up(self, deadline):
        """Wait for the first real answer (the template boots first)."""
        last = None
        while time.monotonic() < deadline:
            check(self.vmcgi.poll() is None,
                  "vmcgi exited with %s: %s" % (self.vmcgi.returncode,
                                                tail(self.vlog)))
            try:
                r = self.client.req("POST", hook("alpha/empty"), b"",
                                    timeout=BOOT_WAIT)
                last = r
                if r.status == 204:
                    log("first answer after warm-up: 204")
                    return
                if r.status not in (502, 503, 504):
                    raise Fail("warm-up request answered %r" % r)
            except Fail as e:
                last = e
            time.sleep(1)
        raise Fail("vmcgi never answered 204 to alpha/empty: %s" % last)

    def measure_baseline(self):
        """Idle QEMU children once they stop changing: a warm pool is
        allowed, and every later check compares against this count."""
        deadline = time.monotonic() + 30
        prev, since = None, time.monotonic()
        while time.monotonic() < deadline:
            n = len(qemu_children(self.vmcgi_pid()))
            if n != prev:
                prev, since = n, time.monotonic()
            elif time.monotonic() - since >= 3:
                break
            time.sleep(0.2)
        self.baseline = prev or 0
        log("idle QEMU children of vmcgi: %d" % self.baseline)

    def start_sampler(self):
        def loop():
            while not self.stopping.wait(0.2):
                q = qemu_children(self.vmcgi_pid())
                with self.lock:
                    for pid, (start, _) in q.items():
                        self.seen[(pid, start)] = True
        self.sampler = threading.Thread(target=loop, daemon=True)
        self.sampler.start()

    def vmcgi_pid(self):
        if self.vmcgi is not None and self.vmcgi.poll() is None:
            return self.vmcgi.pid
        return None

    def ensure_vmcgi(self):
        """Restart vmcgi if an earlier test killed it."""
        if self.vmcgi_pid() is None:
            self.restarts += 1
            log("vmcgi is not running (exit %s): restarting"
                % (self.vmcgi.returncode if self.vmcgi else None))
            if os.path.exists(self.sock):
                os.unlink(self.sock)
            self.start_vmcgi()

    # -- the log -----------------------------------------------------------

    def log_mark(self):
        try:
            return os.path.getsize(self.vlog)
        except OSError:
            return 0

    def log_since(self, mark):
        with open(self.vlog, "rb") as f:
            f.seek(mark)
            return f.read().decode("utf-8", "replace")

    def wait_log(self, mark, pred, timeout=3):
        """The log lines since MARK once PRED(lines) holds (else Fail)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.log_since(mark).splitlines()
            if pred(lines):
                return lines
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    # -- QEMU checks -------------------------------------------------------

    def qemu(self):
        return qemu_children(self.vmcgi_pid())

    def busiest(self, window=0.8):
        """The QEMU child that used the most CPU over WINDOW seconds (the
        one running a spinning handler): (pid, start) or None."""
        a = self.qemu()
        time.sleep(window)
        b = self.qemu()
        best, used = None, 0
        for pid, (start, cpu) in b.items():
            if pid in a and a[pid][0] == start:
                d = (cpu - a[pid][1]) / CLK_TCK
                if d > used:
                    best, used = (pid, start), d
        if best and used >= 0.3 * window:
            return best
        return None

    def pool_full(self, timeout=60):
        """Wait until the warm pool is back to its idle size and has
        stayed there 2 s (a refill holds descriptors while it works)."""
        deadline = time.monotonic() + timeout
        since = None
        while time.monotonic() < deadline:
            if len(self.qemu()) == self.baseline:
                since = since or time.monotonic()
                if time.monotonic() - since >= 2:
                    return
            else:
                since = None
            time.sleep(0.2)
        raise Fail("the pool did not refill to %d in %ds"
                   % (self.baseline, timeout))

    def settle(self, gone=(), timeout=SETTLE):
        """Within TIMEOUT, the PIDs in GONE have exited and vmcgi has no
        more QEMU children than when idle."""
        deadline = time.monotonic() + timeout
        while True:
            q = self.qemu()
            left = [p for p, s in gone if alive(p, s)]
            if not left and len(q) <= self.baseline:
                return
            if time.monotonic() > deadline:
                raise Fail("after %.0fs: request QEMU still alive %r, "
                           "QEMU children %d (idle %d)"
                           % (timeout, left, len(q), self.baseline))
            time.sleep(0.1)

    # -- teardown ----------------------------------------------------------

    def stop_vmcgi(self, sig=signal.SIGTERM, wait=30):
        if self.vmcgi is None or self.vmcgi.poll() is not None:
            return self.vmcgi.returncode if self.vmcgi else None
        os.kill(self.vmcgi.pid, sig)
        try:
            return self.vmcgi.wait(wait)
        except subprocess.TimeoutExpired:
            log("vmcgi ignored SIGTERM for %ds: SIGKILL" % wait)
            os.kill(self.vmcgi.pid, signal.SIGKILL)
            return self.vmcgi.wait(10)

    def teardown(self):
        """Stop everything we started; return a list of problems."""
        problems = []
        if self.nginx and self.nginx.poll() is None:
            os.kill(self.nginx.pid, signal.SIGQUIT)
            try:
                self.nginx.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.nginx.pid, signal.SIGKILL)
                self.nginx.wait(5)
        try:
            rc = self.stop_vmcgi()
            if rc not in (None, 0):
                problems.append("vmcgi exited with %s on SIGTERM" % rc)
        except OSError as e:
            problems.append("stopping vmcgi: %s" % e)
        self.stopping.set()
        if self.sampler:
            self.sampler.join(2)
        deadline = time.monotonic() + SETTLE
        while True:
            with self.lock:
                left = [(p, s) for p, s in self.seen if alive(p, s)]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if left:
            problems.append("QEMU left over after vmcgi exited: pids %s"
                            % [p for p, _ in left])
            for pid, start in left:     # ours: vmcgi started them
                if alive(pid, start):
                    os.kill(pid, signal.SIGKILL)
        if self.vlogf:
            self.vlogf.close()
        if self.ns_made:
            r = subprocess.run(["ip", "netns", "del", self.ns],
                               capture_output=True, text=True)
            if r.returncode:
                problems.append("ip netns del: %s" % r.stderr.strip())
        if os.environ.get("VMCGI_E2E_KEEP"):
            log("kept %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return problems


def run(argv):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if r.returncode:
        raise Fail("%s: exit %d: %s" % (" ".join(argv), r.returncode,
                                        r.stderr.strip()))
    return r.stdout


def tail(path, n=15):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return " | ".join(lines[-n:])
    except OSError as e:
        return "(%s)" % e


# ---------------------------------------------------------------------------
# Shared checks

def check_rid(r):
    rid = r.rid
    check(rid is not None, "no X-Request-Id in %r" % r)
    check(RID_RE.match(rid), "X-Request-Id %r is not 16 hex digits" % rid)
    return rid


def check_error(r, *statuses):
    """R is one of STATUSES answered by vmcgi: small JSON naming its id."""
    check(r.status in statuses, "status %d, want %s: %r"
          % (r.status, statuses, r))
    rid = check_rid(r)
    check(len(r.body) < 1024, "error body of %d bytes" % len(r.body))
    j = r.json()
    check(isinstance(j, dict) and isinstance(j.get("error"), str),
          "no error string in %r" % j)
    check(j.get("request_id") == rid, "request_id %r != header %r"
          % (j.get("request_id"), rid))
    return j


def rid_lines(lines, rid):
    return [l for l in lines if rid in l]


ERRNO_TEXT = [os.strerror(e) for e in (
    errno.ENOENT, errno.EACCES, errno.EPERM, errno.ELOOP, errno.EXDEV,
    errno.EISDIR, errno.ENOTDIR, errno.EINVAL, errno.ENXIO)]


# ---------------------------------------------------------------------------
# Tests

TESTS = []


def test(timeout=DEFAULT_TEST_TIMEOUT, daemon=True):
    def reg(fn):
        TESTS.append((fn.__name__.replace("test_", "", 1), fn, timeout,
                      daemon))
        return fn
    return reg


# -- configuration check (vmcgi -t), no daemon needed

def vmcgi_t(env, text, name):
    path = os.path.join(env.tmp, name)
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([os.path.join(env.build, "vmcgi"), "-t", "-c", path],
                       capture_output=True, text=True, timeout=30)
    return r.returncode, (r.stdout + r.stderr)


def bad_config(env, name, edit, *words):
    """EDIT(good ini text) must be refused, naming file and WORDS."""
    text = edit(env.ini_text())
    check(text != env.ini_text(), "edit did nothing")
    rc, out = vmcgi_t(env, text, name + ".ini")
    check(rc == 1, "vmcgi -t exit %d, want 1: %s" % (rc, out.strip()))
    low = out.lower()
    check(name + ".ini" in out, "message does not name the file: %r" % out)
    for w in words:
        check(w.lower() in low, "message does not name %r: %r" % (w, out))


@test(daemon=False)
def test_config_good(env):
    rc, out = vmcgi_t(env, env.ini_text(), "good.ini")
    check(rc == 0, "test config refused (%d): %s" % (rc, out.strip()))
    r = subprocess.run([os.path.join(env.build, "vmcgi"), "-t", "-c",
                        os.path.join(ETC, "vmcgi.ini")],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, "etc/vmcgi.ini refused (%d): %s"
          % (r.returncode, (r.stdout + r.stderr).strip()))


@test(daemon=False)
def test_config_unknown_key(env):
    bad_config(env, "unknown-key",
               lambda t: t.replace("[vmcgi]\n", "[vmcgi]\ncolour = blue\n"),
               "vmcgi", "colour")


@test(daemon=False)
def test_config_bad_number(env):
    bad_config(env, "bad-number",
               lambda t: t.replace("workers = 4", "workers = many"),
               "vmcgi", "workers")


@test(daemon=False)
def test_config_bad_duration(env):
    bad_config(env, "bad-duration",
               lambda t: t.replace("[handler alpha/echo]\n",
                                   "[handler alpha/echo]\ntimeout = 3 "
                                   "fortnights\n"),
               "alpha/echo", "timeout")


@test(daemon=False)
def test_config_bad_size(env):
    bad_config(env, "bad-size",
               lambda t: t.replace("memory = 512M", "memory = 12Q"),
               "e2e", "memory")


@test(daemon=False)
def test_config_bad_mode(env):
    bad_config(env, "bad-mode",
               lambda t: t.replace("listen_mode = 0660", "listen_mode = 0999"),
               "vmcgi", "listen_mode")


@test(daemon=False)
def test_config_bad_output(env):
    bad_config(env, "bad-output",
               lambda t: t.replace("[handler alpha/echo]\n",
                                   "[handler alpha/echo]\noutput = html\n"),
               "alpha/echo", "output")


@test(daemon=False)
def test_config_comma_in_qemu_path(env):
    """A ',' in a path QEMU is given would end its option: refused."""
    bad_config(env, "comma", lambda t: t.replace(
        "state_dir = " + os.path.join(env.tmp, "state"),
        "state_dir = " + os.path.join(env.tmp, "st,ate")), "st,ate", "','")


@test(daemon=False)
def test_config_unknown_section(env):
    bad_config(env, "unknown-section",
               lambda t: t + "\n[gizmo thing]\nsize = 1\n", "gizmo")


@test(daemon=False)
def test_config_missing_tenant(env):
    bad_config(env, "missing-tenant",
               lambda t: t + "\n[handler nobody/x]\nscript = x.sh\n",
               "nobody")


@test(daemon=False)
def test_config_missing_template(env):
    bad_config(env, "missing-template",
               lambda t: t.replace("[handler alpha/echo]\n",
                                   "[handler alpha/echo]\ntemplate = nope\n"),
               "alpha/echo", "template", "nope")


# -- the daemon through nginx

@test()
def test_socket_permissions(env):
    st = os.stat(env.sock)
    check(stat.S_ISSOCK(st.st_mode), "%s is not a socket" % env.sock)
    import pwd
    import grp
    check(pwd.getpwuid(st.st_uid).pw_name == "www-data",
          "socket owner uid %d" % st.st_uid)
    check(grp.getgrgid(st.st_gid).gr_name == "www-data",
          "socket group gid %d" % st.st_gid)
    check(stat.S_IMODE(st.st_mode) == 0o660,
          "socket mode %o" % stat.S_IMODE(st.st_mode))
    users = env.nginx_workers_user()
    check(users == {33}, "nginx workers run as uids %s, not www-data" % users)


@test()
def test_routing_unknown_404(env):
    c = env.client
    for route in ("nobody/echo", "alpha/nope", "alpha/plant", "beta/env"):
        r = c.req("POST", hook(route), b"{}")
        check_error(r, 404)


@test()
def test_method_not_allowed_405(env):
    c = env.client
    r = c.req("GET", hook("alpha/echo"))
    check_error(r, 405)
    allow = r.header("allow") or ""
    check("POST" in allow, "Allow %r lacks POST" % allow)
    r = c.req("DELETE", hook("alpha/env"))
    check_error(r, 405)
    allow = {m.strip() for m in (r.header("allow") or "").split(",")}
    check({"GET", "POST", "PUT"} <= allow, "Allow %r" % r.header("allow"))
    r = c.req("GET", hook("alpha/env"))
    check(r.status == 200, "GET on a GET handler: %r" % r)
    check(r.json()["env"].get("REQUEST_METHOD") == "GET",
          "REQUEST_METHOD %r" % r.json()["env"].get("REQUEST_METHOD"))


@test()
def test_path_odd_components_via_nginx(env):
    c = env.client
    paths = ["alpha/ECHO", "ALPHA/echo", "alpha/echo.sh", "alpha/ec%20ho",
             "alpha/%FF%FE", "alpha/" + "e" * 200, "alpha/echo/extra",
             "alpha", "alpha/echo;x=1", "alpha/echo%00", "alpha/..",
             "alpha/e%25cho", "alpha/-"]
    for p in paths:
        r = c.req("POST", PREFIX + "/" + p, b"ping")
        check(r.status in (400, 404), "%s: %r" % (p, r))
        check(b"ping" not in r.body, "%s: body echoed" % p)
        if r.rid is not None:         # vmcgi's answer, not nginx's
            check_error(r, 400, 404)


@test()
def test_path_traversal_raw_fastcgi(env):
    ok = fcgi_request(hook("alpha/echo"), b"ping")
    out, how = fcgi_talk(env.sock, ok, shut=False)
    stdout, _ = fcgi_parse(out)
    check(cgi_status(stdout) == 200 and stdout.endswith(b"ping"),
          "control request: %r" % stdout[:300])
    names = [hook("alpha/../beta/plant"), hook("alpha/..%2Fbeta"),
             PREFIX + "/alpha%2Fecho", PREFIX + "/alpha%2fecho",
             hook("alpha/./echo"),
             PREFIX + "/../" + PREFIX[1:] + "/alpha/echo",
             hook("alpha/" + "e" * 65), hook("alpha/\xc3\xa9cho"),
             hook("alpha/echo\n"), hook("alpha/.."), hook("../alpha"),
             hook("alpha/%2e%2e"), hook("alpha/echo\\..\\x")]
    for name in names:
        out, how = fcgi_talk(env.sock, fcgi_request(name, b"ping"),
                             shut=False)
        stdout, _ = fcgi_parse(out)
        st = cgi_status(stdout)
        check(st in (400, 404, None),
              "SCRIPT_NAME %r: status %s: %r" % (name, st, stdout[:200]))
        check(b"ping" not in stdout and b"OUTSIDE" not in stdout,
              "SCRIPT_NAME %r reached a handler" % name)
    # libfcgi ends every parameter at its first NUL (it hands out C
    # strings), so what vmcgi routes on is the part before it: a NUL can
    # only shorten a name to one that routes by itself, and no byte after
    # it ever reaches vmcgi, let alone the file system.
    for tail in ("\0.sh", "\0/../../beta/plant"):
        out, how = fcgi_talk(env.sock, fcgi_request(hook("alpha/echo") + tail,
                                                    b"ping"))
        stdout, _ = fcgi_parse(out)
        check(cgi_status(stdout) == 200 and stdout.endswith(b"ping")
              and b"OUTSIDE" not in stdout,
              "SCRIPT_NAME echo%r: %r" % (tail, stdout[:200]))
    check(env.vmcgi_pid() is not None, "vmcgi died")


@test()
def test_route_document_uri_fallback(env):
    req = fcgi_request(None, b"ping", extra=[
        ("DOCUMENT_URI", hook("alpha/echo")), ("REQUEST_URI", "/x")])
    out, how = fcgi_talk(env.sock, req, shut=False)
    stdout, _ = fcgi_parse(out)
    check(cgi_status(stdout) == 200 and stdout.endswith(b"ping"),
          "DOCUMENT_URI only: %r" % stdout[:300])


def script_problem(env, route, name, breakit):
    """Break the script of ROUTE with BREAKIT(): 500 and a log line with
    the script's path and errno text."""
    mark = env.log_mark()
    breakit()
    r = env.client.req("POST", hook(route), b"ping")
    check_error(r, 500)
    check(b"OUTSIDE" not in r.body, "script outside the tenant ran")
    lines = env.wait_log(mark, lambda ls: any(
        name in l and any(t in l for t in ERRNO_TEXT) for l in ls))
    check(lines is not None, "no log line naming %r with errno text: %s"
          % (name, env.log_since(mark)[-600:]))


@test()
def test_script_missing_500(env):
    path = os.path.join(env.tenants, "alpha", "missing.sh")
    if os.path.exists(path):
        os.rename(path, path + ".away")
    script_problem(env, "alpha/missing", "missing.sh", lambda: None)


@test()
def test_script_unreadable_500(env):
    path = os.path.join(env.tenants, "alpha", "unread.sh")

    def breakit():
        if not os.path.isdir(path):
            os.unlink(path)
            os.mkdir(path)              # root reads any file: a directory
    script_problem(env, "alpha/unread", "unread.sh", breakit)


@test()
def test_script_symlink_escape_500(env):
    path = os.path.join(env.tenants, "alpha", "escape.sh")
    sub = os.path.join(env.tenants, "alpha", "sub")
    outside = os.path.join(env.tmp, "outside")

    def link_file():
        if not os.path.islink(path):
            os.unlink(path)
            os.symlink(os.path.join(outside, "secret.sh"), path)

    def link_dir():
        if not os.path.islink(sub):
            shutil.rmtree(sub)
            os.symlink(outside, sub)
    script_problem(env, "alpha/escape", "escape.sh", link_file)
    script_problem(env, "alpha/subesc", "run.sh", link_dir)


@test()
def test_body_too_large_413(env):
    mark = env.log_mark()
    before = env.qemu()
    r = env.client.req("POST", hook("alpha/small"), b"x" * 4096)
    check_error(r, 413)
    check(r.elapsed < 2, "413 took %.1fs" % r.elapsed)
    lines = env.wait_log(mark, lambda ls: rid_lines(ls, r.rid))
    check(lines is not None, "no log line for request %s" % r.rid)
    # "restore_ms=0"-style fields say nothing happened: leave them out.
    vm = [l for l in rid_lines(lines, r.rid) if re.search(
        r"qemu|restor|clone|snapshot|spawn|vm[ _-]?(start|take|boot)|"
        r"pool[ _-]?take|launch", re.sub(r"\b\w+_ms=\S+", "", l), re.I)]
    check(not vm, "a VM was started for the 413: %r" % vm)
    after = env.qemu()
    check(len(after) <= max(len(before), env.baseline),
          "QEMU children went from %d to %d" % (len(before), len(after)))
    r = env.client.req("POST", hook("alpha/small"), b"y" * 1000)
    check(r.status == 200 and r.body == b"y" * 1000,
          "body under max_body: %r" % r)


@test()
def test_body_too_large_chunked_413(env):
    r = env.client.raw("POST", hook("alpha/small"),
                       chunks=[b"z" * 700, b"z" * 700, b"z" * 700])
    check_error(r, 413)


@test()
def test_chunked_body_byte_for_byte(env):
    body = os.urandom(200000) + bytes(range(256)) * 8 + b"\r\n0\r\n\r\n"
    sizes = [1, 2, 3, 4093, 17, 65536, 100000]
    chunks, pos = [], 0
    for n in sizes:
        chunks.append(body[pos:pos + n])
        pos += n
    chunks.append(body[pos:])
    chunks = [c for c in chunks if c]
    r = env.client.raw("POST", hook("alpha/echo"), chunks=chunks,
                       chunk_pause=0.05)
    check(r.status == 200, "status %r" % r)
    check(r.complete, "response incomplete")
    check(r.body == body, "body differs: %d bytes back of %d"
          % (len(r.body), len(body)))
    r = env.client.raw("POST", hook("alpha/env"), chunks=[b"abc", b"defg"])
    check(r.status == 200, "env: %r" % r)
    j = r.json()
    cl = j["env"].get("CONTENT_LENGTH")
    check(cl in (None, "", "7"), "CONTENT_LENGTH %r for a chunked body" % cl)
    check(j["body_len"] == 7, "handler read %d bytes" % j["body_len"])


@test()
def test_request_id_everywhere(env):
    c = env.client
    rs = [c.req("POST", hook("alpha/echo"), b"a"),
          c.req("POST", hook("alpha/empty"), b""),
          c.req("POST", hook("alpha/nope"), b""),
          c.req("GET", hook("alpha/echo")),
          c.req("POST", hook("alpha/small"), b"b" * 2048),
          c.req("POST", hook("alpha/crash"), b""),
          c.req("POST", hook("alpha/cgi"), b"")]
    want = [200, 204, 404, 405, 413, 502, 201]
    got = [r.status for r in rs]
    check(got == want, "statuses %s, want %s" % (got, want))
    rids = [check_rid(r) for r in rs]
    check(len(set(rids)) == len(rids), "request ids repeat: %s" % rids)
    for r in rs:
        if r.status >= 400:
            check_error(r, r.status)


@test()
def test_env_of_handler(env):
    big = "v" * 4000
    r = env.client.req("POST", hook("alpha/env") + "?x=1&y=two%20three",
                       b'{"k": 1}', {"Content-Type": "application/json",
                                     "X-GitHub-Event": "push",
                                     "X-Big": big})
    check(r.status == 200, "status %r" % r)
    check(r.header("content-type", "").startswith("application/json"),
          "Content-Type %r" % r.header("content-type"))
    j = r.json()
    e = j["env"]
    want = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": "8", "QUERY_STRING": "x=1&y=two%20three",
            "HTTP_X_GITHUB_EVENT": "push", "HTTP_X_BIG": big,
            "VMCGI_TENANT": "alpha", "VMCGI_HANDLER": "env",
            "VMCGI_REQUEST_ID": r.rid, "GATEWAY_INTERFACE": "CGI/1.1",
            "SCRIPT_NAME": hook("alpha/env"),
            "REQUEST_URI": hook("alpha/env") + "?x=1&y=two%20three"}
    for k, v in want.items():
        check(e.get(k) == v, "%s=%r, want %r" % (k, (e.get(k) or "")[:80],
                                                 v[:80] if v else v))
    for k in ("SCRIPT_FILENAME", "DOCUMENT_ROOT"):
        check(k not in e, "%s=%r reached the handler" % (k, e.get(k)))
    check("PATH" in e, "no PATH")
    for k, v in e.items():
        for host in (env.tmp, REPO, env.build, "/usr/share/nginx"):
            check(host not in v, "%s=%r names a host path" % (k, v))
    allowed = {"PATH", "PWD", "HOME", "LANG", "LC_ALL", "TZ", "USER",
               "LOGNAME", "SHELL", "TERM", "REQUEST_METHOD", "CONTENT_TYPE",
               "CONTENT_LENGTH", "QUERY_STRING", "GATEWAY_INTERFACE",
               "SCRIPT_NAME", "REQUEST_URI", "DOCUMENT_URI", "PATH_INFO",
               "SERVER_PROTOCOL", "SERVER_SOFTWARE", "SERVER_NAME",
               "SERVER_PORT", "SERVER_ADDR", "REMOTE_ADDR", "REMOTE_PORT",
               "REMOTE_USER", "REQUEST_SCHEME", "HTTPS", "AUTH_TYPE",
               "REMOTE_HOST", "REMOTE_IDENT", "REDIRECT_STATUS"}
    odd = [k for k in e if k not in allowed and
           not k.startswith(("HTTP_", "VMCGI_"))]
    check(not odd, "unexpected variables: %s" % odd)
    check(j["uid"] == 1000, "handler uid %r" % j["uid"])
    check(j["cwd"] == "/tmp", "handler cwd %r" % j["cwd"])
    check(j["body_sha256"] == hashlib.sha256(b'{"k": 1}').hexdigest(),
          "body digest differs")


@test()
def test_output_body_streams(env):
    r = env.client.raw("POST", hook("alpha/pss"), body=b"")
    check(r.status == 200, "status %r" % r)
    check(r.complete, "response incomplete")
    check(r.body == b"first line\nsecond line\n", "body %r" % r.body)
    check(r.header("content-type") == "text/plain; charset=utf-8",
          "Content-Type %r" % r.header("content-type"))
    check_rid(r)
    t1 = env.client.arrival(r, b"first line")
    t2 = env.client.arrival(r, b"second line")
    check(t1 is not None and t2 is not None, "lines not seen")
    check(t2 - t1 >= 1.5, "first line came %.2fs before the second: "
          "held back, not streamed" % (t2 - t1))


@test()
def test_output_empty_204(env):
    r = env.client.req("POST", hook("alpha/empty"), b"ignored")
    check(r.status == 204, "status %r" % r)
    check(r.body == b"", "body %r" % r.body)
    check_rid(r)


@test()
def test_exit_nonzero_before_output_502(env):
    for route in ("alpha/crash", "alpha/segv"):
        r = env.client.req("POST", hook(route), b"")
        check_error(r, 502)
        check(b"failing on purpose" not in r.body, "stderr in the body")
    env.settle()


@test(timeout=60)
def test_timeout_before_output_504(env):
    box = {}

    def go():
        try:
            box["r"] = env.client.req("POST", hook("alpha/loop"), b"",
                                      timeout=40)
        except Fail as e:
            box["e"] = e
    t = threading.Thread(target=go, daemon=True)
    t.start()
    time.sleep(1.5)
    busy = env.busiest(1.0)
    t.join(45)
    check("e" not in box, str(box.get("e")))
    check("r" in box, "no answer")
    r = box["r"]
    check_error(r, 504)
    check(3.5 <= r.elapsed <= 15, "504 after %.1fs (timeout 4s)" % r.elapsed)
    check(busy is not None, "no busy QEMU child while the handler spun")
    env.settle(gone=[busy])


@test()
def test_failure_after_output_aborts(env):
    for route in ("alpha/latecrash", "alpha/latehang"):
        r = env.client.raw("POST", hook(route), body=b"", timeout=30)
        check(b"partial output" in r.body, "%s: no partial output: %r"
              % (route, r))
        check(not r.complete, "%s: response completed cleanly (status %d)"
              % (route, r.status))
    env.settle()


@test()
def test_output_cgi(env):
    r = env.client.req("POST", hook("alpha/cgi"), b"")
    check(r.status == 201, "status %r" % r)
    check(r.header("content-type") == "application/x-e2e",
          "Content-Type %r" % r.header("content-type"))
    check(r.header("x-foo") == "bar", "X-Foo %r" % r.header("x-foo"))
    check(r.body == b"created\n", "body %r" % r.body)
    check_rid(r)


@test()
def test_output_cgi_malformed_502(env):
    for variant in ("nocolon", "noend", "badstatus"):
        r = env.client.req("POST", hook("alpha/cgibad") + "?" + variant, b"")
        check(r.status == 502, "%s: %r" % (variant, r))
        check_error(r, 502)


@test()
def test_output_cgi_refused_headers(env):
    """Headers that would make nginx act for the handler (an internal
    redirect to another tenant, a file sent from the host, a local
    redirect) are refused with 502; nothing of beta runs."""
    for variant in ("redirect", "sendfile", "local"):
        mark = env.log_mark()
        r = env.client.req("POST", hook("alpha/cgiaccel") + "?" + variant,
                           b"")
        check_error(r, 502)
        lines = env.log_since(mark).splitlines()
        check(not any("beta/echo" in l for l in lines),
              "%s: beta/echo ran: %r" % (variant, lines[-3:]))


@test()
def test_output_cgi_framing_ignored(env):
    """A handler's Content-Length or a 204 cannot turn a later failure
    into a clean success: framing headers are dropped, bodiless statuses
    wait for the exit."""
    r = env.client.raw("POST", hook("alpha/cgiframing") + "?length",
                       body=b"", timeout=30)
    check(r.header("content-length") is None,
          "handler's Content-Length reached the client: %r" % r)
    check(not r.complete, "failed handler answered cleanly: %r" % r)
    r = env.client.req("POST", hook("alpha/cgiframing") + "?nocontent", b"")
    check_error(r, 502)
    r = env.client.req("POST", hook("alpha/cgiframing") + "?nocontent-ok",
                       b"")
    check(r.status == 204 and r.header("x-done") == "yes", "204: %r" % r)
    check_rid(r)


@test()
def test_output_cgi_big_header_block(env):
    r = env.client.req("POST", hook("alpha/cgibighead"), b"")
    check(r.status == 201 and r.body == b"body\n", "%r" % r)
    check(r.header("x-header-29") == "0123456789012345678901234567890123456789"
          "abcd", "last header: %r" % r.header("x-header-29"))


@test()
def test_odd_param_names_skipped(env):
    """A parameter whose name no shell accepts (nginx sends such with
    ignore_invalid_headers off) is left out; the event still runs."""
    req = fcgi_request(hook("alpha/env"), b"", extra=[
        ("HTTP_X.Y", "1"), ("HTTP_X\xc3\x84", "2"), ("HTTP_FINE", "3")])
    out, how = fcgi_talk(env.sock, req, timeout=30)
    stdout, _ = fcgi_parse(out)
    check(cgi_status(stdout) == 200, "status: %r" % stdout[:300])
    body = stdout.split(b"\r\n\r\n", 1)[1]
    e = json.loads(body)["env"]
    check(e.get("HTTP_FINE") == "3", "HTTP_FINE missing: %r" % sorted(e))
    check(not any("." in k or not k.isascii() for k in e),
              "odd names reached the handler: %r" % sorted(e))


@test(timeout=90)
def test_slow_reader_bounded(env):
    """A client that stops reading cannot keep a VM past the handler's
    timeout: vmcgi's writes give up at its deadline (3 s + 2 s)."""
    mark = env.log_mark()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(env.sock)
    t0 = time.monotonic()
    try:
        s.sendall(fcgi_request(hook("alpha/flood"), b""))
        # vmcgi logs a request only once its VM is killed and reaped
        lines = env.wait_log(mark, lambda ls: any(
            "alpha/flood" in l and "status=" in l for l in ls), 20)
        took = time.monotonic() - t0
    finally:
        s.close()
    check(lines, "no end of the request in the log after 20 s")
    end = [l for l in lines if "alpha/flood" in l and "status=" in l][0]
    check("send timed out" in end, "log does not say why: %r" % end)
    check(took < 9, "VM lived %.1f s, past timeout 3 s + grace 2 s" % took)
    env.settle()


@test(timeout=90)
def test_stalled_connections_and_overflow(env):
    """Connections that stop mid-record hold workers only until
    read_timeout (5 s here); while every worker is held, a new request
    gets 503 with Retry-After at once, and afterwards all is served."""
    held = []
    try:
        for _ in range(4):              # the e2e vmcgi has 4 workers
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(env.sock)
            c.sendall(fcgi_begin()[:5])
            held.append(c)
        time.sleep(0.5)
        t0 = time.monotonic()
        r = env.client.req("POST", hook("alpha/echo"), b"x", timeout=30)
        took = time.monotonic() - t0
        check(r.status == 503 and took < 3, "while held: %r after %.1f s"
              % (r, took))
        check(r.header("retry-after") == "5", "Retry-After %r" %
              r.header("retry-after"))
        check_error(r, 503)
        time.sleep(6)                   # read_timeout frees the workers
        r = env.client.req("POST", hook("alpha/echo"), b"after", timeout=30)
        check(r.status == 200 and r.body == b"after", "after: %r" % r)
    finally:
        for c in held:
            c.close()


@test()
def test_big_output(env):
    r = env.client.req("POST", hook("alpha/big"), b"", timeout=90)
    check(r.status == 200, "status %r" % r)
    want = bytes(range(256)) * 256 * 48
    check(len(r.body) == len(want), "%d bytes, want %d"
          % (len(r.body), len(want)))
    check(r.body == want, "bytes differ")


@test()
def test_write_before_read(env):
    body = os.urandom(1 << 20)
    r = env.client.req("POST", hook("alpha/wbr"), body, timeout=90)
    check(r.status == 200, "status %r" % r)
    check(r.body[:1 << 20] == b"w" * (1 << 20), "head of output differs")
    tail_ = r.body[1 << 20:].decode(errors="replace").split()
    check(tail_ == [str(len(body)), hashlib.sha256(body).hexdigest()],
          "handler saw %r" % tail_)


@test()
def test_stderr_to_log_only(env):
    mark = env.log_mark()
    r = env.client.req("POST", hook("alpha/stderr"), b"")
    check(r.status == 200, "status %r" % r)
    check(r.body == b"out 1\nout 2\n", "body %r" % r.body[:200])
    rid = r.rid
    lines = env.wait_log(mark, lambda ls: any(
        "E2E-STDERR-START" in l for l in rid_lines(ls, rid)))
    check(lines is not None, "stderr not logged under %s: %s"
          % (rid, env.log_since(mark)[-400:]))
    text = env.log_since(mark)
    check("E2E-STDERR-END" not in text, "stderr past stderr_limit logged")
    check(text.count("x") <= STDERR_LIMIT + 2048,
          "%d x's logged, limit %d" % (text.count("x"), STDERR_LIMIT))


@test()
def test_request_log_line(env):
    for route, status, code in (("alpha/echo", 200, 0),
                                ("alpha/crash", 502, 3)):
        mark = env.log_mark()
        r = env.client.req("POST", hook(route), b"hi")
        check(r.status == status, "%s: %r" % (route, r))
        tenant, name = route.split("/")

        def good(l):
            return (r.rid in l and tenant in l and name in l and
                    re.search(r"\b%d\b" % status, l) and
                    re.search(r"exit[a-z_ ]*[=:]?\s*%d\b" % code, l,
                              re.I) and
                    re.search(r"\d(\.\d+)?\s?(ms|s|us|µs)\b|(time|elapsed|"
                              r"took|duration)[=: ]+\d", l))
        lines = env.wait_log(mark, lambda ls: any(good(l) for l in ls))
        check(lines is not None, "%s: no log line with id, %s, status %d, "
              "exit %d and time: %r" % (route, route, status, code,
                                        rid_lines(env.log_since(mark)
                                                  .splitlines(), r.rid)))


@test()
def test_guest_network_isolated(env):
    r = env.client.req("POST", hook("alpha/net"), b"")
    check(r.status == 200, "status %r" % r)
    j = r.json()
    check(j["ifaces"] == ["lo"], "guest interfaces %s" % j["ifaces"])
    check(j["errno"] == errno.ENETUNREACH,
          "connect: %r (errno %s), want Network is unreachable"
          % (j["connect"], j["errno"]))
    check(j["connect_ms"] < 1000, "connect took %d ms" % j["connect_ms"])
    check(j["dns_failed"], "DNS resolved: %s" % j["dns"])


@test(timeout=180)
def test_tenant_isolation(env):
    payload = "E2E-BETA-PAYLOAD-" + os.urandom(8).hex()
    r = env.client.req("POST", hook("beta/plant"), payload.encode())
    check(r.status == 200 and b"planted" in r.body, "plant: %r" % r)
    control = "E2E-ALPHA-CONTROL-" + os.urandom(8).hex()
    req = {"needles_hex": [BETA_SCRIPT_MARKER.encode().hex(),
                           payload.encode().hex()],
           "control_hex": control.encode().hex()}
    r = env.client.req("POST", hook("alpha/search"),
                       json.dumps(req).encode(), timeout=150)
    check(r.status == 200, "search: %r" % r)
    j = r.json()
    check(j["control"], "search did not find its own control file "
          "(searched %d files)" % j["files"])
    check(j["files"] > 50, "only %d files searched" % j["files"])
    leaks = {k: v for k, v in j["found"].items() if v}
    check(not leaks, "tenant beta's data seen by alpha: %s" % leaks)


@test()
def test_no_state_between_events(env):
    t1, t2 = os.urandom(6).hex(), os.urandom(6).hex()
    r1 = env.client.req("POST", hook("alpha/writer"), t1.encode())
    check(r1.status == 200, "first: %r" % r1)
    j1 = r1.json()
    check(any(p.startswith("/tmp/") for p in j1["wrote"]),
          "first event could not write /tmp: %s" % j1)
    r2 = env.client.req("POST", hook("alpha/writer"), t2.encode())
    check(r2.status == 200, "second: %r" % r2)
    j2 = r2.json()
    check(not j2["found"], "second event found %s" % j2["found"])


@test()
def test_fresh_vm_per_event(env):
    seen = []
    for _ in range(2):
        r = env.client.req("POST", hook("alpha/rand"), b"")
        check(r.status == 200, "status %r" % r)
        f = dict(l.split(" ", 1) for l in r.body.decode().splitlines())
        check(len(f.get("random", "")) == 64, "random %r" % f)
        skew = int(f["time"]) - time.time()
        check(abs(skew) <= 5, "guest clock off by %.0fs" % skew)
        seen.append(f["random"])
    check(seen[0] != seen[1], "two events read the same random bytes")


@test(timeout=60)
def test_client_abort_kills_vm(env):
    busy = {}

    def stop(raw):
        if b"line 3" in raw and "pid" not in busy:
            busy["nices"] = [thread_nices(p) for p in env.qemu()]
            busy["pid"] = env.busiest(0.8)
            return True
        return False
    r = env.client.raw("POST", hook("alpha/stream"), body=b"", timeout=30,
                       stop=stop)
    check(b"line 1" in r.body, "no streamed line: %r" % r)
    check(busy.get("pid"), "no busy QEMU child while the handler streamed")
    # The event's VM runs at normal priority; pooled ones wait at 10.
    check({0} in busy["nices"], "no QEMU at nice 0 while the handler "
          "streamed: %r" % busy["nices"])
    env.settle(gone=[busy["pid"]])
    check(env.vmcgi_pid() is not None, "vmcgi died")
    r = env.client.req("POST", hook("alpha/echo"), b"still here")
    check(r.status == 200 and r.body == b"still here", "next: %r" % r)


def abuse(env, route, statuses, why, timeout=120):
    """Runs the abusive handler ROUTE through nginx: the answer is one of
    STATUSES, vmcgi's log line for it contains WHY, and afterwards an
    event of the same tenant and one of another succeed, vmcgi is alive
    and no QEMU is left beyond the pool.  Returns the response."""
    mark = env.log_mark()
    r = env.client.req("POST", hook("mallory/" + route), b"",
                       timeout=timeout)
    check(r.status in statuses, "status %d, want %s: %r"
          % (r.status, statuses, r))
    rid = check_rid(r)
    lines = env.wait_log(mark, lambda ls: any(
        rid in l and "status=" in l for l in ls), 10)
    check(lines, "no log line for %s" % rid)
    end = [l for l in lines if rid in l and "status=" in l][0]
    check(why in end, "log line does not say %r: %r" % (why, end))
    for other in ("mallory/echo", "beta/echo"):
        n = env.client.req("POST", hook(other), b"after " + route.encode())
        check(n.status == 200 and n.body == b"after " + route.encode(),
              "%s after %s: %r" % (other, route, n))
    check(env.vmcgi_pid() is not None, "vmcgi died")
    env.settle()
    return r


@test(timeout=120)
def test_abuse_fork_bomb(env):
    """A fork bomb meets the guest's pids limit; the timeout ends it."""
    abuse(env, "forkbomb", (504,), "exit=timeout")


@test(timeout=180)
def test_abuse_memory_balloon(env):
    """Memory past the guest's limit for handlers: the kernel kills the
    handler, the answer is 502, the agent and vmcgi carry on."""
    r = abuse(env, "balloon", (502,), "exit=signal 9")
    check_error(r, 502)


@test(timeout=180)
def test_abuse_fill_tmpfs(env):
    """Filling /tmp stops at the file size limit or the tmpfs size."""
    r = abuse(env, "fill", (502,), "exit=3")
    check_error(r, 502)


@test(timeout=240)
def test_abuse_50mb_out_and_err(env):
    """50 MB on stdout and 50 MB on stderr at once: the body arrives
    whole, the log holds only stderr_limit of stderr."""
    mark = env.log_mark()
    r = abuse(env, "outerr", (200,), "exit=0", timeout=200)
    check(len(r.body) == 50 << 20 and r.body == b"o" * (50 << 20),
          "body of %d bytes" % len(r.body))
    log_ = env.log_since(mark)
    dropped = re.findall(r"stderr: (\d+) more bytes dropped", log_)
    check(dropped and int(dropped[0]) >= (50 << 20) - 2 * STDERR_LIMIT,
          "stderr not cut in the log: %r" % dropped)
    check(len(log_) < 64 * 1024, "log grew by %d bytes" % len(log_))
    rss, _ = proc_mem_fds(env.vmcgi_pid())
    check(rss < 64 * 1024, "vmcgi RSS %d kB after 100 MB of output" % rss)


@test(timeout=120)
def test_abuse_closed_stdout(env):
    """A handler that closes stdout and stderr and keeps running is ended
    by its timeout: 504, not a success."""
    r = abuse(env, "closeout", (504,), "exit=timeout")
    check_error(r, 504)


@test()
def test_abuse_kill_parent_reboot(env):
    """Killing the agent, rebooting, mounting, reading PID 1: refused;
    the handler runs under seccomp and no_new_privs, 1024 files, 256
    processes, in the sandbox cgroup with its pids and memory limits."""
    r = abuse(env, "killparent", (200,), "exit=0")
    want = (b"kill 1: refused\nkill parent: refused\nreboot: refused\n"
            b"mount: refused\nenviron of 1: refused\n")
    check(r.body.startswith(want), "body %r" % r.body)
    check(re.search(rb"^Seccomp:\s+2$", r.body, re.M) and
          re.search(rb"^NoNewPrivs:\s+1$", r.body, re.M),
          "no seccomp filter: %r" % r.body)
    m = re.search(rb"\n0::/sandbox/run\n(\d+)\n(\d+)\n1024\n"
                  rb"Max processes +256 +256 +processes *\nalive\n$", r.body)
    check(m, "cgroup, limits: %r" % r.body)
    pids, mem = int(m.group(1)), int(m.group(2))
    check(pids == 256 and 0 < mem <= 400 << 20,
          "pids.max %d, memory.max %d (guest 512M)" % (pids, mem))


def proc_mem_fds(pid):
    """(VmRSS in kB, open descriptors) of PID, each the least of samples
    over two seconds: the pool's refiller holds a few descriptors for a
    moment while it restores a clone."""
    rss, fds = [], []
    for _ in range(10):
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss.append(int(line.split()[1]))
        fds.append(len(os.listdir("/proc/%d/fd" % pid)))
        time.sleep(0.2)
    return min(rss), min(fds)


def soak_one(env, i, retries=None):
    """One event of the soak mix; returns what it was, for the tally.  A
    503 with Retry-After is retried as a sender would (the soak's four
    clients and the aborted streams still running can briefly hold all
    four workers): it must come with Retry-After, be rare (the caller
    counts them in RETRIES) and the retry must succeed."""
    for attempt in range(5):
        kind, ok, r = soak_try(env, i)
        if (r is None or r.status != 503 or r.header("retry-after") is None
                or retries is None):
            break
        retries.append(i)
        time.sleep(0.5)
    return kind, ok, r


def soak_try(env, i):
    kind = ("echo", "echo", "echo", "echo", "echo", "echo", "crash",
            "abort", "big", "echo", "loop", "echo", "echo", "abort",
            "echo", "crash", "echo", "echo", "echo", "echo")[i % 20]
    if kind == "echo":
        r = env.client.req("POST", hook("alpha/echo"), b"soak %d" % i)
        ok = r.status == 200 and r.body == b"soak %d" % i
    elif kind == "crash":
        r = env.client.req("POST", hook("alpha/crash"), b"")
        ok = r.status == 502
    elif kind == "big":
        r = env.client.req("POST", hook("alpha/small"), b"b" * 2048)
        ok = r.status == 413
    elif kind == "loop":
        r = env.client.req("POST", hook("alpha/quickloop"), b"")
        ok = r.status == 504
    else:
        r = env.client.raw("POST", hook("alpha/stream"), body=b"",
                           timeout=30, stop=lambda raw: b"line 1" in raw)
        ok = b"line 1" in r.body
    return kind, ok, r


@test()
def test_qemu_sandboxed_without_network(env):
    """Every QEMU of vmcgi runs under two seccomp filters (QEMU's
    -sandbox and vmcgi's own), has no network device at all, runs as a
    uid of its own with no capability, alone in a PID namespace, sees a
    file system of its own (check_jail) and holds nothing it could write
    for later clones (check_sealed)."""
    # Only idle clones: one being started has not installed its filter.
    env.pool_full()
    q = env.qemu()
    check(q, "no QEMU child to look at (the warm pool is empty?)")
    looked = 0
    for pid in q:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                args = f.read().split(b"\0")
            with open("/proc/%d/status" % pid) as f:
                status = f.read()
        except OSError:
            continue
        # The VM of the test before may still be being torn down: an
        # exiting process shows no command line.
        if args == [b""]:
            continue
        looked += 1
        # Idle in the pool or being loaded: background priority.
        nices = thread_nices(pid)
        check(nices in (set(), {10}), "pooled QEMU %d at nice %r"
              % (pid, nices))
        mode = [l.split()[1] for l in status.splitlines()
                if l.startswith("Seccomp:")]
        check(mode == ["2"], "QEMU %d seccomp mode %r" % (pid, mode))
        # vmcgi's own filter under QEMU's -sandbox.
        filters = [int(l.split()[1]) for l in status.splitlines()
                   if l.startswith("Seccomp_filters:")]
        check(filters and filters[0] >= 2, "QEMU %d has %r seccomp "
              "filters, want ours and its own" % (pid, filters))
        check(b"-nic" in args and args[args.index(b"-nic") + 1] == b"none",
              "QEMU %d without -nic none" % pid)
        check(not any(a.startswith(b"-netdev") or b"user," in a
                      for a in args), "QEMU %d has a netdev" % pid)
        check(any(b"mem-merge=off" in a for a in args),
              "QEMU %d may merge pages with other VMs (KSM)" % pid)
        with open("/proc/%d/limits" % pid) as f:
            limits = {c[0]: c[1:3] for c in (re.split(r"\s{2,}", l.strip())
                                            for l in f) if len(c) >= 3}
        # No core; as its uid is its own, NPROC bounds its threads.
        for name, want in (("Max core file size", "0"),
                           ("Max file size", "0"),
                           ("Max open files", "256"),
                           ("Max processes", "128")):
            check(limits.get(name) == [want, want], "QEMU %d: %s %r"
                  % (pid, name, limits.get(name)))
        with open("/proc/%d/cgroup" % pid) as f:
            groups = f.read()
        check(re.search(r"memory:.*/vmcgi-%d/vm-\d+$" % env.vmcgi_pid(),
                        groups, re.M),
              "QEMU %d is not in a memory cgroup of its own: %r"
              % (pid, groups))
        # One vCPU and QEMU's main loop: two CPUs' worth per period.
        if os.path.isdir("/sys/fs/cgroup/cpu"):
            m = re.search(r"^\d+:cpu:(.*/vmcgi-%d/vm-\d+)$"
                          % env.vmcgi_pid(), groups, re.M)
            check(m, "QEMU %d is not in a cpu cgroup of its own: %r"
                  % (pid, groups))
            with open("/sys/fs/cgroup/cpu%s/cpu.cfs_quota_us"
                      % m.group(1)) as f:
                quota = f.read().strip()
            check(quota == "200000", "QEMU %d may use %s us of CPU per "
                  "100 ms" % (pid, quota))
        for ns in ("net", "ipc", "uts"):
            mine = os.readlink("/proc/%d/ns/%s" % (env.vmcgi_pid(), ns))
            its = os.readlink("/proc/%d/ns/%s" % (pid, ns))
            check(mine != its, "QEMU %d shares vmcgi's %s namespace"
                  % (pid, ns))
    check(looked > 0, "every QEMU child was exiting: %r" % q)
    uids = [u for u in (check_uid(env, pid) for pid in q) if u is not None]
    check(uids, "no QEMU's uid could be looked at: %r" % q)
    check(len(set(uids)) == len(uids), "two live QEMUs share a uid: %r"
          % uids)
    sealed = sum(check_sealed(env, pid) for pid in q)
    check(sealed > 0, "no QEMU's descriptors could be looked at: %r" % q)
    jailed = sum(check_jail(env, pid) for pid in q)
    check(jailed > 0, "no QEMU's jail could be looked at: %r" % q)


def check_uid(env, pid):
    """A clone's QEMU runs as a uid and gid of the configured range (this
    run's block, E2E_UIDS), with no capability and no supplementary
    group, as PID 1 of a PID namespace that is not vmcgi's, with an empty
    environment.  Its uid, or None if it exited meanwhile."""
    try:
        with open("/proc/%d/status" % pid) as f:
            st = dict(l.split(":", 1) for l in f.read().splitlines()
                      if ":" in l)
        pidns = os.readlink("/proc/%d/ns/pid" % pid)
    except OSError:
        return None
    uids = set(int(x) for x in st["Uid"].split())
    gids = set(int(x) for x in st["Gid"].split())
    check(len(uids) == 1 and E2E_UIDS <= min(uids) < E2E_UIDS + 1024,
          "QEMU %d runs as uids %r, not one of this run's vm_uids"
          % (pid, uids))
    check(gids == uids, "QEMU %d has gids %r, uids %r" % (pid, gids, uids))
    check(st["Groups"].split() == [], "QEMU %d keeps groups %r"
          % (pid, st["Groups"]))
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        check(int(st[cap], 16) == 0, "QEMU %d %s %s" % (pid, cap, st[cap]))
    check(st["NoNewPrivs"].strip() == "1", "QEMU %d may gain privileges"
          % pid)
    check(st["NSpid"].split() == [str(pid), "1"],
          "QEMU %d is not PID 1 of a namespace below vmcgi's: NSpid %r"
          % (pid, st["NSpid"]))
    check(pidns != os.readlink("/proc/%d/ns/pid" % env.vmcgi_pid()),
          "QEMU %d shares vmcgi's PID namespace" % pid)
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            environ = f.read()
    except OSError:
        return None
    check(environ == b"", "QEMU %d inherits an environment: %r"
          % (pid, environ[:200]))
    return min(uids)


F_GET_SEALS = 1034
SEALS_ALL = 0xf             # F_SEAL_SEAL, SHRINK, GROW, WRITE


def check_sealed(env, pid):
    """A clone's RAM, kernel and initrd are memfds sealed against writes
    (a QEMU taken over by its guest cannot change what later clones of
    any tenant start from), and it holds no file of the state directory
    open for writing."""
    fd_dir = "/proc/%d/fd" % pid
    try:
        links = {int(n): os.readlink(os.path.join(fd_dir, n))
                 for n in os.listdir(fd_dir)}
    except OSError:
        return False
    for n, what in ((6, "ram"), (7, "kernel"), (8, "initrd")):
        check(links.get(n, "").startswith("/memfd:vmcgi-e2e-" + what),
              "QEMU %d fd %d is %r, want its sealed %s" % (pid, n,
                                                          links.get(n), what))
        try:
            fd = os.open(os.path.join(fd_dir, str(n)), os.O_RDWR)
        except OSError:
            return False
        try:
            seals = fcntl.fcntl(fd, F_GET_SEALS)
            check(seals & SEALS_ALL == SEALS_ALL, "QEMU %d's %s has seals "
                  "%#x" % (pid, what, seals))
            try:
                os.pwrite(fd, b"x", 0)
                check(False, "wrote into QEMU %d's %s" % (pid, what))
            except PermissionError:
                pass
        finally:
            os.close(fd)
    state = os.path.join(env.tmp, "state")
    for n, target in links.items():
        if not target.startswith(state):
            continue
        try:
            with open("/proc/%d/fdinfo/%d" % (pid, n)) as f:
                flags = int(f.read().split("flags:")[1].split()[0], 8)
        except OSError:
            return False
        check(flags & os.O_ACCMODE == os.O_RDONLY, "QEMU %d holds %s "
              "open for writing" % (pid, target))
    return True


def check_jail(env, pid):
    """A clone's QEMU sees only /usr, the loader's cache, three devices and
    its own /proc, on a read-only root: no tenant directory, no state
    file, no /sys."""
    root = "/proc/%d/root" % pid
    try:
        seen = set()
        for d, dirs, files in os.walk(root):
            rel = os.path.relpath(d, root)
            if rel in ("usr", "proc"):
                dirs[:] = []
                continue
            for f in files + [x for x in dirs
                              if os.path.islink(os.path.join(d, x))]:
                seen.add(os.path.normpath(os.path.join("/", rel, f)))
        with open("/proc/%d/mountinfo" % pid) as f:
            mounts = [l.split() for l in f]
    except OSError:
        return False                    # it exited meanwhile
    if not seen:
        return False
    want = {"/bin", "/sbin", "/lib", "/lib64", "/dev/null", "/dev/urandom",
            "/etc/ld.so.cache"}
    check(seen == want, "QEMU %d sees %r" % (pid, sorted(seen ^ want)))
    procs = [m for m in mounts if m[4] == "/proc"]
    check(len(procs) == 1 and "subset=pid" in procs[0][-1],
          "QEMU %d's /proc: %r" % (pid, procs))
    check(not os.path.exists(root + env.tenants),
          "QEMU %d sees the tenants' directory" % pid)
    top = [m for m in mounts if m[4] == "/"]
    check(top and "ro" in top[0][5].split(","),
          "QEMU %d's root is not read-only: %r" % (pid, top))
    return True


@test()
def test_agent_unreachable_from_handler(env):
    """The handler can neither open the agent's channel device nor signal
    the agent (PID 1)."""
    r = env.client.req("POST", hook("alpha/agentprobe"), b"")
    check(r.status == 200, "%r" % r)
    check(b"denied /dev/vport" in r.body and b"OPENED" not in r.body,
          "channel device: %r" % r.body)
    check(b"denied pid1" in r.body, "PID 1: %r" % r.body)


@test()
def test_python_from_warm_interpreter(env):
    """Through nginx (whose fastcgi_params and our snippet both send
    SCRIPT_NAME), a python3 handler still runs from the guest's warm
    interpreter: vmcgi passes each variable once, and the guest only
    takes that path for a clean environment."""
    r = env.client.req("POST", hook("alpha/preloaded"), b"")
    check(r.status == 200, "%r" % r)
    check(r.body.startswith(b"preloaded\n"), "cold python: %r" % r.body)


def event_logged(env, route, body):
    """Sends one event; returns the response and vmcgi's log lines for
    it once its request line (status=) is written."""
    mark = env.log_mark()
    r = env.client.req("POST", hook(route), body)
    lines = env.wait_log(mark, lambda ls: any(
        r.rid in l and "status=" in l for l in ls), timeout=10) or []
    return r, rid_lines(lines, r.rid)


def code_state(lines):
    """The code= word of a request's log line, or None."""
    for l in lines:
        m = re.search(r"status=.* code=([a-z-]+)", l)
        if m:
            return m.group(1)
    return None


@test(timeout=180)
def test_python_code_kept_between_events(env):
    """A python3 handler's script is compiled by its first event's guest
    and kept by vmcgi: the next event with the very same script runs
    from that code and answers the same (log: code=kept, then
    code=given).  A changed script is compiled afresh.  Another tenant's
    handler with the same bytes never gets it.  A script python3 warns
    about is never kept, so the warning shows on every event."""
    token = os.urandom(4).hex()
    paths = [os.path.join(env.tenants, t, "compiled.py")
             for t in ("alpha", "beta")]

    def write(text):
        for p in paths:
            with open(p, "w") as f:
                f.write(text)

    for version in ("v1", "v2"):
        write("#!/usr/bin/python3\nimport sys\n"
              "def answer(body):\n    return '%s %s ' + body\n"
              "print(answer(sys.stdin.read()))\n" % (version, token))
        seen = []
        for i in range(2):
            r, lines = event_logged(env, "alpha/compiled", b"b%d" % i)
            want = ("%s %s b%d\n" % (version, token, i)).encode()
            check(r.status == 200 and r.body == want,
                  "%s, event %d: %r, wanted %r" % (version, i, r, want))
            seen.append(code_state(lines))
        check(seen == ["kept", "given"], "%s: code %r, wanted kept then "
              "given" % (version, seen))
    r, lines = event_logged(env, "beta/compiled", b"b")
    check(r.status == 200 and r.body.startswith(b"v2 "), "beta: %r" % r)
    check(code_state(lines) == "kept", "beta's first event: code %r, "
          "wanted kept (compiled in its own guest)" % code_state(lines))
    write("#!/usr/bin/python3\nprint(1 is 1)\n")
    for i in range(2):
        r, lines = event_logged(env, "alpha/compiled", b"")
        check(r.status == 200 and r.body == b"True\n", "warns: %r" % r)
        check(any("SyntaxWarning" in l for l in lines),
              "event %d: no SyntaxWarning in the log: %r" % (i, lines))
        check(code_state(lines) is None, "a script that warns: code %r"
              % code_state(lines))


@test(timeout=240)
def test_template_rebuilt_when_clones_fail(env):
    """A snapshot that goes bad on disk makes restores fail; after three in
    a row the template is booted again, once, and events succeed again.
    Meanwhile every answer is a success or a 503 with Retry-After.  Once it
    works again, a second damage is repaired the same way (the rebuild is
    once per run of failures, not once per vmcgi)."""
    state = os.path.join(env.tmp, "state", "e2e.state")
    for round_ in (1, 2):
        mark = env.log_mark()
        with open(state, "r+b") as f:   # the pool's clones are loaded
            f.write(os.urandom(4096))
        deadline = time.monotonic() + 200
        statuses, recovered = [], False
        while time.monotonic() < deadline:
            r = env.client.req("POST", hook("alpha/echo"), b"again",
                               timeout=60)
            statuses.append(r.status)
            check(r.status in (200, 503), "answer while broken: %r" % r)
            if r.status == 503:
                check(r.header("retry-after") is not None,
                      "no Retry-After")
            lines = env.log_since(mark)
            if r.status == 200 and "booted again" in lines:
                recovered = True
                break
            time.sleep(0.5)
        lines = env.log_since(mark)
        check("booting it again" in lines, "round %d: no rebuild in the "
              "log" % round_)
        check(recovered, "round %d: no success after the rebuild; statuses "
              "%r" % (round_, statuses))
        env.settle(timeout=30)
        env.pool_full()


@test(timeout=1500)
def test_soak_no_leaks(env):
    """Many events with crashes, timeouts, 413s and client aborts mixed
    in, four at a time: afterwards vmcgi's memory and descriptors are back
    where they were and no QEMU is left beyond the pool.  SOAK_EVENTS sets
    the count (default 2000: "thousands", issue 3)."""
    total = int(os.environ.get("SOAK_EVENTS", "2000"))
    pid = env.vmcgi_pid()
    for i in range(20):             # every worker and arena has run once
        soak_one(env, i)
    env.settle(timeout=15)
    env.pool_full()
    rss0, fds0 = proc_mem_fds(pid)
    tally, bad, lock, retries = {}, [], threading.Lock(), []
    counter = iter(range(total))

    def worker():
        for i in counter:
            try:
                kind, ok, r = soak_one(env, i, retries)
            except Fail as e:
                kind, ok, r = "error", False, str(e)
            with lock:
                tally[kind] = tally.get(kind, 0) + 1
                if not ok:
                    bad.append((i, kind, repr(r)[:200]))
    threads = [threading.Thread(target=worker) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    env.settle(timeout=30)
    env.pool_full()
    rss1, fds1 = proc_mem_fds(pid)
    log("soak: %d events in %.0f s, %s, %d retried after a 503; vmcgi RSS "
        "%d -> %d kB, fds %d -> %d" % (total, took, tally, len(retries),
                                       rss0, rss1, fds0, fds1))
    check(len(retries) <= total // 100, "%d 503s in %d events"
          % (len(retries), total))
    check(env.vmcgi_pid() == pid, "vmcgi restarted during the soak")
    check(not bad, "%d events went wrong, first: %r" % (len(bad), bad[:3]))
    check(fds1 == fds0, "descriptors %d -> %d" % (fds0, fds1))
    check(rss1 <= rss0 + max(4096, rss0 // 5),
          "RSS grew from %d to %d kB" % (rss0, rss1))


TCP_CLIENT = r"""
import socket, sys
port, req = int(sys.argv[1]), bytes.fromhex(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port), timeout=60)
s.sendall(req)
out = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    out += d
sys.stdout.write(out.hex())
"""


@test(timeout=400)
def test_tcp_listen(env):
    """listen = HOST:PORT serves FastCGI over TCP (here on the loopback of
    the test's own namespace, so the client runs in there too).  This
    vmcgi also has code_cache = no: a python3 handler's code is never
    kept nor given, its guest compiles it every time."""
    port = free_port()
    text = env.ini_text().replace("listen = %s" % env.sock,
                                  "listen = 127.0.0.1:%d\ncode_cache = no"
                                  % port)
    check("127.0.0.1:%d" % port in text, "could not rewrite listen")
    ini = os.path.join(env.tmp, "tcp.ini")
    with open(ini, "w") as f:
        f.write(text)
    logf = open(os.path.join(env.tmp, "vmcgi-tcp.log"), "wb")
    proc = subprocess.Popen(
        nsenter(env.ns) + [os.path.join(env.build, "vmcgi"), "-c", ini],
        stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
        start_new_session=True)
    try:
        req = fcgi_request(hook("alpha/echo"), b"over tcp").hex()
        deadline = time.monotonic() + BOOT_WAIT
        out = b""
        while time.monotonic() < deadline and b"over tcp" not in out:
            check(proc.poll() is None, "vmcgi (tcp) exited: %s" %
                  tail(os.path.join(env.tmp, "vmcgi-tcp.log")))
            r = subprocess.run(["ip", "netns", "exec", env.ns,
                                "/usr/bin/python3", "-c", TCP_CLIENT,
                                str(port), req],
                               capture_output=True, text=True, timeout=90)
            out = bytes.fromhex(r.stdout.strip() or "")
            if b"over tcp" not in out:
                time.sleep(1)
        stdout, ended = fcgi_parse(out)
        check(cgi_status(stdout) == 200 and stdout.endswith(b"over tcp")
              and ended, "over TCP: %r" % out[:300])
        req = fcgi_request(hook("alpha/preloaded"), b"").hex()
        for i in range(2):
            r = subprocess.run(["ip", "netns", "exec", env.ns,
                                "/usr/bin/python3", "-c", TCP_CLIENT,
                                str(port), req],
                               capture_output=True, text=True, timeout=90)
            stdout, ended = fcgi_parse(bytes.fromhex(r.stdout.strip()))
            check(cgi_status(stdout) == 200 and b"preloaded\n" in stdout,
                  "python3 over TCP: %r" % stdout[:300])
        # The log line follows the response (vmcgi reaps the VM first).
        deadline = time.monotonic() + 10
        while True:
            with open(os.path.join(env.tmp, "vmcgi-tcp.log")) as f:
                lines = [l for l in f if "alpha/preloaded status=" in l]
            if len(lines) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        check(len(lines) == 2 and all(" code=not-kept" in l
                                      for l in lines),
              "code_cache = no: %r" % lines)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logf.close()
    check(proc.returncode == 0, "vmcgi (tcp) exit status %s" %
          proc.returncode)


@test(timeout=120)
def test_backpressure_503_and_fairness(env):
    """A tenant over its max_concurrent waits queue_timeout (2 s) and gets
    503 with Retry-After; past its queue bound it gets 503 at once; all
    the while another tenant's events succeed."""
    results = {}

    def post(key, route, delay=0.0):
        time.sleep(delay)
        t0 = time.monotonic()
        r = env.client.req("POST", hook(route), b"x", timeout=60)
        results[key] = (r, time.monotonic() - t0)

    threads = [threading.Thread(target=post, args=("run", "flood/slow")),
               threading.Thread(target=post, args=("wait", "flood/slow",
                                                   0.5)),
               threading.Thread(target=post, args=("full", "flood/slow",
                                                   1.0))]
    for t in threads:
        t.start()
    time.sleep(1.2)
    others = []
    for i in range(3):
        r = env.client.req("POST", hook("beta/echo"), b"other %d" % i)
        others.append(r)
    for t in threads:
        t.join(90)
    r, took = results["run"]
    check(r.status == 200 and r.body == b"done\n", "running: %r" % r)
    r, took = results["wait"]
    check(r.status == 503, "waiting request: %r" % r)
    check(r.header("retry-after") == "5", "Retry-After %r" %
          r.header("retry-after"))
    check(1.5 <= took <= 3.0, "waited %.2f s, want about 2 s" % took)
    check_error(r, 503)
    r, took = results["full"]
    check(r.status == 503 and took < 1.5,
          "queue full: %r after %.2f s" % (r, took))
    for i, r in enumerate(others):
        check(r.status == 200 and r.body.endswith(b"other %d" % i),
              "other tenant starved: %r" % r)
    # the slot is free again: the next event of the tenant runs
    r = env.client.req("POST", hook("flood/slow"), b"x", timeout=60)
    check(r.status == 200, "after the flood: %r" % r)
    env.settle()


@test()
def test_fastcgi_malformed(env):
    big_len = struct.pack("!II", 0x7FFFFFFF | 0x80000000,
                          0x7FFFFFFF | 0x80000000)
    cases = {
        "huge name length": fcgi_begin() + fcgi_record(
            FCGI_PARAMS, big_len + b"AB"),
        "length overflow": fcgi_begin() + fcgi_record(
            FCGI_PARAMS, struct.pack("!II", 0xFFFFFFFF, 0xFFFFFFF0) + b"x"),
        "name past record": fcgi_begin() + fcgi_record(
            FCGI_PARAMS, b"\x7f\x01" + b"N" * 10),
        "truncated record": fcgi_begin() + struct.pack(
            "!BBHHBx", 1, FCGI_PARAMS, 1, 65535, 0) + b"\x0bSCRIPT_NAME",
        "truncated header": fcgi_begin()[:5],
        "garbage version": fcgi_record(FCGI_BEGIN,
                                       struct.pack("!HB5x", 1, 0),
                                       version=9) + b"\xff" * 64,
        "noise": os.urandom(4096),
        "oversized params": fcgi_begin() + fcgi_stream(
            FCGI_PARAMS, fcgi_pairs([("HTTP_X_HUGE", "h" * (4 << 20))]) +
            fcgi_pairs([("SCRIPT_NAME", hook("alpha/echo"))])) +
            fcgi_stream(FCGI_STDIN, b""),
        "many params": fcgi_begin() + fcgi_stream(
            FCGI_PARAMS, fcgi_pairs([("HTTP_P%d" % i, "v")
                                     for i in range(100000)])) +
            fcgi_stream(FCGI_STDIN, b""),
    }
    pid = env.vmcgi_pid()
    for name, data in cases.items():
        try:
            out, how = fcgi_talk(env.sock, data, timeout=15)
        except OSError as e:
            raise Fail("%s: %s" % (name, e))
        check(how != "timeout", "%s: connection neither closed nor "
              "answered in 15s" % name)
        stdout, _ = fcgi_parse(out)
        st = cgi_status(stdout)
        check(st is None or st >= 400 or name == "oversized params",
              "%s: answered %s" % (name, st))
        check(env.vmcgi_pid() == pid, "vmcgi died on %r" % name)
    r = env.client.req("POST", hook("alpha/echo"), b"after")
    check(r.status == 200 and r.body == b"after", "next request: %r" % r)


def send_event(env, name):
    """POST examples/events/NAME.json as its .headers file says."""
    base = os.path.join(EXAMPLES, "events", name)
    with open(base + ".json", "rb") as f:
        body = f.read()
    headers, route, expect = {}, None, 200
    with open(base + ".headers") as f:
        for line in f.read().splitlines():
            m = re.match(r"#\s*(route|expect):\s*(\S+)", line)
            if m and m.group(1) == "route":
                route = m.group(2)
            elif m:
                expect = int(m.group(2))
            elif line.strip() and not line.startswith("#"):
                k, v = line.split(":", 1)
                headers[k.strip()] = v.strip()
    check(route, "%s.headers names no route" % name)
    r = env.client.raw("POST", hook(route), headers=headers, body=body)
    check(r.status == expect, "%s: status %r, want %d" % (name, r, expect))
    check(r.complete, "%s: incomplete" % name)
    return json.loads(body), r


@test(timeout=180)
def test_example_events(env):
    names = sorted(n[:-len(".headers")] for n in
                   os.listdir(os.path.join(EXAMPLES, "events"))
                   if n.endswith(".headers"))
    check(len(names) >= 3, "only %d example events" % len(names))
    for name in names:
        event, r = send_event(env, name)
        text = r.body.decode()
        if name.startswith("stripe-"):
            j = r.json()
            if event["type"] != "checkout.session.completed":
                check(j == {"ignored": event["type"]}, "%s: %r" % (name, j))
                continue
            s = event["data"]["object"]
            check(j["id"] == s["id"], "%s: id %r" % (name, j))
            check(j["email"] == s["customer_details"]["email"],
                  "%s: email %r" % (name, j))
            check(j["currency"] == s["currency"].upper(),
                  "%s: currency %r" % (name, j))
            check(re.match(r"^\d+(\.\d\d)?$", j["amount"]),
                  "%s: amount %r" % (name, j))
            check(time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                time.gmtime(s["created"])) == j["created"],
                  "%s: created %r" % (name, j))
            check(j["signature_ok"] is True, "%s: signature not verified"
                  % name)
        elif name.startswith("github-push"):
            for want in ("repo: " + event["repository"]["full_name"],
                         "branch: " + event["ref"].split("/", 2)[2],
                         "commits: %d" % len(event["commits"]),
                         "pusher: " + event["pusher"]["name"]):
                check(want in text.splitlines(), "%s: no %r in %r"
                      % (name, want, text))
        elif name.startswith("github-ping"):
            check("hook: %d" % event["hook_id"] in text, "%s: %r"
                  % (name, text))
        elif name.startswith("ticker-"):
            quotes = event["data"]["quotes"]
            lines = text.splitlines()
            check(len(lines) == len(quotes) + 2, "%s: %r" % (name, text))
            first = env.client.arrival(r, b"1/")
            last = env.client.arrival(r, b"end of alert")
            check(first is not None and last is not None and
                  last - first >= 0.3 * (len(quotes) - 1)
                  * event["data"]["interval_ms"] / 1000,
                  "%s: lines did not stream" % name)
        check_rid(r)


@test(daemon=False)
def test_example_signatures(env):
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, "events",
                                                     "sign.py"), "--check"],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, "stale signatures: %s" % r.stdout.strip())


@test()
def test_qemu_gone_after_each_request(env):
    for route, body in (("alpha/echo", b"x"), ("alpha/crash", b""),
                        ("alpha/empty", b"")):
        env.client.req("POST", hook(route), body)
        env.settle()


@test(timeout=90)
def test_sigterm_in_flight(env):
    box = {}

    def go():
        try:
            box["r"] = env.client.req("POST", hook("alpha/sleep3"), b"",
                                      timeout=40)
        except Fail as e:
            box["e"] = e
    t = threading.Thread(target=go, daemon=True)
    mark = env.log_mark()
    t.start()
    time.sleep(1.5)
    os.kill(env.vmcgi.pid, signal.SIGTERM)
    t.join(45)
    try:
        rc = env.vmcgi.wait(30)
    except subprocess.TimeoutExpired:
        raise Fail("vmcgi still running 30s after SIGTERM")
    check("e" not in box, "in-flight request: %s" % box.get("e"))
    r = box.get("r")
    check(r is not None, "in-flight request got no answer")
    check(r.rid is not None, "in-flight request answered by nginx, not "
          "vmcgi: %r" % r)
    check(r.status != 200 or r.body == b"done\n", "body %r" % r.body)
    check(rc == 0, "vmcgi exit status %d" % rc)
    lines = env.log_since(mark)
    check("ended while the FastCGI process lived" not in lines and
          "malformed" not in lines, "a clean stop taken for a lie: %r"
          % lines[-600:])
    check_qemu_gone(env)


def check_qemu_gone(env):
    """Once vmcgi has exited, every QEMU it ever had is gone within
    SETTLE seconds."""
    deadline = time.monotonic() + SETTLE
    while True:
        with env.lock:
            left = [p for p, s in env.seen if alive(p, s)]
        if not left:
            return
        check(time.monotonic() < deadline,
              "QEMU left after vmcgi exited: %s" % left)
        time.sleep(0.2)


def fastcgi_children(env):
    """vmcgi's FastCGI process(es): its children named vmcgi-fastcgi."""
    root = env.vmcgi_pid()
    return [p for p, st in proc_table().items()
            if st[0] == root and st[1] == "vmcgi-fastcgi"]


@test()
def test_fastcgi_process_unprivileged(env):
    """What parses FastCGI is a child of vmcgi running as nobody, with no
    capability, no_new_privs and a seccomp filter, holding only sockets and
    pipes: no file, no memfd, no QEMU monitor.  vmcgi itself (root) holds
    the VMs and no listening socket."""
    w = fastcgi_children(env)
    check(len(w) == 1, "FastCGI processes of vmcgi: %r" % w)
    pid = w[0]
    with open("/proc/%d/status" % pid) as f:
        st = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
    nobody = pwd.getpwnam("nobody")
    check(set(st["Uid"].split()) == {str(nobody.pw_uid)},
          "FastCGI process uids %r" % st["Uid"])
    check(set(st["Gid"].split()) == {str(nobody.pw_gid)},
          "FastCGI process gids %r" % st["Gid"])
    check(st["Groups"].split() == [], "groups %r" % st["Groups"])
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        check(int(st[cap], 16) == 0, "FastCGI process %s %s"
              % (cap, st[cap]))
    check(st["NoNewPrivs"].strip() == "1", "no_new_privs unset")
    check(st["Seccomp"].strip() == "2", "Seccomp %r" % st["Seccomp"])
    fd_dir = "/proc/%d/fd" % pid
    kinds = {}
    for n in os.listdir(fd_dir):
        if int(n) < 3:
            continue                    # stdio: the test's log file
        t = os.readlink(os.path.join(fd_dir, n))
        kinds.setdefault(t.split(":")[0], []).append(t)
    check(set(kinds) <= {"socket", "pipe"}, "FastCGI process holds %r"
          % {k: v for k, v in kinds.items() if k not in ("socket", "pipe")})
    # Its channels to vmcgi (one per worker) and the listening socket.
    check(len(kinds.get("socket", [])) >= 4 + 1, "sockets %r" % kinds)
    with open("/proc/%d/comm" % env.vmcgi_pid()) as f:
        check(f.read().strip() == "vmcgi", "vmcgi's own name")
    r = env.client.req("POST", hook("alpha/echo"), b"still here")
    check(r.status == 200, "an event after the look: %r" % r)


@test()
def test_fastcgi_process_death_stops_vmcgi(env):
    """If the FastCGI process dies (here SIGKILL, as a seccomp violation
    would), vmcgi logs it, stops, and leaves no QEMU; then it can be
    started again."""
    w = fastcgi_children(env)
    check(len(w) == 1, "FastCGI processes of vmcgi: %r" % w)
    mark = env.log_mark()
    os.kill(w[0], signal.SIGKILL)
    try:
        rc = env.vmcgi.wait(30)
    except subprocess.TimeoutExpired:
        raise Fail("vmcgi still running 30s after its FastCGI process died")
    check(rc == 1, "vmcgi exit status %d" % rc)
    check(any("FastCGI process" in l and "killed by signal 9" in l
              for l in env.log_since(mark).splitlines()),
          "no log line for the death")
    check_qemu_gone(env)
    env.ensure_vmcgi()


@test()
def test_stuck_pooled_clone_given_up(env):
    """A pooled clone that does not answer its resume (its QEMU stopped
    here with SIGSTOP) is given up after a few seconds, not after the
    whole restore timeout: the event is served by a clone restored on
    demand, and the stuck QEMU is killed."""
    env.pool_full()
    idle = env.qemu()
    check(idle, "no pooled clone")
    for pid in idle:
        os.kill(pid, signal.SIGSTOP)
    mark = env.log_mark()
    try:
        t0 = time.monotonic()
        r = env.client.req("POST", hook("alpha/echo"), b"unstuck",
                           timeout=60)
        took = time.monotonic() - t0
    finally:
        for pid in idle:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    check(r.status == 200 and r.body == b"unstuck", "%r" % r)
    lines = env.log_since(mark)
    check("failed to resume" in lines, "no log line: %r" % lines[-600:])
    # Before, the resume waited the 30 s restore timeout.
    check(took < 25, "the event took %.1f s" % took)
    env.settle(timeout=30)
    env.pool_full()


def broker_channel(pid):
    """A copy of one of the FastCGI process PID's channels to vmcgi (a
    SOCK_SEQPACKET socket), taken with pidfd_getfd as a compromised
    FastCGI process would hold it."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        for n in sorted(int(x) for x in os.listdir("/proc/%d/fd" % pid)):
            fd = libc.syscall(438, pidfd, n, 0)     # pidfd_getfd
            if fd < 0:
                continue
            try:
                s = socket.socket(fileno=fd)
            except OSError:             # a pipe, or its stdio
                os.close(fd)
                continue
            if s.type == socket.SOCK_SEQPACKET:
                return s
            s.close()
    finally:
        os.close(pidfd)
    raise Fail("no broker channel in FastCGI process %d" % pid)


@test()
def test_broker_lies_stop_vmcgi(env):
    """What the privileged side does when the FastCGI process lies on its
    channel (as one taken over would): a message of the wrong size, or an
    empty one (which SOCK_SEQPACKET cannot tell from a close), kills the
    FastCGI process; vmcgi logs it, exits 1 and leaves no QEMU."""
    for what, msg, words in (("short", b"\x01\x00\x00", "malformed message"),
                             ("empty", b"", "ended while the FastCGI")):
        w = fastcgi_children(env)
        check(len(w) == 1, "FastCGI processes of vmcgi: %r" % w)
        mark = env.log_mark()
        chan = broker_channel(w[0])
        chan.send(msg)
        chan.close()
        try:
            rc = env.vmcgi.wait(30)
        except subprocess.TimeoutExpired:
            raise Fail("%s message: vmcgi still running after 30s" % what)
        lines = env.log_since(mark)
        check(rc == 1, "%s message: vmcgi exit status %d" % (what, rc))
        check(words in lines and "killed by signal 9" in lines,
              "%s message: log %r" % (what, lines[-600:]))
        check_qemu_gone(env)
        env.ensure_vmcgi()


@test()
def test_vmcgi_killed_leaves_nothing(env):
    """SIGKILL to vmcgi itself: its FastCGI process and every QEMU die
    with it (parent-death signals), whatever state they were in."""
    table = proc_table()
    watch = [(p, table[p][2]) for p in fastcgi_children(env)]
    watch += [(p, start) for p, (start, _) in env.qemu().items()]
    check(len(watch) >= 2, "nothing to watch: %r" % watch)
    os.kill(env.vmcgi.pid, signal.SIGKILL)
    env.vmcgi.wait(30)
    deadline = time.monotonic() + SETTLE
    while True:
        left = [p for p, start in watch if alive(p, start)]
        if not left:
            break
        check(time.monotonic() < deadline,
              "left after vmcgi was killed: %s" % left)
        time.sleep(0.2)
    env.ensure_vmcgi()                  # for the tests after this one


# ---------------------------------------------------------------------------
# The harness

def run_one(env, name, fn, timeout):
    box = {}

    def go():
        try:
            fn(env)
            box["ok"] = True
        except Fail as e:
            box["fail"] = str(e)
        except Exception as e:          # a bug in the test or a crash
            box["fail"] = "%s: %s | %s" % (
                type(e).__name__, e,
                traceback.format_exc().strip().splitlines()[-3].strip())
    t = threading.Thread(target=go, daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    while t.is_alive() and time.monotonic() < deadline:
        t.join(0.2)
    if t.is_alive():
        return "timed out after %ds" % timeout
    return None if box.get("ok") else box.get("fail", "no result")


def infra_only(env, report):
    """The harness without vmcgi: nginx answers 502 for the missing
    socket, its workers run as www-data, the INI is generated."""
    r = env.client.req("POST", hook("alpha/echo"), b"x")
    report("nginx_502_without_socket",
           None if r.status == 502 else "status %r" % r)
    users = env.nginx_workers_user()
    report("nginx_workers_www_data",
           None if users == {33} else "uids %s" % users)
    text = env.ini_text()
    report("ini_generated", None if "[handler acme/checkout]" in text and
           "[handler alpha/env]" in text else text)


def run_tests(env, tests, report):
    """Tests without a daemon first (vmcgi -t), then the daemon's."""
    for name, fn, timeout, daemon in tests:
        if not daemon:
            report(name, run_one(env, name, fn, timeout))
    if not any(t[3] for t in tests):
        return
    env.start_sampler()
    try:
        env.start_vmcgi()
        env.measure_baseline()
    except Fail as e:
        report("startup", str(e))
        return
    for name, fn, timeout, daemon in tests:
        if not daemon:
            continue
        try:
            env.ensure_vmcgi()
        except Fail as e:
            report(name, "vmcgi restart failed: %s" % e)
            continue
        report(name, run_one(env, name, fn, timeout))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build")
    ap.add_argument("--only", help="comma-separated test names")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--infra-only", action="store_true")
    args = ap.parse_args()
    if args.list:
        for name, _, _, _ in TESTS:
            print(name)
        return 0
    if os.geteuid() != 0:
        print("e2e: must run as root (network namespace, nginx as www-data)")
        return 2
    if not args.infra_only:
        for f in ("vmcgi", "guest/vmlinuz", "guest/initrd.img"):
            if not os.path.exists(os.path.join(args.build, f)):
                print("e2e: %s/%s is missing (make && make image)"
                      % (args.build, f))
                return 2
    tests = TESTS
    if args.only:
        want = set(args.only.split(","))
        tests = [t for t in TESTS if t[0] in want]
        unknown = want - {t[0] for t in tests}
        if unknown:
            print("e2e: no such tests: %s" % ", ".join(sorted(unknown)))
            return 2

    def on_signal(sig, frame):
        raise KeyboardInterrupt
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    results = []

    def report(name, err):
        results.append((name, err))
        if err is None:
            print("ok - %s" % name, flush=True)
        else:
            print("not ok - %s: %s" % (name, err.replace("\n", " ")),
                  flush=True)

    t0 = time.monotonic()
    env = Env(args.build, args.infra_only)
    try:
        env.write_files()
        env.make_netns()
        env.start_nginx()
        if args.infra_only:
            infra_only(env, report)
        else:
            run_tests(env, tests, report)
    except KeyboardInterrupt:
        report("interrupted", "run interrupted: tearing down")
    except Fail as e:
        report("setup", str(e))
    finally:
        # Nothing may stop the teardown half-way.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        try:
            problems = env.teardown()
        except Exception as e:
            problems = ["teardown: %s: %s" % (type(e).__name__, e)]
        name = "teardown" if env.vmcgi is None else \
            "teardown_no_leftover_qemu"
        report(name, "; ".join(problems) if problems else None)
        if os.path.exists("/run/netns/" + env.ns):
            report("netns_removed", "%s still exists" % env.ns)
        if os.path.exists(env.tmp) and not os.environ.get("VMCGI_E2E_KEEP"):
            report("tmp_removed", "%s still exists" % env.tmp)
    passed = sum(1 for _, e in results if e is None)
    failed = len(results) - passed
    log("%.0fs; vmcgi restarts: %d" % (time.monotonic() - t0, env.restarts))
    print("e2e: %d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
