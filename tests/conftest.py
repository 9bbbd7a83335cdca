"""Set-up for every test session."""

import os

# pytest-xdist's workers inherit COLUMNS=80 and LINES=24 from execnet, and the CLI subprocesses the tests start
# would fold their tables to that width; a test that wants a width sets COLUMNS in the subprocess's env itself.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)
