"""report.py: the Markdown page of one bench/run.py run."""

import statistics

SYSTEMS = [
    ("vmcgi-pool", "vmcgi, warm pool (pool_size 2), via nginx"),
    ("vmcgi-od", "vmcgi, pool_size 0 (restore per event), via nginx"),
    ("cold", "cold boot of a microVM per event, driven directly"),
    ("gvisor", "gVisor runsc, ptrace, no network, driven directly"),
    ("fcgiwrap", "fcgiwrap via nginx, script on the host (the floor)"),
]
PEERS = ("cold", "gvisor", "fcgiwrap")
HANDLERS = {"shell": "shell", "checkout": "python3 checkout"}


def ms(x):
    if x is None:
        return "-"
    return "%.0f" % (x * 1000) if x >= 0.01 else "%.1f" % (x * 1000)


def ratio(peer, ours):
    if peer is None or not ours:
        return None
    return peer / ours


def fr(r):
    if r is None:
        return "-"
    return "%.1f×" % r if r >= 1 else "%.2f×" % r


def find(cells, system, handler, conc, kind=None):
    for c in cells:
        if (c.system, c.handler, c.conc) == (system, handler, conc) and \
                getattr(c, "kind", None) == kind:
            return c
    return None


def stat(cell, key, p):
    return cell.stat(key, p) if cell else None


def median(xs):
    return statistics.median(xs) if xs else None


def p99(xs):
    return sorted(xs)[-1] if xs else None


def latency_table(cells):
    out = ["| system | handler | c | ok / errors | first byte p50 | "
           "p99 | complete p50 | p99 | events/s | load |",
           "|---|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for system, _ in SYSTEMS:
        for handler in HANDLERS:
            for conc in (1, 4):
                c = find(cells, system, handler, conc)
                if c is None:
                    continue
                eps = c.eps()
                out.append("| %s | %s | %d | %d / %d%s | %s | %s | %s | %s "
                           "| %s | %s |" % (
                               system, HANDLERS[handler], conc,
                               len(c.ok()), len(c.errors),
                               " (%s)" % c.note if c.note else "",
                               ms(c.stat("ttfb", 50)),
                               ms(c.stat("ttfb", 99)),
                               ms(c.stat("done", 50)),
                               ms(c.stat("done", 99)),
                               "%.1f" % eps if eps else "-",
                               "-".join("%.1f" % x for x in c.load)))
    return out


def ratio_table(cells, key, p):
    out = ["| vmcgi | handler | c | vmcgi ms | cold boot | gVisor | "
           "fcgiwrap |", "|---|---|--:|--:|--:|--:|--:|"]
    for system in ("vmcgi-pool", "vmcgi-od"):
        for handler in HANDLERS:
            for conc in (1, 4):
                c = find(cells, system, handler, conc)
                if c is None:
                    continue
                ours = c.stat(key, p)
                row = [fr(ratio(stat(find(cells, peer, handler, conc),
                                     key, p), ours)) for peer in PEERS]
                out.append("| %s | %s | %d | %s | %s |" % (
                    system, HANDLERS[handler], conc, ms(ours),
                    " | ".join(row)))
    return out


def breakdown(cells):
    out = ["| vmcgi | handler | c | pooled / fresh | code given / compiled "
           "| client first byte "
           "| vmcgi first byte | restore (load) | resume + HELLO | "
           "vmcgi total | nginx + FastCGI |",
           "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for system in ("vmcgi-pool", "vmcgi-od"):
        for handler in HANDLERS:
            for conc in (1, 4):
                c = find(cells, system, handler, conc)
                vm = getattr(c, "vm", None) if c else None
                if not vm:
                    continue
                pooled = sum(1 for r in vm if r["vm"] == "pool")
                given = sum(1 for r in vm if r.get("code") == "given")
                made = sum(1 for r in vm if r.get("code") in
                           ("kept", "not-kept"))
                fb = median([r["first_byte_ms"] for r in vm
                             if r["first_byte_ms"] >= 0])
                load = median([r["load_ms"] for r in vm
                               if r["vm"] == "fresh"])
                resume = median([r["resume_ms"] for r in vm])
                total = median([r["ms"] for r in vm])
                client = c.stat("ttfb", 50)
                over = client * 1000 - fb if client and fb else None
                out.append("| %s | %s | %d | %d / %d | %s | %s | %s | %s "
                           "| %s | %s | %s |" % (
                               system, HANDLERS[handler], conc, pooled,
                               len(vm) - pooled,
                               "%d / %d" % (given, made) if given or made
                               else "-", ms(client),
                               "%.0f" % fb if fb is not None else "-",
                               "%.0f" % load if load is not None else "-",
                               "%.0f" % resume if resume is not None
                               else "-",
                               "%.0f" % total if total is not None else "-",
                               "%.0f" % over if over is not None else "-"))
    return out


def vm_times(b, cells):
    f = b.facts
    rows = []
    fresh = [r for rs in b.runs.get("vmcgi-od", {}).values() for r in rs
             if r["vm"] == "fresh"]
    pooled = [r for rs in b.runs.get("vmcgi-pool", {}).values() for r in rs
              if r["vm"] == "pool"]
    if fresh:
        loads = [r["load_ms"] for r in fresh]
        res = [r["resume_ms"] for r in fresh]
        both = [r["load_ms"] + r["resume_ms"] for r in fresh]
        rows.append("| restore one clone: QEMU start to state loaded "
                    "(vmcgi log, pool_size 0) | %.0f | %.0f | %d |"
                    % (median(loads), p99(loads), len(loads)))
        rows.append("| then cont to READY(nonce) | %.0f | %.0f | %d |"
                    % (median(res), p99(res), len(res)))
        rows.append("| restore one clone, QEMU start to READY(nonce) "
                    "| %.0f | %.0f | %d |" % (median(both), p99(both),
                                              len(both)))
    if pooled:
        res = [r["resume_ms"] for r in pooled]
        rows.append("| take a pooled clone: cont to READY(nonce) "
                    "| %.0f | %.0f | %d |" % (median(res), p99(res),
                                              len(res)))
    cold = [s for c in cells if c.system == "cold" and c.conc == 1
            for s in c.ok()]
    if cold:
        boot = [s["boot"] * 1000 for s in cold]
        ready = [s["ready"] * 1000 for s in cold]
        rows.append("| cold boot one microVM: QEMU start to READY(0) "
                    "(c=1) | %.0f | %.0f | %d |" % (median(boot), p99(boot),
                                                    len(boot)))
        rows.append("| cold boot one microVM: QEMU start to READY(nonce) "
                    "(c=1) | %.0f | %.0f | %d |" % (median(ready),
                                                    p99(ready), len(ready)))
    if "template boot ms" in f:
        rows.append("| vmcgi template boot to snapshot (once) | %d | - | 1 |"
                    % f["template boot ms"])
    if not rows:
        return []
    return ["| what | median ms | p99 (max) ms | n |",
            "|---|--:|--:|--:|"] + rows


def targets(cells):
    def get(system, handler, key, conc=1):
        return stat(find(cells, system, handler, conc), key, 50)

    warm = get("vmcgi-pool", "shell", "ttfb")
    rows = [
        ("warm-pool first byte, shell, vs cold boot", 20,
         ratio(get("cold", "shell", "ttfb"), warm)),
        ("warm-pool first byte, shell, vs restore on demand", 3,
         ratio(get("vmcgi-od", "shell", "ttfb"), warm)),
        ("warm-pool first byte, shell, vs gVisor", 3,
         ratio(get("gvisor", "shell", "ttfb"), warm)),
        ("warm-pool completion, python3 checkout, vs gVisor", 5,
         ratio(get("gvisor", "checkout", "done"),
               get("vmcgi-pool", "checkout", "done"))),
    ]
    out = ["| target (c=1, medians) | wanted | measured | |",
           "|---|--:|--:|---|"]
    for what, want, got in rows:
        out.append("| %s | ≥%d× | %s | %s |" % (
            what, want, fr(got), "-" if got is None else
            ("PASS" if got >= want else "MISS")))
    bad = []
    for system in ("vmcgi-pool", "vmcgi-od"):
        for handler in HANDLERS:
            c = find(cells, system, handler, 4)
            if c is not None:
                bad.append((system, handler, len(c.errors), len(c.samples)))
    if bad:
        errs = sum(x[2] for x in bad)
        out.append("| no event lost or 5xx at c=4 (below saturation) | 0 "
                   "| %d of %d | %s |" % (errs, sum(x[3] for x in bad),
                                          "PASS" if errs == 0 else "MISS"))
    return out


def saturation(cells):
    rows = [c for c in cells if getattr(c, "kind", None) == "saturation"]
    if not rows:
        return []
    out = ["| vmcgi warm pool, shell, closed loop | events/s | ok / errors "
           "| complete p50 ms | p99 ms |", "|---|--:|--:|--:|--:|"]
    for c in rows:
        eps = c.eps()
        out.append("| c=%d, %s | %s | %d / %d | %s | %s |" % (
            c.conc, c.note, "%.1f" % eps if eps else "-", len(c.ok()),
            len(c.errors), ms(c.stat("done", 50)), ms(c.stat("done", 99))))
    best = max((c.eps() or 0, c.conc) for c in rows)
    out += ["", "Events per second at saturation: **%.1f** (c=%d)."
            % best]
    return out


def memory(f):
    if "pss per idle clone kB" not in f:
        return []
    out = ["| idle pooled clone (QEMU child of vmcgi, smaps_rollup) | MB |",
           "|---|--:|",
           "| PSS per clone (median of %d) | %.1f |"
           % (f["pool clones measured"], f["pss per idle clone kB"] / 1024)]
    for k, what in (("pss_anon per clone kB", "of which anonymous"),
                    ("pss_file per clone kB", "of which file-backed"),
                    ("pss_shmem per clone kB", "of which shmem")):
        if k in f:
            out.append("| %s | %.1f |" % (what, f[k] / 1024))
    out.append("| PSS of the whole pool (%d clones) | %.1f |"
               % (f["pool clones measured"], f["pss pool total kB"] / 1024))
    out.append("| RSS per clone, for comparison | %.1f |"
               % (f["rss per idle clone kB"] / 1024))
    return out


def render(b, cells, stopped, problems):
    f = b.facts
    L = ["# Benchmark: vmcgi against its peers",
         "",
         "Written by `make bench` (bench/run.py); these are the figures of "
         "the last run. Times in milliseconds unless marked. Ratios are "
         "the peer's time divided by vmcgi's: above 1× vmcgi is faster.",
         "",
         "## Machine",
         "",
         "| | |", "|---|---|",
         "| date | %s |" % f.get("date", "-"),
         "| CPU | %s, %s cores |" % (f.get("cpu", "-"), f.get("cores", "-")),
         "| kernel | %s |" % f.get("kernel", "-"),
         "| vmcgi | %s%s; initramfs %s |" % (
             f.get("commit", "-"), " (work tree with changes)" if
             f.get("dirty") else "", f.get("initrd", "-")),
         "| QEMU | %s |" % f.get("qemu", "-"),
         "| accelerator | %s (%s) |" % (f.get("accel", "-"),
                                        f.get("accel why", "-")),
         "| guest | %s RAM, 1 vCPU, Debian cloud kernel, busybox + "
         "python3.11 initramfs |" % f.get("memory", "-"),
         "| gVisor | %s, --platform=ptrace --network=none "
         "--ignore-cgroups |" % f.get("runsc", "-"),
         "| nginx, fcgiwrap | %s, fcgiwrap %s |" % (f.get("nginx", "-"),
                                                    f.get("fcgiwrap", "-")),
         "| load average at start | %s (other sessions may run QEMU "
         "here) |" % f.get("loadavg at start", "-"),
         "| wall time of the run | %s s |" % f.get("wall time s", "-"),
         ""]
    if stopped:
        L += ["**Run incomplete: %s.**" % stopped, ""]
    if problems:
        L += ["Cleanup problems: %s" % "; ".join(problems), ""]
    L += ["## Targets (issue 3)", ""] + targets(cells) + [""]
    L += ["## Latency", "",
          "Request to first body byte and to the complete response, "
          "seen by a client on loopback. At c=1 the systems take turns, "
          "one event each, so the load that others put on this shared "
          "machine falls on all of them alike; at c=4 each system runs a "
          "closed loop of 4 threads, one system right after the other. "
          "p99 is by nearest rank: with fewer than 100 samples it is the "
          "slowest sample. events/s is ok events over the cell's time "
          "(at c=1, over the sum of its events' times). load is the "
          "1-minute load average at the cell's start and end (2 cores).",
          ""]
    L += ["| system | what |", "|---|---|"]
    L += ["| %s | %s |" % s for s in SYSTEMS] + [""]
    L += latency_table(cells) + [""]
    L += ["## vmcgi as a ratio to its peers", "",
          "First byte, median:", ""] + ratio_table(cells, "ttfb", 50)
    L += ["", "First byte, p99:", ""] + ratio_table(cells, "ttfb", 99)
    L += ["", "Completion, median:", ""] + ratio_table(cells, "done", 50)
    L += ["", "Completion, p99:", ""] + ratio_table(cells, "done", 99)
    L += [""]
    sat = saturation(cells)
    if sat:
        L += ["## Saturation", "",
              "Beyond max_vms (%d) events wait for a slot, up to "
              "queue_timeout (2 s), then get 503." % b.max_vms, ""]
        L += sat + [""]
    vt = vm_times(b, cells)
    if vt:
        L += ["## Restore, resume and boot", ""] + vt + [""]
    bd = breakdown(cells)
    if len(bd) > 2:
        L += ["## Where vmcgi's time goes (medians, ms)", "",
              "From vmcgi's log line per request: its first byte is "
              "counted from the request's start in vmcgi; load is "
              "QEMU start to state loaded (fresh clones only); resume is "
              "cont to READY(nonce); code given / compiled counts the "
              "python3 events whose script came from vmcgi's code cache "
              "and those whose guest compiled it (log: code=given, "
              "code=kept); the rest of vmcgi's first byte is "
              "the guest running the handler up to its first write "
              "(exec, interpreter start, TCG translation). nginx + "
              "FastCGI is the client's first byte minus vmcgi's.", ""]
        L += bd + [""]
    mem = memory(f)
    if mem:
        L += ["## Memory of the warm pool", ""] + mem + [""]
    L += ["## How it was measured", "",
          "- Both vmcgi run at once, each in the same network namespace "
          "with only lo, behind the same nginx on 127.0.0.1 (prefixes "
          "/hooks and /od, one unix socket each); the second reuses the "
          "first one's snapshot. Idle paused clones use no CPU.",
          "- vmcgi has %d workers and max_vms %d: with workers = max_vms "
          "= 4, a closed loop at c=4 met 503 \"every worker is busy\" "
          "(a worker still reaps the VM of a response its client already "
          "has when the next request comes), so more workers than VMs "
          "let an event wait for a slot instead." % (b.workers, b.max_vms),
          "- The shell handler is `echo ok`; the python3 handler is "
          "examples/tenants/acme/checkout.py fed "
          "examples/events/stripe-checkout-completed.json with its "
          "headers; every response is checked (body, signature_ok).",
          "- Each system's first event per handler is not measured (page "
          "cache, first exec). For vmcgi it is also the one whose guest "
          "compiles the python3 script; the measured events run it from "
          "vmcgi's code cache (code_cache = yes, the default; "
          "docs/architecture.md), as every event after a handler's first "
          "does in service.",
          "- Cold boot and gVisor have no web server in front: the "
          "driver spawns QEMU (tests/agent_test.py's recipe, share=off, "
          "no -incoming, READY(0), HELLO, the event) or `runsc run` and "
          "times stdout; the HTTP hop they skip is worth about what the "
          "fcgiwrap rows show.",
          "- gVisor's rootfs is a read-only copy of build/guest/root with "
          "a tmpfs /tmp; the handler runs as uid 1000 with the CGI "
          "variables and the body on stdin.",
          "- fcgiwrap runs as www-data with %s children; its CGI wrapper "
          "prints the header block and execs the same handler file "
          "(the host's /bin/sh is dash, the guest's busybox)."
          % "4",
          ""]
    return "\n".join(L)
