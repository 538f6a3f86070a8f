#!/usr/bin/env python3
"""Delete stored objects that no blob row refers to (left by a crash between push and commit).

Safe while the server runs. Uses the server's settings (environment / .env), e.g.
    DATA_DIR=/srv/satellite scripts/gc_orphans.py --dry-run
Same as `satellite gc-orphans`.
"""

import sys

from satellite.__main__ import main

if __name__ == "__main__":
    main(["gc-orphans", *sys.argv[1:]])
