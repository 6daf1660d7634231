"""vmcgi zygote: a python3 started in the template, becoming the handler.

Under TCG, starting python3 and importing json costs about a second in a
fresh clone.  The agent starts this interpreter once in the template,
before any tenant code exists, as the handler user with an empty
environment; it imports what webhook transforms commonly use, says it is
ready and waits on fd 3.  The snapshot keeps it waiting there.

For a handler whose first line names python3, the agent sends one request
(see src/agent/zygote.c for the layout), and this process becomes the
handler: a clone serves a single event, so nothing is kept for a next one
and there is no need to fork.  It sets itself up to look like
`python3 SCRIPT` (stdio, environment, argv, __main__, cwd), reads and
compiles the script (or loads the code the host kept from an earlier
event of the handler), reports its pid and the code it compiled, and
runs the script only once the agent says go.  The agent waits for it,
times it out and kills it like any exec'd handler.

A pooled clone first sends a warm-up request (the agent's fixed strings,
no tenant input): we run WARM_SOURCE, set up the same way, and keep
waiting for the real request.  Under TCG each clone's QEMU translates guest code anew; the
warm-up has it translate the handler's paths, and has this process fault
in the memory a handler writes, before an event pays for either.
"""

import atexit
import builtins
import gc
import importlib.util
import io
import marshal
import os
import sys
import types
import warnings
from importlib.machinery import SourceFileLoader

import _io
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
WARM_MAGIC = 0x315A5957		# "WYZ1": the pool's warm-up
HDR_LEN = 12
MAX_REQUEST = 20 << 20		# more than PROTO_MAX_ENV entries can fill
MAX_CODE = 64 << 10		# PROTO_MAX_PAYLOAD: CODE is one message
# The header of a .pyc checked against its source by hash (PEP 552).
PYC_FLAGS = (0b11).to_bytes(4, "little")
NFDS = 5			# stdin, stdout, stderr, go, status
status_fd = -1			# the handler's exit status goes here
handler_pid = 0			# the process that may write it


def u32(b, off):
    return int.from_bytes(b[off:off + 4], "little")


def reply(sock, pid, err, code=b""):
    sock.sendall(pid.to_bytes(4, "little", signed=True) +
                 err.to_bytes(4, "little", signed=True) +
                 len(code).to_bytes(4, "little") + code)


def recv_request(sock):
    """Returns (warm, fds, strings, code), or None once the agent hung
    up."""
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
    magic, size, csize = u32(head, 0), u32(head, 4), u32(head, 8)
    warm = magic == WARM_MAGIC and csize == 0
    if not (magic == MAGIC or warm) or size > MAX_REQUEST or \
            csize > MAX_CODE or len(fds) != NFDS:
        raise ValueError("bad request: magic %x, %d+%d bytes, %d fds"
                         % (magic, size, csize, len(fds)))
    size += csize
    body = bytearray(size)
    view = memoryview(body)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ValueError("request cut short at %d bytes" % got)
        got += n
    code = bytes(body[size - csize:])
    strings = bytes(body[:size - csize]).split(b"\0")
    if len(strings) < 5 or strings[-1] != b"":
        raise ValueError("bad request strings")
    return warm, fds, strings[:-1], code


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
    if os.environ:
        os.environ.clear()
    # What os.environb's item assignment does (both views share _data),
    # without its three Python calls per entry: 2 ms under TCG.
    data, putenv = os.environ._data, os.putenv
    names = set()
    for e in entries:
        name, _, value = e.partition(b"=")
        putenv(name, value)
        data[name] = value
        names.add(name)
    # The template set up time and site without TZ and HOME; only these
    # change what they computed (the rest cost 5 ms under TCG).
    if b"TZ" in names:
        time.tzset()
    if b"HOME" in names:
        import site
        site.USER_BASE = site.USER_SITE = None
        site.getusersitepackages()


def set_comm(name):
    # os.open, not open(): a buffered file object costs 1 ms under TCG.
    try:
        fd = os.open("/proc/self/comm", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, name[:15])
    except OSError:
        pass
    os.close(fd)


def prepare(fds, strings):
    """Everything but the script itself.  The agent started us in a session
    of our own already."""
    exe, argv0, flag, script = (os.fsdecode(s) for s in strings[:4])
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


def read_source(path):
    """The bytes of PATH, through os.read: cheaper under TCG than a
    buffered file object."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        parts = []
        while True:
            part = os.read(fd, 1 << 16)
            if not part:
                return b"".join(parts)
            parts.append(part)
    finally:
        os.close(fd)


def load_code(script, source, cached):
    """The code of SCRIPT, or the exception python3 would have met reading
    or compiling it, and the .pyc to give the host (b"" for none).

    CACHED is what the host kept from an earlier event of this handler:
    used if it is a .pyc of these very bytes (compiling the checkout
    example took 12 ms under TCG, loading it 0.4 ms).  Compiled here, it
    is offered back unless compiling warned: python3 compiles a script on
    every run, so its warnings must show on every run too."""
    key = importlib.util.source_hash(source)
    head = importlib.util.MAGIC_NUMBER + PYC_FLAGS + key
    if len(cached) > len(head) and cached.startswith(head):
        # Whatever marshal makes of bad bytes (ValueError, EOFError,
        # MemoryError for a huge length...) means: compile instead.
        try:
            code = marshal.loads(memoryview(cached)[len(head):])
            if isinstance(code, types.CodeType):
                return code, b""
        except Exception:
            pass
    try:
        with warnings.catch_warnings(record=True) as shown:
            code = compile(source, script, "exec", dont_inherit=True)
    except Exception as e:
        return e, b""
    finally:
        for w in shown:
            warnings.showwarning(w.message, w.category, w.filename,
                                 w.lineno)
    if shown:
        return code, b""
    try:
        pyc = head + marshal.dumps(code)
    except ValueError:		# nested deeper than marshal goes
        return code, b""
    return code, b"" if len(pyc) > MAX_CODE else pyc


def serve(sock, fds, strings, cached):
    """Becomes the handler: set up, read and compile the script, report
    our pid, wait for go.  Returns the script and its code (or the
    exception to raise in its place), or exits."""
    try:
        script = prepare(fds, strings)
        try:
            code, pyc = load_code(script, read_source(script), cached)
        except OSError as e:
            code, pyc = e, b""
        reply(sock, os.getpid(), 0, pyc)
        go = os.read(fds[3], 1)
    except Exception as e:
        err = getattr(e, "errno", None) or 5
        reply(sock, 0, err)
        os._exit(127)
    if go != b"g":
        os._exit(127)
    global status_fd, handler_pid
    status_fd, handler_pid = fds[4], os.getpid()
    os.closerange(3, status_fd)
    os.closerange(status_fd + 1, 1 << 16)
    # Only this process reports its status: a child forked by the script
    # that ends through leave() must not speak for the handler.
    os.register_at_fork(after_in_child=forget_status)
    return script, code


def forget_status():
    global status_fd
    if status_fd >= 0:
        try:
            os.close(status_fd)
        except OSError:
            pass
    status_fd = -1


# What the warm-up runs: what webhook transforms commonly do, on a
# fixed body the agent writes to its stdin.  Tenant code never gets here.
# Under TCG the first compile of a script costs several times the second:
# the compiler's paths for each construct (functions, classes,
# comprehensions, try, with, f-strings...) are translated on first use.
# So the snippet is written to use the constructs handlers are made of,
# and is compiled from source here, as a handler's script is.
WARM_SOURCE = b"""\
#!/usr/bin/python3
'''A transform shaped like the handlers vmcgi runs.'''

import base64, datetime, hashlib, hmac, json, os, re, sys, urllib.parse
from collections import namedtuple

SECRET = b"warm-up"
SKIP = {"ping", "test", "noop"}
LIMITS = {"amount": (0, 10 ** 9), "items": (0, 100)}
Item = namedtuple("Item", "sku qty")


class Reject(Exception):
    '''The event is not one we take.'''

    def __init__(self, why, *, code=1):
        super().__init__(why)
        self.code = code


class Order:
    __slots__ = ("oid", "amount", "items")

    def __init__(self, oid, amount, items=()):
        self.oid, self.amount = oid, amount
        self.items = [Item(*i) if isinstance(i, (list, tuple))
                      else Item(str(i), 1) for i in items]

    @property
    def total_qty(self):
        return sum(i.qty for i in self.items)

    @staticmethod
    def money(minor, currency="eur"):
        sign = "-" if minor < 0 else ""
        return "%s%d.%02d %s" % (sign, abs(minor) // 100, abs(minor) % 100,
                                 currency.upper())

    def as_dict(self):
        return {"id": self.oid, "amount": self.money(self.amount),
                "skus": sorted({i.sku for i in self.items}),
                "qty": self.total_qty}


def verify(header, body, secret=SECRET):
    fields = dict(f.split("=", 1) for f in header.split(",") if "=" in f)
    stamp = fields.get("t", "0")
    want = hmac.new(secret, stamp.encode() + b"." + body,
                    hashlib.sha256).hexdigest()
    return hmac.compare_digest(fields.get("v1", ""), want), int(stamp)


def check(doc):
    for key, (lo, hi) in LIMITS.items():
        v = doc.get("data", {}).get(key)
        n = len(v) if isinstance(v, list) else v or 0
        if not lo <= n <= hi:
            raise Reject(f"{key} out of range: {n!r}", code=2)
    return doc


def main(argv=None):
    raw = sys.stdin.buffer.read()
    try:
        doc = check(json.loads(raw))
    except (ValueError, KeyError, TypeError) as e:
        print("not an event: %s" % e, file=sys.stderr)
        return 1
    except Reject as e:
        print(e, file=sys.stderr)
        return e.code
    if doc.get("type") in SKIP:
        return 0
    ok, stamp = verify(os.environ.get("HTTP_SIGNATURE", "t=1,v1=x"), raw)
    when = datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc)
    data = doc["data"]
    order = Order(doc.get("id", "?"), data.get("amount", 0),
                  [[str(n), n] for n in data.get("items", [])])
    words = [w.lower() for w in re.findall(r"\\w+", raw.decode()) if w]
    counts = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    out = dict(order.as_dict(), ok=ok, at=when.isoformat(), top=top,
               b64=base64.b64encode(raw[:12]).decode("ascii"),
               q=urllib.parse.parse_qs("a=1&b=2"),
               digest=hashlib.sha256(raw).hexdigest()[:16])
    with open(os.devnull, "w") as sink:
        sink.write(repr(out))
    i = 0
    while i < 3:
        i += 1
    try:
        pass
    finally:
        sys.stderr.write("warm\\n")
    print(json.dumps(out, default=str, sort_keys=True, indent=2))
    sys.stdout.write(f"{order.oid}: {len(words)} words\\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
"""


def warm(sock, fds, strings):
    """Runs WARM_SOURCE here, set up as a handler is with the agent's
    fixed STRINGS (an interpreter, a script path and a CGI-like
    environment), then puts our own stdio and empty environment back and
    answers.  Here and not in a child: pages written after a fork fault
    again (write-protected) in the parent, and those faults, not the
    interpreter, were most of a handler's time under TCG.  What it leaves
    behind is fixed, never tenant input."""
    saved = [os.dup(i) for i in range(3)]
    err = 0
    try:
        prepare(fds, strings)
        # A handler's way to its code, both of them: read (any file will
        # do), compiled, then loaded from the .pyc that compiling made.
        read_source(__file__)
        script = os.fsdecode(strings[3])
        code, pyc = load_code(script, WARM_SOURCE, b"")
        if pyc:
            code, _ = load_code(script, WARM_SOURCE, pyc)
        run(script, code)
    except SystemExit as e:
        err = 0 if exit_status(e) == 0 else 5	# EIO: the snippet failed
    except Exception:
        err = 5
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:
            err = 5
    for i in range(3):
        os.dup2(saved[i], i)
    for fd in saved + fds:
        os.close(fd)
    os.environ.clear()
    gc.collect()
    gc.freeze()
    reply(sock, 0, err)


def zygote():
    """Serves requests until the agent hangs up.  Returns the script of
    the one it becomes the handler for, and its code."""
    sock = _socket.socket(fileno=SOCK_FD)
    reply(sock, 0, 0)
    # Objects made so far live as long as we do: keep the collector off
    # their pages.
    gc.freeze()
    while True:
        req = recv_request(sock)
        if req is None:
            os._exit(0)
        is_warm, fds, strings, cached = req
        if is_warm:
            warm(sock, fds, strings)
            continue
        return serve(sock, fds, strings, cached)


def main_module(script):
    """A fresh __main__ laid out as CPython lays it out for a script."""
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


def run(script, code):
    """Runs CODE, the script's, as __main__; CODE may instead be what
    reading or compiling the script raised.  SystemExit goes up to
    CPython."""
    mod = main_module(script)
    try:
        if isinstance(code, BaseException):
            raise code.with_traceback(None)
        exec(code, mod.__dict__)
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


def exit_status(exc):
    """The status CPython exits with for an uncaught SystemExit."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        # (int)PyLong_AsLong(code): -1 when it does not fit in a long.
        if not -(1 << 63) <= code < (1 << 63):
            return 255
        return code & 0xff
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1


def flush_files():
    """Flushes the files the script left open, as their finalizers would
    have while CPython tore the interpreter down.  The zygote's own objects
    are frozen, out of get_objects' sight: this sees the script's.  The
    C base class, not the io.IOBase ABC: it is what carries the finalizer,
    and an ABC check per object took 3 ms of 4 under TCG."""
    for f in gc.get_objects():
        if isinstance(f, _io._IOBase) and f not in (sys.stdout, sys.stderr):
            try:
                if not f.closed and f.writable():
                    f.flush()
            except Exception:
                pass


def leave(status):
    """Ends the handler as CPython's finalization would, as far as anyone
    can tell from outside, without tearing down every object: under TCG
    that teardown took 20-40 ms of a 100 ms event, for a process whose VM
    is destroyed next."""
    if "threading" in sys.modules:
        sys.modules["threading"]._shutdown()
    atexit._run_exitfuncs()
    # CPython's order: sys.stdout and sys.stderr (skipped when closed),
    # then, while it tears modules down, the files left open.
    for f in (sys.stdout, sys.stderr):
        try:
            if f is not None and not f.closed:
                f.flush()
        except Exception:
            if f is sys.stdout:
                status = 120
    flush_files()
    # The agent takes the status from here, stdio closed, and sends EXIT
    # while the kernel tears this process's memory down: at the lowest
    # priority, so that the agent, woken, runs first on the one vCPU.
    if status_fd >= 0 and os.getpid() == handler_pid:
        for fd in (0, 1, 2):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.nice(19)
            os.write(status_fd, status.to_bytes(4, "little"))
        except OSError:
            pass
    os._exit(status)


try:
    run(*zygote())
    status = 0
except SystemExit as e:
    status = exit_status(e)
leave(status)
