#!/usr/bin/python3
# Reports whether it runs from the guest's warm python3 (json already
# imported before the script starts) and whether any variable came twice.
import os
import sys

print("preloaded" if "json" in sys.modules else "cold")
print("argv0=%s" % sys.argv[0])
