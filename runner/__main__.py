"""`python -m runner` is the `runner` command."""

import os
import sys

# `-m` puts the working directory first on sys.path, where a job repository's `click.py` or
# `psycopg2.py` would replace the real module; targets find their packages without it.
if sys.path and not sys.flags.safe_path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from runner.cli import main

main()
