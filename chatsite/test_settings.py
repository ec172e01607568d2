"""Settings for the test suite: development mode unless a test asks for production.

The suite must not depend on the shell that runs it. Tests that start Daphne in production
mode pass `DJANGO_DEBUG=0` to that process, which is why this is a default, not a force.
"""

import os

os.environ.setdefault("DJANGO_DEBUG", "1")

from chatsite.settings import *  # noqa: F403
