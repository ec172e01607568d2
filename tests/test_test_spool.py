"""The suite's spool: one directory per test run, shared by this process and the Daphne
processes it starts, so a reply spooled by an earlier run is never replayed in a later one."""

import tempfile
from pathlib import Path

from django.conf import settings

from tests.conftest import DaphneServer
from tests.upstream_server import FakeUpstream


def test_the_suite_spools_to_a_directory_of_its_own_run_and_daphne_gets_it(
    upstream: FakeUpstream,
) -> None:
    spool = Path(settings.CHAT_SPOOL_DIR)

    assert spool != settings.BASE_DIR / "var" / "spool"
    assert spool.is_dir()
    assert spool.resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())
    assert DaphneServer(upstream=upstream).env["CHAT_SPOOL_DIR"] == str(spool)
    # What a test asks for still wins.
    asked = DaphneServer(upstream=upstream, extra_env={"CHAT_SPOOL_DIR": "/elsewhere"})
    assert asked.env["CHAT_SPOOL_DIR"] == "/elsewhere"
