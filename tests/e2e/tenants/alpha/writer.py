#!/usr/bin/python3
# Report files an earlier event left behind, then leave some ourselves.
import json
import os
import pwd
import sys

token = sys.stdin.read().strip() or "none"
home = os.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
dirs = ["/tmp", "/var/tmp", "/dev/shm", home, os.getcwd()]
found, wrote = [], []
for d in dirs:
    try:
        names = os.listdir(d)
    except OSError:
        continue
    found += [os.path.join(d, n) for n in names if n.startswith("e2e-left")]
for d in dirs:
    path = os.path.join(d, "e2e-left-" + token)
    try:
        with open(path, "w") as f:
            f.write(token)
        wrote.append(path)
    except OSError:
        pass
json.dump({"found": sorted(set(found)), "wrote": wrote, "home": home},
          sys.stdout)
