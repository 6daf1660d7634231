"""vmcgi zygote: a python3 started in the template, forked per handler.

Under TCG, starting python3 and importing json costs about a second in a
fresh clone.  The agent starts this interpreter once in the template,
before any tenant code exists, as the handler user with an empty
environment; it imports what webhook transforms commonly use, says it is
ready and waits on fd 3.  The snapshot keeps it waiting there.

For a handler whose first line names python3, the agent sends one request
(see src/agent/zygote.c for the layout).  We fork twice so the handler is
reparented to the agent, which then waits for it, times it out and kills
it like any exec'd handler.  The handler sets itself up to look like
`python3 SCRIPT` (stdio, environment, argv, __main__, cwd), reports its pid
through us, and runs the script only once the agent says go.

A pooled clone first sends a warm-up request (no strings, no tenant
input): we fork one child that sets itself up the same way and runs
WARM_SOURCE instead of a script, wait for it and keep waiting for the
real request.  Under TCG each clone's QEMU translates guest code anew; the
child has it translate the handler's paths before an event pays for them.
"""

import gc
import io
import os
import sys

import _socket

# What a webhook transform usually imports; cheap to have in the snapshot.
import base64  # noqa: F401
import datetime  # noqa: F401
import hashlib  # noqa: F401
import hmac  # noqa: F401
import json  # noqa: F401
import re  # noqa: F401
import time
import urllib.parse  # noqa: F401

SOCK_FD = 3
MAGIC = 0x315A5956		# "VYZ1" in host byte order
WARM_MAGIC = 0x315A5957		# "WYZ1": the pool's warm-up, no strings
HDR_LEN = 8
MAX_REQUEST = 20 << 20		# more than PROTO_MAX_ENV entries can fill
NFDS = 4			# stdin, stdout, stderr, go


def u32(b, off):
    return int.from_bytes(b[off:off + 4], "little")


def reply(sock, pid, err):
    sock.sendall(pid.to_bytes(4, "little", signed=True) +
                 err.to_bytes(4, "little", signed=True))


def recv_request(sock):
    """Returns (warm, fds, strings), or None once the agent hung up."""
    fds = []
    head = b""
    while len(head) < HDR_LEN:
        data, anc, _, _ = sock.recvmsg(HDR_LEN - len(head),
                                       _socket.CMSG_SPACE(NFDS * 4))
        for level, kind, blob in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                n = len(blob) - len(blob) % 4
                fds += [u32(blob, i) for i in range(0, n, 4)]
        if not data:
            return None
        head += data
    magic, size = u32(head, 0), u32(head, 4)
    if magic == WARM_MAGIC and size == 0 and len(fds) == NFDS:
        return True, fds, []
    if magic != MAGIC or size > MAX_REQUEST or len(fds) != NFDS:
        raise ValueError("bad request: magic %x, %d bytes, %d fds"
                         % (magic, size, len(fds)))
    body = bytearray(size)
    view = memoryview(body)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ValueError("request cut short at %d bytes" % got)
        got += n
    strings = bytes(body).split(b"\0")
    if len(strings) < 5 or strings[-1] != b"":
        raise ValueError("bad request strings")
    return False, fds, strings[:-1]


def make_stdio(fd, write, name, errors, unbuffered):
    """A text stream over fd built as CPython builds sys.std* at start."""
    buffering = 0 if unbuffered and write else -1
    buf = io.open(fd, "wb" if write else "rb", buffering, closefd=False)
    raw = buf if buffering == 0 else buf.raw
    raw.name = name
    line = not unbuffered and (raw.isatty() or fd == 2)
    stream = io.TextIOWrapper(buf, sys.__stdin__.encoding, errors, "\n",
                              line, unbuffered)
    stream.mode = "w" if write else "r"
    return stream


def set_stdio(unbuffered):
    errors = sys.__stdin__.errors
    sys.stdin = sys.__stdin__ = make_stdio(0, False, "<stdin>", errors,
                                           unbuffered)
    sys.stdout = sys.__stdout__ = make_stdio(1, True, "<stdout>", errors,
                                             unbuffered)
    sys.stderr = sys.__stderr__ = make_stdio(2, True, "<stderr>",
                                             "backslashreplace", unbuffered)


def set_environ(entries):
    """Makes os.environ and the C environ exactly the agent's entries."""
    os.environ.clear()
    for e in entries:
        name, _, value = e.partition(b"=")
        os.environb[name] = value
    # The time module read TZ when the template imported it.
    time.tzset()
    import site
    site.USER_BASE = site.USER_SITE = None
    site.getusersitepackages()


def set_comm(name):
    try:
        with open("/proc/self/comm", "wb") as f:
            f.write(name[:15])
    except OSError:
        pass


def prepare(fds, strings):
    """In the handler process: everything but the script itself."""
    exe, argv0, flag, script = (os.fsdecode(s) for s in strings[:4])
    os.setsid()
    for i in range(3):
        os.dup2(fds[i], i)
    os.chdir("/tmp")
    set_environ(strings[4:])
    # The kernel names a process after the script it was asked to exec;
    # through env(1) it is the interpreter's name.
    set_comm(os.path.basename(strings[3] if argv0.startswith("/")
                              else strings[1]))
    sys.argv = [script]
    sys.orig_argv = [argv0] + ([flag] if flag else []) + [script]
    sys.executable = sys._base_executable = exe
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    set_stdio(flag == "-u")
    return script


def handler(status_w, fds, strings):
    """The grandchild: set up, report, wait for go.  Returns the script."""
    try:
        script = prepare(fds, strings)
        os.write(status_w, os.getpid().to_bytes(4, "little") + bytes(4))
        go = os.read(fds[3], 1)
    except Exception as e:
        err = getattr(e, "errno", None) or 5
        os.write(status_w, bytes(4) + err.to_bytes(4, "little"))
        os._exit(127)
    if go != b"g":
        os._exit(127)
    os.closerange(3, 1 << 16)
    return script


def serve(sock, fds, strings):
    """Forks the handler.  Returns its script in the handler, else None."""
    status_r, status_w = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        pid = -e.errno
    if pid == 0:
        os.close(status_r)
        if os.fork() == 0:
            return handler(status_w, fds, strings)
        os._exit(0)
    os.close(status_w)
    for fd in fds:
        os.close(fd)
    if pid < 0:
        os.close(status_r)
        reply(sock, 0, -pid)
        return None
    # The intermediate child has exited once this returns, so the
    # handler's parent is PID 1 before the agent learns its pid.
    os.waitpid(pid, 0)
    st = os.read(status_r, 8)
    os.close(status_r)
    if len(st) != 8:
        reply(sock, 0, 5)	# EIO: the handler died setting up
    else:
        reply(sock, u32(st, 0), u32(st, 4))
    return None


# What the warm-up child runs: what webhook transforms commonly do, on a
# fixed body the agent writes to its stdin.  Tenant code never gets here.
WARM_SOURCE = b"""\
import base64, datetime, hashlib, hmac, json, re, sys, urllib.parse
raw = sys.stdin.buffer.read()
doc = json.loads(raw)
sig = hmac.new(b"k", raw, hashlib.sha256).hexdigest()
hmac.compare_digest(sig, hashlib.sha256(raw).hexdigest())
now = datetime.datetime.now(datetime.timezone.utc)
when = datetime.datetime.fromisoformat(now.isoformat())
out = {"id": doc.get("id"), "sig": sig, "b64": base64.b64encode(raw),
       "at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
       "q": urllib.parse.parse_qs("a=1&b=2"), "m": re.findall(r"\\w+", sig)}
print(json.dumps(out, default=str, sort_keys=True, indent=2))
sys.stdout.write(json.dumps(doc) + "\\n")
print("warm", file=sys.stderr)
"""
WARM_STRINGS = [b"/usr/bin/python3", b"/usr/bin/python3", b"",
                b"/tmp/<warm-up>"]


def warm(sock, fds):
    """Forks a child that runs WARM_SOURCE like a handler and waits for it,
    so that this VM's QEMU has translated the handler's paths, exit and
    all, before the real request.  Returns True in the child."""
    try:
        pid = os.fork()
    except OSError as e:
        pid = -e.errno
    if pid == 0:
        prepare(fds, WARM_STRINGS)
        os.closerange(3, 1 << 16)
        return True
    for fd in fds:
        os.close(fd)
    if pid < 0:
        reply(sock, 0, -pid)
        return False
    _, st = os.waitpid(pid, 0)
    reply(sock, 0, 0 if st == 0 else 5)	# EIO: the snippet failed
    return False


def zygote():
    """Serves requests until the agent hangs up.  Returns (script, source)
    in a handler, where source None means the script's file."""
    sock = _socket.socket(fileno=SOCK_FD)
    reply(sock, 0, 0)
    # Objects made so far live as long as we do: keep the collector off
    # their pages so forked children do not copy them.
    gc.freeze()
    while True:
        req = recv_request(sock)
        if req is None:
            os._exit(0)
        is_warm, fds, strings = req
        if is_warm:
            if warm(sock, fds):
                return os.fsdecode(WARM_STRINGS[3]), WARM_SOURCE
            continue
        script = serve(sock, fds, strings)
        if script is not None:
            return script, None


def main_module(script):
    """A fresh __main__ laid out as CPython lays it out for a script."""
    import builtins
    import types
    from importlib.machinery import SourceFileLoader

    mod = types.ModuleType("__main__")
    mod.__loader__ = SourceFileLoader("__main__", script)
    mod.__annotations__ = {}
    mod.__builtins__ = builtins
    mod.__file__ = script
    mod.__cached__ = None
    sys.modules["__main__"] = mod
    return mod


def print_uncaught(exc, tb):
    """Reports an uncaught exception as CPython's PyErr_Print does."""
    sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, tb
    hook = getattr(sys, "excepthook", None)
    if hook is None:
        print("sys.excepthook is missing", file=sys.stderr)
        sys.__excepthook__(type(exc), exc, tb)
        return
    try:
        hook(type(exc), exc, tb)
    except BaseException as e2:
        print("Error in sys.excepthook:", file=sys.stderr)
        sys.__excepthook__(type(e2), e2, e2.__traceback__)
        print("\nOriginal exception was:", file=sys.stderr)
        sys.__excepthook__(type(exc), exc, tb)


def run(script, source):
    """Runs the script as __main__.  SystemExit goes up to CPython."""
    mod = main_module(script)
    try:
        if source is None:
            with open(script, "rb") as f:
                source = f.read()
        exec(compile(source, script, "exec", dont_inherit=True),
             mod.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        # Drop this frame: the script's <module> heads the traceback.
        tb = exc.__traceback__.tb_next
        exc.__traceback__ = tb
        print_uncaught(exc, tb)
        if isinstance(exc, KeyboardInterrupt):
            # python3 dies of SIGINT then, though after its atexit work.
            import signal
            sys.stdout.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        raise SystemExit(1)


run(*zygote())
