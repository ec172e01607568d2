"""Settings for the test suite: development mode unless a test asks for production.

The suite must not depend on the shell that runs it. Tests that start Daphne in production
mode pass `DJANGO_DEBUG=0` to that process, which is why this is a default, not a force.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("DJANGO_DEBUG", "1")

# One spool directory per test run, not the shared var/spool: a reply an earlier run left
# spooled would otherwise be replayed at the start of a later one. The run's first process
# makes it and removes it at exit; the Daphne processes it starts inherit it (they load these
# settings too, and must share the directory, not make their own).
if os.environ.get("CHATSITE_TEST_SPOOL_OWNER") is None:
    os.environ["CHATSITE_TEST_SPOOL_OWNER"] = str(os.getpid())
    os.environ["CHAT_SPOOL_DIR"] = tempfile.mkdtemp(prefix="chatsite-test-spool-")
    atexit.register(shutil.rmtree, os.environ["CHAT_SPOOL_DIR"], ignore_errors=True)

from chatsite.settings import *  # noqa: F403
