"""What the upstream, the load generators and the checker must agree on: the reply a spec asks
for, token by token, and small helpers (percentiles, ports, /proc readings)."""

import math
import os
import random
import re
import socket
import time

# Tokens with everything that could go wrong on the way: HTML specials (escaping), quotes,
# non-ASCII (JSON \u escapes, UTF-8), an astral-plane emoji (surrogate pairs), newlines.
VOCAB = (
    "The",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " the",
    " lazy",
    " dog",
    ".",
    ",",
    "\n",
    "\n\n",
    " <b>",
    "</b>",
    " a&b",
    " x<y>z",
    ' "quoted"',
    " it's",
    " café",
    " naïve",
    " 日本語",
    " 🚀",
    " **bold**",
    " `code`",
    " -",
    " 42",
    " &amp;",
    "\t",
)

SPEC_RE = re.compile(r"bench n=(\d+) iv=([0-9.]+) ttft=([0-9.]+) seed=(\d+)")


def spec_message(*, tokens: int, interval: float, ttft: float = 0.0, seed: int) -> str:
    """The user message that tells the bench upstream what reply to stream."""
    return f"bench n={tokens} iv={interval:g} ttft={ttft:g} seed={seed}"


def parse_spec(message: str) -> tuple[int, float, float, int]:
    match = SPEC_RE.search(message)
    if match is None:
        return 8, 0.0, 0.0, 0
    return int(match[1]), float(match[2]), float(match[3]), int(match[4])


def reply_tokens(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(VOCAB) for _ in range(count)]


def expected_text(message: str) -> str:
    count, _, _, seed = parse_spec(message)
    return "".join(reply_tokens(seed, count))


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
        "mean": sum(values) / len(values) if values else None,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (and its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields after the command: state is index 0, utime is field 14 overall -> index 11 here.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
