#!/usr/bin/env python3
"""bench/ab.py [options] A_BUILD B_BUILD: an A/B run of two vmcgi builds.

For one handler (the python3 checkout by default), runs both builds side
by side behind one nginx on 127.0.0.1 in a namespace with lo only, each
with a warm pool, and sends events one at a time: a round is N events
to each, A and B taking turns event by event (which goes first
alternates), so that the load other sessions put on the machine falls
on both alike.  Before each event it waits until both pools are full
and idle (their refills restore and warm clones at nice 10, which would
otherwise run during the event).  Prints the completion and first-byte
medians and p90 per round and over all rounds.  Much lighter than
bench/run.py (make bench): no gVisor, no cold boots, no concurrency.
Everything it starts is stopped by pid; the namespace and temporary
directory are removed.  Run as root.

Handlers: checkout (examples/tenants/acme/checkout.py with the Stripe
event, as make bench sends it), shell (echo ok), and faults: a python3
handler that times, inside the guest, writing 16 MB of fresh anonymous
memory in 4 KB pages (page faults and the copy) and writing it again
(the copy alone), and prints both; the difference is what the guest's
page faults cost.

A build is a directory holding vmcgi and guest/{vmlinuz,initrd.img}, as
`make all image` leaves them under build/.
"""

import argparse
import json
import os
import signal
import statistics
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench  # noqa: E402  bench/run.py: nginx, vmcgi, the client

# No transparent huge pages: one fault per 4 KB page.  A private
# anonymous mapping (Python's default for -1 is a shared one, shmem).
FAULTS_SCRIPT = b"""#!/usr/bin/python3
import json, mmap, time
n = 16 << 20
data = b"x" * n
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE)
m.madvise(mmap.MADV_NOHUGEPAGE)
t0 = time.perf_counter()
m.write(data)
t1 = time.perf_counter()
m.seek(0)
m.write(data)
t2 = time.perf_counter()
print(json.dumps({"first_ms": (t1 - t0) * 1e3, "again_ms": (t2 - t1) * 1e3}))
"""


class Vmcgi(bench.Vmcgi):
    """bench/run.py's vmcgi, with the faults handler registered too."""

    def ini_text(self):
        return super().ini_text() + (
            "\n[handler bench/faults]\nscript = faults.py\n"
            "timeout = 30s\ncontent_type = application/json\n")


def sample(port, path, handler, body, headers):
    """One event; bench/run.py's sample dict, for faults with fault_ms
    (the guest's time for the page faults of 16 MB) and first_ms."""
    if handler != "faults":
        return bench.http_sample(port, path, handler, body, headers)
    r = bench.http_post(port, path, body, headers)
    try:
        j = json.loads(r["body"])
        ok = r["status"] == 200 and r["complete"]
    except ValueError:
        j, ok = {}, False
    return {"ok": ok, "ttfb": r["ttfb"], "done": r["done"],
            "status": r["status"],
            "fault_ms": j.get("first_ms", 0) - j.get("again_ms", 0),
            "first_ms": j.get("first_ms"),
            "error": None if ok else "status %s body %r" %
            (r["status"], r["body"][:80])}


def cpu_ticks(pid):
    """utime + stime of PID (all its threads), or 0 if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(rest[11]) + int(rest[12])


def wait_idle(vms, timeout=60, window=0.3):
    """Until every vmcgi of VMS has pool_size QEMU children and none of
    them (nor vmcgi) used more than one tick of CPU over WINDOW seconds:
    paused clones run nothing.  Returns the seconds waited."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        pids = []
        full = True
        for vm in vms:
            q = vm.track()
            full = full and len(q) == vm.pool_size
            pids += [vm.proc.pid] + list(q)
        if full:
            before = sum(cpu_ticks(p) for p in pids)
            time.sleep(window)
            if sum(cpu_ticks(p) for p in pids) - before <= 1:
                return time.monotonic() - t0
        else:
            time.sleep(0.1)
    bench.log("pools not idle after %d s; going on" % timeout)
    return time.monotonic() - t0


def stats(xs, scale=1000):
    """Median and p90 of XS (seconds; or ms with SCALE 1)."""
    if not xs:
        return "-"
    return "median %5.1f  p90 %5.1f  (ms, n=%d)" % (
        statistics.median(xs) * scale, bench.percentile(xs, 90) * scale,
        len(xs))


def paired(pairs, key="done", scale=1000):
    """B minus A over the events sent back to back: median, and in how
    many pairs B was the faster."""
    d = [(sb[key] - sa[key]) * scale for sa, sb in pairs
         if sa["ok"] and sb["ok"]]
    if not d:
        return "-"
    return "B-A median %+5.1f ms, B faster in %d of %d" % (
        statistics.median(d), sum(1 for x in d if x < 0), len(d))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a", help="build directory of variant A")
    ap.add_argument("b", help="build directory of variant B")
    ap.add_argument("-n", type=int, default=30,
                    help="events per round and variant")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--handler", default="checkout",
                    choices=("checkout", "shell", "faults"))
    ap.add_argument("--pool-size", type=int, default=bench.POOL_SIZE)
    ap.add_argument("--json", metavar="FILE",
                    help="write every sample there, by round and pair")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("ab: run as root (namespace, nginx)")

    def on_signal(sig, frame):
        raise KeyboardInterrupt("signal %d" % sig)

    signal.signal(signal.SIGTERM, on_signal)
    bench.become_subreaper()
    # bench/run.py's set-up, with its two vmcgi replaced by A and B: each
    # with its own build, directory and snapshot (reused between rounds),
    # A behind /hooks and B behind /od.  No fcgiwrap: its location in
    # nginx names a socket that does not exist and is never used.
    b = bench.Bench(args.a)
    b.fcgi_sock = os.path.join(b.tmp, "no-fcgiwrap.sock")
    variants = []
    for label, build, prefix in (("A", args.a, "/hooks"),
                                 ("B", args.b, "/od")):
        d = os.path.join(b.tmp, label)
        os.makedirs(d)
        os.chmod(d, 0o755)
        env = types.SimpleNamespace(tmp=d, build=os.path.abspath(build),
                                    ns=b.ns, port=None,
                                    handlers=b.handlers)
        variants.append((label, Vmcgi(env, "vmcgi-" + label, prefix,
                                      args.pool_size)))
    b.pool, b.od = variants[0][1], variants[1][1]
    vms = [vm for _, vm in variants]
    if args.handler == "checkout":
        body, headers = b.body, b.headers
    else:
        body, headers = b"ping", {"Content-Type": "text/plain"}

    def event(vm):
        wait_idle(vms)
        return bench.safe(lambda: sample(
            b.port, vm.prefix + "/bench/" + args.handler, args.handler,
            body, headers))

    rounds = []         # per round: [(sample of A, sample of B)]
    problems = []
    try:
        for label, vm in variants:
            bench.log("%s: %s, initrd %d bytes" % (
                label, vm.b.build, os.path.getsize(os.path.join(
                    vm.b.build, "guest", "initrd.img"))))
        b.write_handlers()
        with open(os.path.join(b.handlers, "faults.py"), "wb") as f:
            f.write(FAULTS_SCRIPT)
        os.chmod(os.path.join(b.handlers, "faults.py"), 0o755)
        b.make_netns()
        b.start_nginx()
        for label, vm in variants:
            vm.b.port = b.port
            vm.start()
        for label, vm in variants:      # unmeasured: first take, caches
            s = event(vm)
            if not s["ok"]:
                bench.log("%s warm-up event failed: %s" % (label,
                                                           s["error"]))
        for rnd in range(args.rounds):
            # The variants take turns event by event, the one that goes
            # first changing every pair, so that a burst of load from
            # elsewhere falls on both alike.
            wait_idle(vms)              # earlier log lines are written
            load0 = bench.load1()
            marks = [vm.size() for vm in vms]
            pairs = []
            for i in range(args.n):
                if (rnd + i) % 2 == 0:
                    sa = event(vms[0])
                    sb = event(vms[1])
                else:
                    sb = event(vms[1])
                    sa = event(vms[0])
                pairs.append((sa, sb))
            rounds.append(pairs)
            wait_idle(vms)              # the last log line is written
            load = "load %.1f-%.1f" % (load0, bench.load1())
            for k, (label, vm) in enumerate(variants):
                ss = [p[k] for p in pairs]
                ok = [s for s in ss if s["ok"]]
                facts = bench.vmcgi_facts(vm.since(marks[k])).get(
                    args.handler, [])
                # vmcgi's take: cont to READY of the HELLO.
                take = [x["resume_ms"] for x in facts if x["vm"] == "pool"]
                line = "round %d %s: done %s | ttfb %s | take %s | " \
                    "%d errors, %d/%d pooled, %s" % (
                        rnd + 1, label, stats([s["done"] for s in ok]),
                        stats([s["ttfb"] for s in ok]), stats(take, 1),
                        len(ss) - len(ok), len(take), len(facts), load)
                if args.handler == "faults":
                    line += " | guest fault time for 16 MB %s" % stats(
                        [s["fault_ms"] for s in ok], 1)
                bench.log(line)
                if len(ok) < len(ss):
                    bench.log("  first error: %s" % [
                        s for s in ss if not s["ok"]][0]["error"])
            bench.log("round %d: %s" % (rnd + 1, paired(pairs)))
    except KeyboardInterrupt as e:
        bench.log("interrupted (%s)" % e)
    finally:
        try:
            problems = b.teardown()
        except Exception as e:
            problems = ["teardown: %s" % e]
    for p in problems:
        bench.log("cleanup problem: %s" % p)
    print("\n%s, %d events per round and variant, completion at the "
          "client:" % (args.handler, args.n))
    for rnd, pairs in enumerate(rounds):
        print("  round %d: A %s" % (rnd + 1, stats(
            [a["done"] for a, _ in pairs if a["ok"]])))
        print("           B %s" % stats(
            [b_["done"] for _, b_ in pairs if b_["ok"]]))
        print("           %s" % paired(pairs))
    every = [p for pairs in rounds for p in pairs]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rounds, f, default=repr)
    print("  all:     A %s" % stats([a["done"] for a, _ in every
                                     if a["ok"]]))
    print("           B %s" % stats([b_["done"] for _, b_ in every
                                     if b_["ok"]]))
    print("           %s" % paired(every))
    if args.handler == "faults":
        print("  guest time for the faults of 16 MB: A %s" % stats(
            [a["fault_ms"] for a, _ in every if a["ok"]], 1))
        print("                                      B %s" % stats(
            [b_["fault_ms"] for _, b_ in every if b_["ok"]], 1))
        print("           %s" % paired(every, "fault_ms", 1))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
