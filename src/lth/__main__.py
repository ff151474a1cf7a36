import os
import sys

from .cli import main

code = main()
# Skip interpreter teardown (~1 s with torch loaded): every output is written and renamed
# into place before main() returns, and nothing registered at exit matters here.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
