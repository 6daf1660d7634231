#!/usr/bin/python3
# Search the guest file system for byte strings given hex-encoded in the
# body (so that they appear nowhere in plain form unless something leaked).
# A control string is written to /tmp first: finding it shows the search
# works.
import json
import os
import sys

req = json.load(sys.stdin)
needles = [bytes.fromhex(h) for h in req["needles_hex"]]
control = bytes.fromhex(req["control_hex"])
with open("/tmp/alpha-control", "wb") as f:
    f.write(b"control: " + control + b"\n")

skip = ("/proc", "/sys", "/dev")
found = {n.decode(): [] for n in needles}
found_control, files, unreadable, total = [], 0, 0, 0
for root, dirs, names in os.walk("/", followlinks=False):
    if root.startswith(skip):
        dirs[:] = []
        continue
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in skip]
    for name in names:
        path = os.path.join(root, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as f:
                data = f.read(64 << 20)
        except OSError:
            unreadable += 1
            continue
        files += 1
        total += len(data)
        for n in needles:
            if n in data:
                found[n.decode()].append(path)
        if control in data:
            found_control.append(path)
json.dump({"found": found, "control": found_control, "files": files,
           "unreadable": unreadable, "bytes": total}, sys.stdout)
