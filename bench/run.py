"""`make bench`: the whole benchmark, end to end, in one run.

Starts the bench upstream and one Daphne process of the app (production settings, SQLite or
PostgreSQL), creates users, sessions and conversations through the ORM, then measures every
figure next to its reference in the same run (see REPORT.md for the list), writes
bench/results/<name>.json and regenerates bench/REPORT.md and its chart.

Run: python -m bench.run [--db sqlite|postgres] [--name NAME] [--steps 500,300,200,100,50,1]

Scenarios (`--scenario`): `steady` (the above), `burst` (N clients press Enter at the same
instant, `--burst 1,50,100,200`, each beside the direct reference in the same run). For either,
`--layer memory|redis|redis-pubsub` or `--layer-class dotted.Path` picks the channel layer
(Redis at `--redis-url`), `--servers 2` runs two Daphne processes with the clients split between
them, and `--app-dir DIR` benchmarks another checkout of the app (e.g. `main`, for a before/after
table) with this harness.
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    expected_text,
    free_port,
    proc_cpu_seconds,
    proc_rss_bytes,
    spec_message,
    summary,
    wait_for_port,
)

BASE_DIR = Path(__file__).resolve().parent.parent
RESULTS = BASE_DIR / "bench" / "results"
PY = sys.executable
PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
ASGI_APP = "chatsite.asgi:application"


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="chatsite-bench-"))
        self.upstream_port = free_port()
        self.ports = [free_port() for _ in range(args.servers)]
        self.port = self.ports[0]
        self.procs: list[subprocess.Popen[Any]] = []
        self.servers: list[subprocess.Popen[Any]] = []
        self.app_dir = Path(args.app_dir).resolve() if args.app_dir else BASE_DIR
        self.results: dict[str, Any] = {}
        self.users: list[Any] = []
        self.cookies: list[str] = []
        self.secret_key = "bench-" + uuid.uuid4().hex  # one for every process of the run

    # -- set-up -------------------------------------------------------------------------------

    def database_url(self) -> str:
        if self.args.db == "postgres":
            return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + self.args.pg_db
        return f"sqlite:///{self.work / 'bench.sqlite3'}"

    def create_database(self) -> None:
        if self.args.db != "postgres":
            return
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.args.pg_db} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {self.args.pg_db}")

    def drop_database(self) -> None:
        if self.args.db != "postgres":
            return
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.args.pg_db} WITH (FORCE)")

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": self.secret_key,
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": self.database_url(),
            "DATABASE_CONN_MAX_AGE": str(self.args.conn_max_age),
            "AIMLAPI_BASE_URL": f"http://127.0.0.1:{self.upstream_port}/v1",
            "AIMLAPI_API_KEY": "bench-key",
            "CHAT_FLUSH_INTERVAL": str(self.args.flush_interval),
            "LOG_LEVEL": "WARNING",
            # The app under test first; the work directory holds the layer-override settings.
            "PYTHONPATH": f"{self.app_dir}{os.pathsep}{self.work}",
        }
        env.pop("REDIS_URL", None)
        env.pop("BENCH_CHANNEL_LAYER_BACKEND", None)
        layer = self.args.layer
        if layer != "memory":
            env["REDIS_URL"] = self.args.redis_url
        backend = self.args.layer_class or LAYER_BACKENDS.get(layer)
        if backend:
            env["BENCH_CHANNEL_LAYER_BACKEND"] = backend
            env["DJANGO_SETTINGS_MODULE"] = "bench_layer_settings"
        return env

    def harness_env(self) -> dict[str, str]:
        """For the upstream and load generator, which are this harness's own code."""
        return {**self.env(), "PYTHONPATH": str(BASE_DIR)}

    def setup(self) -> None:
        (self.work / "bench_layer_settings.py").write_text(LAYER_SETTINGS)
        env = self.env()
        os.environ.update({k: v for k, v in env.items() if k != "DJANGO_SETTINGS_MODULE"})
        os.environ["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"
        os.environ.pop("REDIS_URL", None)
        self.create_database()
        if self.args.layer != "memory":
            self.clear_redis()
        for command in (["migrate", "--noinput"], ["collectstatic", "--noinput"]):
            subprocess.run(
                [PY, "manage.py", *command, "-v", "0"], cwd=self.app_dir, env=env, check=True
            )
        import django

        # This process makes users and conversations through the ORM: with another checkout
        # under test, its models must match the schema its migrations made (the `bench`
        # package itself is already imported from this checkout).
        if self.app_dir != BASE_DIR:
            sys.path.insert(0, str(self.app_dir))
        django.setup()
        self.start_upstream()
        self.start_server()
        self.create_users(
            max([*self.args.steps, *self.args.burst, self.args.warmup, self.args.browser_runs])
        )

    def clear_redis(self) -> None:
        """Empty only the bench's own Redis database (never FLUSHALL: others share the server)."""
        import redis

        redis.Redis.from_url(self.args.redis_url).flushdb()

    def start_upstream(self) -> None:
        proc = subprocess.Popen(
            [PY, "-m", "bench.upstream", "--port", str(self.upstream_port)],
            cwd=BASE_DIR,
            env=self.harness_env(),
        )
        self.procs.append(proc)
        wait_for_port(self.upstream_port)

    def start_server(self) -> None:
        server_log = (self.work / "daphne.log").open("ab")
        for port in self.ports:
            server = subprocess.Popen(
                [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), ASGI_APP],
                cwd=self.app_dir,
                env=self.env(),
                stdout=server_log,
                stderr=subprocess.STDOUT,
            )
            self.procs.append(server)
            self.servers.append(server)
            wait_for_port(port)
            log(f"daphne pid {server.pid} on :{port}, upstream on :{self.upstream_port}")

    def create_users(self, count: int) -> None:
        from django.contrib.auth import (
            BACKEND_SESSION_KEY,
            HASH_SESSION_KEY,
            SESSION_KEY,
            get_user_model,
        )
        from django.contrib.auth.hashers import make_password
        from django.contrib.sessions.backends.db import SessionStore

        user_model = get_user_model()
        password = make_password(None)  # unusable: hashing 500 real passwords takes minutes
        user_model.objects.bulk_create(
            [user_model(username=f"bench{i}", password=password) for i in range(count)]
        )
        self.users = list(user_model.objects.filter(username__startswith="bench").order_by("id"))
        for user in self.users:
            session = SessionStore()
            session[SESSION_KEY] = str(user.pk)
            session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
            session[HASH_SESSION_KEY] = user.get_session_auth_hash()
            session.create()
            self.cookies.append(session.session_key)
        log(f"{count} users with sessions")

    def conversations(self, count: int, *, owner: int | None = None) -> list[str]:
        """`count` new conversations, one per user, or all of user `owner`."""
        from conversations.models import Conversation

        owners = self.users[:count] if owner is None else [self.users[owner]] * count
        made = Conversation.objects.bulk_create([Conversation(owner=user) for user in owners])
        return [str(c.id) for c in made]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        try:
            from django.db import connections

            connections.close_all()
            self.drop_database()
        except Exception as exc:
            log(f"could not drop the bench database: {exc!r}")
        shutil.rmtree(self.work, ignore_errors=True)

    # -- one load phase -----------------------------------------------------------------------

    def load(
        self,
        mode: str,
        clients: list[dict[str, Any]],
        *,
        sequential: bool = False,
        timeout: float,
        measure: bool = False,
        profile: Path | None = None,
    ) -> dict[str, Any]:
        """Run a load process; with `measure`, read the server's RSS with the sockets idle,
        its peak while streaming and its CPU over the streaming."""
        tag = uuid.uuid4().hex[:8]
        spec_path, result_path = self.work / f"spec-{tag}.json", self.work / f"result-{tag}.json"
        spec = {
            "mode": mode,
            "port": self.port if mode == "ws" else self.upstream_port,
            # Clients split between the server processes, by turns.
            "ports": self.ports if mode == "ws" else [self.upstream_port],
            "clients": clients,
            "sequential": sequential,
            "timeout": timeout,
            "wait_go": measure,
        }
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.Popen(
            [PY, "-m", "bench.load", str(spec_path), str(result_path)],
            cwd=BASE_DIR,
            env=self.harness_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        extra: dict[str, Any] = {}
        pids = [server.pid for server in self.servers]
        pid = pids[0]
        if measure:
            extra["rss_before"] = proc_rss_bytes(pid)  # sockets still connecting: read again
            line = proc.stdout.readline()  # type: ignore[union-attr]
            time.sleep(1.0)  # let the connect handlers' allocations settle
            extra["connected"] = int(line.split()[1]) if line.startswith("connected") else 0
            extra["rss_idle"] = proc_rss_bytes(pid)
            peak = [extra["rss_idle"]]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.1):
                    try:
                        peak[0] = max(peak[0], proc_rss_bytes(pid))
                    except OSError:
                        return

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            spy = None
            if profile is not None:
                spy = subprocess.Popen(
                    [
                        str(Path(PY).parent / "py-spy"),
                        "record",
                        "-p",
                        str(pid),
                        "-o",
                        str(profile),
                        "-f",
                        "raw",
                        "--nonblocking",
                        "--gil",
                        "-r",
                        str(self.args.profile_rate),
                        "-d",
                        str(self.args.profile_seconds or int(self.args.duration + 2)),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            cpu0 = sum(proc_cpu_seconds(p) for p in pids)
            proc.stdin.write("go\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        try:
            proc.wait(timeout=timeout + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        if measure:
            # Every server process's CPU: with two, the whole cost of the turns.
            extra["server_cpu"] = sum(proc_cpu_seconds(p) for p in pids) - cpu0
            done.set()
            sampler.join()
            extra["rss_peak"] = peak[0]
            if spy is not None:
                spy.wait(timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"load process failed ({proc.returncode})")
        result = json.loads(result_path.read_text())
        result.update(extra)
        return result

    def settle(self, limit: float = 90.0) -> float:
        """Wait (bounded) until no reply is still streaming, so that a phase the server could
        not keep up with does not spill into the next one; returns how long that took."""
        from conversations.models import Message

        started = time.monotonic()
        while time.monotonic() - started < limit:
            if not Message.objects.filter(status=Message.Status.STREAMING).exists():
                break
            time.sleep(0.25)
        return round(time.monotonic() - started, 2)

    def verify_saved(self, conversation_ids: list[str], turns: list[list[str]]) -> dict[str, int]:
        """The final saved text of every reply equals what the upstream sent, byte for byte;
        `turns` holds each conversation's messages in the order they were sent."""
        from conversations.models import Message

        saved: dict[str, list[tuple[str, str]]] = {}
        for conversation_id, content, status in (
            Message.objects.filter(
                conversation_id__in=conversation_ids, role=Message.Role.ASSISTANT
            )
            .order_by("created_at")
            .values_list("conversation_id", "content", "status")
        ):
            saved.setdefault(str(conversation_id), []).append((content, status))
        ok = replies = 0
        # What the replies that fell short were saved as (status, and whether the text matched).
        short: dict[str, int] = {}
        for conversation_id, messages in zip(conversation_ids, turns, strict=True):
            replies_saved = saved.get(conversation_id, [])
            for index, message in enumerate(messages):
                replies += 1
                content, status = (
                    replies_saved[index] if index < len(replies_saved) else ("", "missing")
                )
                same = content.encode() == expected_text(message).encode()
                if status == "complete" and same:
                    ok += 1
                else:
                    key = f"{status}, {'same text' if same else 'other text'}"
                    short[key] = short.get(key, 0) + 1
        return {"replies": replies, "saved_ok": ok, "saved_short": short}

    @staticmethod
    def clients(
        ids: list[str],
        cookies: list[str],
        *,
        tokens: int,
        interval: float,
        ramp: float,
        seed: int,
        lead: bool = False,
    ) -> list[dict[str, Any]]:
        count = len(ids)
        return [
            {
                "conversation": ids[i],
                "cookie": cookies[i],
                "message": spec_message(tokens=tokens, interval=interval, seed=seed + i),
                "lead": spec_message(tokens=tokens, interval=interval, seed=seed + count + i)
                if lead
                else None,
                "start": ramp * i / count if count > 1 else 0.0,
            }
            for i in range(count)
        ]

    def pair(
        self,
        label: str,
        count: int,
        *,
        tokens: int,
        interval: float,
        ramp: float,
        sequential: bool = False,
        measure: bool = False,
        profile: Path | None = None,
        lead: bool = False,
    ) -> dict[str, Any]:
        """The same replies through the app and straight from the upstream, one after another.
        With `lead`, each client first sends a lead-in turn and then the measured one, so the
        measured turns run while the others' replies stream (steady state)."""
        seed = abs(hash(label)) % 10**6 * 1000
        ids = self.conversations(count)
        clients = self.clients(
            ids, self.cookies, tokens=tokens, interval=interval, ramp=ramp, seed=seed, lead=lead
        )
        duration = tokens * interval
        timeout = duration * 3 + 30
        if sequential:
            timeout = duration + 30
        direct = self.load("direct", clients, sequential=sequential, timeout=timeout)
        app = self.load(
            "ws", clients, sequential=sequential, timeout=timeout, measure=measure, profile=profile
        )
        app.update(
            self.verify_saved(ids, [[m for m in (c["lead"], c["message"]) if m] for c in clients])
        )
        app["settle_s"] = self.settle()
        total_tokens = tokens * count * (2 if lead else 1)
        row = {
            "label": label,
            "streams": count,
            "tokens_per_reply": tokens,
            "interval": interval,
            "sequential": sequential,
            "app": condense(app, total_tokens),
            "direct": condense(direct, total_tokens),
        }
        a, d = row["app"], row["direct"]
        log(
            f"{label}: app ttft p50 {ms(a['ttft']['p50'])} p99 {ms(a['ttft']['p99'])} "
            f"(direct {ms(d['ttft']['p50'])} / {ms(d['ttft']['p99'])}), "
            f"gap p99 {ms(a['gap']['p99'])}, total p50 {ms(a['total']['p50'])} "
            f"(direct {ms(d['total']['p50'])}), ok {a['ok']}/{count}, saved {a['saved_ok']}, "
            f"cpu/1k {a.get('cpu_per_1k_tokens')} vs {d.get('cpu_per_1k_tokens')}"
        )
        return row

    # -- the measures -------------------------------------------------------------------------

    def run(self) -> None:
        a = self.args
        started = time.monotonic()
        self.results = {
            "name": a.name,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "commit": git_commit(),
            "db": a.db,
            "machine": {
                "cpus": os.cpu_count(),
                "loadavg_at_start": os.getloadavg(),
                "python": platform.python_version(),
                "kernel": platform.release(),
            },
            "settings": {
                "flush_interval": a.flush_interval,
                "conn_max_age": a.conn_max_age,
                "channel_layer": "in-memory",
                "debug": False,
                "rate_tokens_per_s": a.rate,
                "tokens_per_reply": a.tokens,
                "arrivals": "steady",
            },
        }
        self.results["settings"].update(
            {
                "scenario": a.scenario,
                "channel_layer": a.layer_class or a.layer,
                "servers": a.servers,
                "app_dir": str(self.app_dir),
                "app_commit": git_commit(self.app_dir),
                "pool": os.environ.get("DATABASE_POOL_MAX", "default"),
            }
        )
        log("warm-up")
        self.results["warmup"] = self.pair("warmup", a.warmup, tokens=20, interval=0.01, ramp=0.5)
        if a.scenario == "browser":
            self.run_browser()
            self.results["elapsed_s"] = round(time.monotonic() - started, 1)
            self.results["machine"]["loadavg_at_end"] = os.getloadavg()
            self.results["bars"] = browser_bars(self.results)
            return
        if a.scenario == "burst":
            self.run_burst()
            self.results["elapsed_s"] = round(time.monotonic() - started, 1)
            self.results["machine"]["loadavg_at_end"] = os.getloadavg()
            self.results["bars"] = burst_bars(self.results)
            return
        log("time to first token, 1 stream, sequential turns")
        self.results["ttft1"] = self.pair(
            "ttft1", a.ttft_turns, tokens=10, interval=0.002, ramp=0, sequential=True
        )
        log("500 tokens at 2 ms")
        self.results["e2e500"] = self.pair(
            "e2e500", a.e2e_turns, tokens=500, interval=0.002, ramp=0, sequential=True
        )
        sweep = []
        interval = 1 / a.rate
        for count in sorted(a.steps, reverse=True):
            log(f"{count} concurrent streams at {a.rate:g} tokens/s")
            profile = None
            if a.profile and count == a.profile:
                profile = RESULTS / f"{a.name}-profile-{count}.txt"
            sweep.append(
                self.pair(
                    f"sweep{count}",
                    count,
                    tokens=a.tokens,
                    interval=interval,
                    # Little's law: N streams of D seconds each are held by N/D new turns a
                    # second, so clients start spread over one reply's duration.
                    ramp=a.tokens * interval if count > 1 else 0,
                    measure=True,
                    lead=True,
                    profile=profile,
                )
            )
        self.results["sweep"] = sorted(sweep, key=lambda r: r["streams"])
        log("queries per turn (in-process)")
        self.results["queries"] = self.count_queries()
        log("conversation page, 20 vs 2000 messages")
        self.results["page"] = self.page_render()
        self.results["elapsed_s"] = round(time.monotonic() - started, 1)
        self.results["machine"]["loadavg_at_end"] = os.getloadavg()
        self.results["bars"] = bars(self.results)

    def run_burst(self) -> None:
        """N clients press Enter at the same instant (each with a socket already open), one
        turn each, 200 tokens at 20 tokens/s by default; the direct client reads the same
        replies, also all at once, in the same run."""
        a = self.args
        rows = []
        for count in a.burst:
            log(f"burst: {count} turns at the same instant")
            profile = RESULTS / f"{a.name}-profile-{count}.txt" if a.profile == count else None
            rows.append(
                self.pair(
                    f"burst{count}",
                    count,
                    tokens=a.tokens,
                    interval=1 / a.rate,
                    ramp=0,
                    measure=True,
                    profile=profile,
                )
            )
        self.results["burst"] = rows

    def run_browser(self) -> None:
        """Chromium: Enter → first text and → the complete reply (500 tokens at 2 ms), the
        median of `--browser-runs`, beside the direct client reading the same replies."""
        from bench import browser

        a = self.args
        runs = a.browser_runs
        ids = self.conversations(runs, owner=0)
        clients = self.clients(ids, self.cookies, tokens=500, interval=0.002, ramp=0, seed=424242)
        messages = [c["message"] for c in clients]
        direct = self.load("direct", clients, sequential=True, timeout=60)
        trace = RESULTS / f"{a.name}-trace.json" if a.trace else None
        page_runs = browser.measure_page(
            base_url=f"http://127.0.0.1:{self.port}",
            cookie=self.cookies[0],
            conversation_ids=ids,
            messages=messages,
            timeout=60,
            trace_path=trace,
        )
        direct_runs = direct["clients"]
        self.results["browser"] = {
            "runs": page_runs,
            "page": {
                "ttft": summary([r["ttft"] / 1000 for r in page_runs if r["ttft"] is not None]),
                "total": summary([r["total"] / 1000 for r in page_runs if r["total"] is not None]),
            },
            "direct": {
                "ttft": summary([c["ttft"] for c in direct_runs if c.get("ttft") is not None]),
                "total": summary([c["total"] for c in direct_runs if c.get("total") is not None]),
            },
            "trace": browser.trace_summary(trace) if trace else None,
        }

    def count_queries(self) -> dict[str, Any]:
        """One turn through the real consumer in this process, every SQL statement counted."""
        from channels.routing import URLRouter
        from channels.testing import WebsocketCommunicator
        from django.contrib.auth import get_user_model
        from django.db import connections
        from django.db.backends.signals import connection_created

        try:
            from conversations.chat.routing import websocket_urlpatterns
        except ImportError:  # an app from before conversations/ had sub-domains (BEFORE=)
            from conversations.routing import websocket_urlpatterns  # type: ignore[no-redef]

        counter = {"queries": 0, "connections": 0}

        def count(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
            counter["queries"] += 1
            return execute(sql, params, many, context)

        def on_created(sender, connection, **kwargs):  # type: ignore[no-untyped-def]
            counter["connections"] += 1
            # A pooled or reopened connection fires this again on the same wrapper: one counter.
            if count not in connection.execute_wrappers:
                connection.execute_wrappers.append(count)

        connections.close_all()
        connection_created.connect(on_created)
        from conversations.models import Conversation

        ids = [str(Conversation.objects.create(owner=self.users[0]).id) for _ in range(4)]
        user = get_user_model().objects.get(pk=self.users[0].pk)
        cases = [
            ("10 tokens", spec_message(tokens=10, interval=0, seed=1)),
            ("1000 tokens", spec_message(tokens=1000, interval=0, seed=2)),
            ("10 tokens over 3 s", spec_message(tokens=10, interval=0.3, seed=3)),
            ("1000 tokens over 3 s", spec_message(tokens=1000, interval=0.003, seed=4)),
        ]

        async def turn(conversation_id: str, message: str) -> dict[str, Any]:
            communicator = WebsocketCommunicator(
                URLRouter(websocket_urlpatterns), f"/ws/c/{conversation_id}/"
            )
            communicator.scope["user"] = user
            connected, _ = await communicator.connect()
            assert connected
            await asyncio.sleep(0.2)
            before = dict(counter)
            from bench.load import FINISHED_RE, _send_frame

            await communicator.send_to(text_data=_send_frame(message))
            frames = 0
            while True:
                frame = await communicator.receive_from(timeout=30)
                frames += 1
                if FINISHED_RE.match(frame):
                    break
            await asyncio.sleep(0.2)
            await communicator.disconnect()
            return {
                "queries": counter["queries"] - before["queries"],
                "connections_opened": counter["connections"] - before["connections"],
                "frames": frames,
            }

        cases_out = {}
        for (label, message), conversation_id in zip(cases, ids, strict=False):
            cases_out[label] = asyncio.run(turn(conversation_id, message))
            # The reply also had to be saved whole.
            cases_out[label].update(self.verify_saved([conversation_id], [[message]]))
        connection_created.disconnect(on_created)
        connections.close_all()
        return cases_out

    def page_render(self) -> dict[str, Any]:
        import httpx
        from django.contrib.auth import get_user_model

        try:
            from conversations.chat.rendering import markdown_to_html
        except ImportError:  # an app from before conversations/ had sub-domains (BEFORE=)
            from conversations.rendering import markdown_to_html  # type: ignore[no-redef]
        from conversations.models import Conversation, Message

        owner = get_user_model().objects.get(pk=self.users[0].pk)
        cookie = self.cookies[0]
        user_text = "How would I **stream** tokens through a relay without adding latency?"
        reply_text = (
            "Keep the hot path small: parse each event once, coalesce deltas, and write to the "
            "database at most once a second.\n\n- one task per reply\n- `offset` on every "
            "delta\n- a snapshot on join\n\nThat is *all* there is to it."
        )
        user_html, reply_html = markdown_to_html(user_text), markdown_to_html(reply_text)
        # The app saves every reply with the usage the gateway reported, and the context meter
        # counts from the newest one: "2000" is such a branch. "2000-unmeasured" has no usage
        # anywhere (a gateway that reports none), the worst case: the meter walks to the root.
        pages = {"20": (20, True), "2000": (2000, True), "2000-unmeasured": (2000, False)}
        urls = {}
        for name, (size, measured) in pages.items():
            conversation = Conversation.objects.create(owner=owner, title=f"{name} messages")
            messages = []
            parent = None
            sent_chars = 0
            for i in range(size):
                user = i % 2 == 0
                content = user_text if user else reply_text
                sent_chars += len(content)
                message = Message(
                    conversation=conversation,
                    parent=parent,
                    role=Message.Role.USER if user else Message.Role.ASSISTANT,
                    content=content,
                    content_html=user_html if user else reply_html,
                    status=Message.Status.COMPLETE,
                )
                if measured and not user:
                    message.prompt_tokens = (sent_chars - len(content)) // 4
                    message.completion_tokens = len(content) // 4
                messages.append(message)
                parent = message
            Message.objects.bulk_create(messages)
            conversation.active_leaf = messages[-1]
            conversation.save(update_fields=["active_leaf"])
            urls[name] = f"http://127.0.0.1:{self.port}/c/{conversation.id}/"
        times: dict[str, list[float]] = {name: [] for name in pages}
        sizes: dict[str, int] = {}
        with httpx.Client(cookies={"sessionid": cookie}, timeout=60) as http:
            for round_ in range(self.args.page_rounds + 3):
                for name, url in urls.items():
                    t0 = time.perf_counter()
                    response = http.get(url)
                    elapsed = time.perf_counter() - t0
                    response.raise_for_status()
                    sizes[name] = len(response.content)
                    if round_ >= 3:
                        times[name].append(elapsed)
        small, large = summary(times["20"]), summary(times["2000"])
        unmeasured = summary(times["2000-unmeasured"])
        return {
            "20": small,
            "2000": large,
            "2000-unmeasured": unmeasured,
            "bytes": sizes,
            "ratio_p50": large["p50"] / small["p50"],  # type: ignore[operator]
            "ratio_p50_unmeasured": unmeasured["p50"] / small["p50"],  # type: ignore[operator]
        }


def condense(result: dict[str, Any], total_tokens: int) -> dict[str, Any]:
    clients = result["clients"]
    gaps = [g for c in clients for g in c.get("gaps", [])]
    out: dict[str, Any] = {
        "ttft": summary([c["ttft"] for c in clients if c.get("ttft") is not None]),
        "total": summary([c["total"] for c in clients if c.get("total") is not None]),
        "gap": summary(gaps),
        "ok": sum(1 for c in clients if c.get("ok")),
        "delivered_ok": sum(1 for c in clients if c.get("delivered_ok")),
        # Replies delivered whole: a client with a lead-in turn sent two.
        "delivered_replies": sum(
            c.get("delivered_turns", int(bool(c.get("delivered_ok")))) for c in clients
        ),
        "errors": sorted({c["error"] for c in clients if c.get("error")})[:5],
        "frames": sum(c.get("frames", 0) for c in clients),
        "elapsed": result["elapsed"],
        "connected": result.get("connected"),
        "client_cpu": result["cpu"],
    }
    for key in (
        "replies",
        "saved_ok",
        "saved_short",
        "settle_s",
        "rss_before",
        "rss_idle",
        "rss_peak",
        "server_cpu",
    ):
        if key in result:
            out[key] = result[key]
    cpu = result.get("server_cpu", result["cpu"] if "saved_ok" not in result else None)
    if cpu is not None and total_tokens:
        out["cpu_per_1k_tokens"] = round(cpu / total_tokens * 1000, 4)
    return out


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}ms"


def bars(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every bar of the benchmark, with the measured value and the reference it is compared with."""
    out: list[dict[str, Any]] = []

    def add(measure: str, value: str, bar: str, passed: bool | None, note: str = "") -> None:
        out.append({"measure": measure, "value": value, "bar": bar, "pass": passed, "note": note})

    t1 = results["ttft1"]
    added = t1["app"]["ttft"]["p50"] - t1["direct"]["ttft"]["p50"]
    add(
        "TTFT added, p50, 1 stream",
        f"+{added * 1000:.1f} ms ({ms(t1['app']['ttft']['p50'])} vs direct "
        f"{ms(t1['direct']['ttft']['p50'])})",
        "≤ +15 ms",
        added <= 0.015,
    )
    sweep = {row["streams"]: row for row in results["sweep"]}
    if 200 in sweep:
        row = sweep[200]
        added = row["app"]["ttft"]["p99"] - row["direct"]["ttft"]["p99"]
        add(
            "TTFT added, p99, 200 streams",
            f"+{added * 1000:.1f} ms ({ms(row['app']['ttft']['p99'])} vs direct "
            f"{ms(row['direct']['ttft']['p99'])})",
            "≤ +60 ms",
            added <= 0.060,
        )
    e2e = results["e2e500"]
    ratio = e2e["app"]["total"]["p50"] / e2e["direct"]["total"]["p50"]
    add(
        "500 tokens at 2 ms, end to end (p50)",
        f"{ratio:.3f}× ({ms(e2e['app']['total']['p50'])} vs direct "
        f"{ms(e2e['direct']['total']['p50'])})",
        "≤ 1.05×",
        ratio <= 1.05,
    )
    good = [
        n
        for n, row in sorted(sweep.items())
        if row["app"]["gap"]["p99"] is not None
        and row["app"]["gap"]["p99"] <= 0.25
        and row["app"]["ok"] == n
        and row["app"]["saved_ok"] == row["app"]["replies"]
    ]
    held = max(good) if good else 0
    failed = [n for n in sorted(sweep) if n not in good]
    knee = f"{held} held; first miss at {failed[0]}" if failed else f"{held} held (all steps)"
    add(
        "concurrent streams at 20 tokens/s (p99 gap ≤ 250 ms, all delivered + saved)",
        knee,
        "≥ 500",
        held >= 500,
    )
    ref = sweep.get(200) or sweep[max(sweep)]
    server, direct = ref["app"]["cpu_per_1k_tokens"], ref["direct"]["cpu_per_1k_tokens"]
    add(
        f"server CPU per 1,000 tokens ({ref['streams']} streams)",
        f"{server / direct:.2f}× ({server * 1000:.0f} ms vs direct {direct * 1000:.0f} ms)",
        "≤ 5×",
        server / direct <= 5,
    )
    big = sweep[max(sweep)]
    n = big["streams"]
    idle = (big["app"]["rss_idle"] - big["app"]["rss_before"]) / n
    streaming = (big["app"]["rss_peak"] - big["app"]["rss_before"]) / n
    add(
        f"memory per idle socket ({n} sockets)",
        f"{idle / 1024:.0f} KB",
        "≤ 100 KB",
        idle <= 100 * 1024,
    )
    add(
        f"memory per streaming conversation ({n})",
        f"{streaming / 1024:.0f} KB",
        "≤ 300 KB",
        streaming <= 300 * 1024,
        "RSS peak while streaming, socket included",
    )
    q = results["queries"]
    counts = {label: case["queries"] for label, case in q.items()}
    fast = [counts[k] for k in counts if "over" not in k]
    add(
        "DB queries per turn",
        ", ".join(f"{k}: {v}" for k, v in counts.items()),
        "constant in reply length",
        len(set(fast)) == 1,
        "checkpoints are ≤ 1/s by time, so a reply that lasts longer adds one per second",
    )
    page = results["page"]
    add(
        "page render, 2,000 vs 20 messages (p50)",
        f"{page['ratio_p50']:.1f}× ({ms(page['2000']['p50'])} vs {ms(page['20']['p50'])})"
        + (
            f"; with no usage reported anywhere {page['ratio_p50_unmeasured']:.1f}×"
            if "ratio_p50_unmeasured" in page
            else ""
        ),
        "≤ 1.5×",
        page["ratio_p50"] <= 1.5,
    )
    replies = sum(row["app"]["replies"] for row in results["sweep"]) + sum(
        results[k]["app"]["replies"] for k in ("ttft1", "e2e500")
    )
    saved = sum(row["app"]["saved_ok"] for row in results["sweep"]) + sum(
        results[k]["app"]["saved_ok"] for k in ("ttft1", "e2e500")
    )
    delivered = sum(row["app"]["delivered_replies"] for row in results["sweep"]) + sum(
        results[k]["app"]["delivered_replies"] for k in ("ttft1", "e2e500")
    )
    add(
        "saved text == upstream text, byte for byte",
        f"{saved}/{replies} saved, {delivered}/{replies} delivered",
        "all",
        saved == replies and delivered == replies,
    )
    return out


def burst_bars(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The bars of a burst run, each against the direct reference of the same run."""
    rows = {row["streams"]: row for row in results.get("burst", [])}
    out: list[dict[str, Any]] = []
    for count, allowance in ((50, 150.0), (100, 1000.0), (200, 1000.0)):
        row = rows.get(count)
        if row is None:
            continue
        app, direct = row["app"], row["direct"]
        added = (app["ttft"]["p99"] - direct["ttft"]["p99"]) * 1000
        out.append(
            {
                "measure": f"burst {count}: TTFT p99 added",
                "value": f"+{added:.1f} ms ({ms(app['ttft']['p99'])} vs direct "
                f"{ms(direct['ttft']['p99'])})",
                "bar": f"<= +{allowance:g} ms",
                "pass": added <= allowance,
            }
        )
    for count, row in sorted(rows.items()):
        app = row["app"]
        out.append(
            {
                "measure": f"burst {count}: gap p99, delivered and saved whole",
                "value": f"gap p99 {ms(app['gap']['p99'])}, delivered {app['ok']}/{count}, "
                f"saved {app['saved_ok']}/{app['replies']}",
                "bar": "<= 250 ms, all",
                "pass": (app["gap"]["p99"] or 0) <= 0.250
                and app["ok"] == count
                and app["saved_ok"] == app["replies"],
            }
        )
    top = rows.get(max(rows)) if rows else None
    if (
        top is not None
        and top["app"].get("cpu_per_1k_tokens")
        and top["direct"].get("cpu_per_1k_tokens")
    ):
        ratio = top["app"]["cpu_per_1k_tokens"] / top["direct"]["cpu_per_1k_tokens"]
        out.append(
            {
                "measure": f"server CPU per 1k tokens, burst {top['streams']}",
                "value": f"{ratio:.2f}x ({ms(top['app']['cpu_per_1k_tokens'])} vs direct "
                f"{ms(top['direct']['cpu_per_1k_tokens'])})",
                "bar": "<= 2x direct",
                "pass": ratio <= 2.0,
            }
        )
    return out


def browser_bars(results: dict[str, Any]) -> list[dict[str, Any]]:
    page, direct = results["browser"]["page"], results["browser"]["direct"]
    added = (page["ttft"]["p50"] - direct["ttft"]["p50"]) * 1000
    ratio = page["total"]["p50"] / direct["total"]["p50"]
    return [
        {
            "measure": "Chromium: Enter → first text, median, added to the direct read",
            "value": f"+{added:.1f} ms ({ms(page['ttft']['p50'])} vs {ms(direct['ttft']['p50'])})",
            "bar": "<= +25 ms",
            "pass": added <= 25,
        },
        {
            "measure": "Chromium: 500-token reply, Enter → complete, median, against direct",
            "value": f"{ratio:.3f}x ({ms(page['total']['p50'])} vs {ms(direct['total']['p50'])})",
            "bar": "<= 1.05x",
            "pass": ratio <= 1.05,
        },
    ]


def burst_table(results: dict[str, Any]) -> str:
    """A Markdown table of a burst run, for REPORT.md."""
    settings = results["settings"]
    lines = [
        f"Run **{results['name']}** at {results['date']}, app `{settings['app_commit']}`, "
        f"{results['db']}, layer {settings['channel_layer']}, {settings['servers']} Daphne "
        f"process(es), load average {results['machine']['loadavg_at_start'][0]:.1f} at the "
        "start (machine shared).",
        "",
        "| N at once | TTFT p50 / p99 direct | TTFT p50 / p99 app | gap p99 / max | "
        "delivered, saved | CPU per 1k tok app / direct |",
        "|---|---|---|---|---|---|",
    ]
    for row in results.get("burst", []):
        app, direct = row["app"], row["direct"]
        lines.append(
            f"| {row['streams']} | {ms(direct['ttft']['p50'])} / {ms(direct['ttft']['p99'])} "
            f"| {ms(app['ttft']['p50'])} / {ms(app['ttft']['p99'])} "
            f"| {ms(app['gap']['p99'])} / {ms(app['gap']['max'])} "
            f"| {app['ok']}/{row['streams']}, {app['saved_ok']}/{app['replies']} "
            f"| {ms(app.get('cpu_per_1k_tokens'))} / {ms(direct.get('cpu_per_1k_tokens'))} |"
        )
    lines.append("")
    for bar in results.get("bars", []):
        mark = {True: "pass", False: "**miss**", None: ""}[bar["pass"]]
        lines.append(f"- {bar['measure']}: {bar['value']} (bar {bar['bar']}): {mark}")
    return "\n".join(lines) + "\n"


LAYER_BACKENDS = {
    "redis-pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}

# The Daphne processes import these settings when the bench picks a channel layer class: the
# app's settings, with only the layer's backend replaced (its CONFIG kept, except for the
# pub/sub layer, which takes hosts alone).
LAYER_SETTINGS = """\
import os

from chatsite.settings import *  # noqa: F403
from chatsite.settings import CHANNEL_LAYERS, REDIS_URL

_backend = os.environ["BENCH_CHANNEL_LAYER_BACKEND"]
_config = dict(CHANNEL_LAYERS["default"].get("CONFIG", {}))
if _backend.startswith("channels_redis.pubsub."):
    _config = {"hosts": [REDIS_URL]}
CHANNEL_LAYERS = {"default": {"BACKEND": _backend, "CONFIG": _config}}
"""


def git_commit(directory: Path = BASE_DIR) -> str:
    # An exported tree (git archive) has no .git: `make bench-before` leaves its commit here.
    marker = directory / ".bench-commit"
    if marker.exists():
        return marker.read_text().strip()
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--name", default=None)
    parser.add_argument("--steps", default="1,50,100,200,300,500")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens/s per stream")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply in the sweep")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--ttft-turns", type=int, default=30)
    parser.add_argument("--e2e-turns", type=int, default=5)
    parser.add_argument("--page-rounds", type=int, default=15)
    parser.add_argument("--flush-interval", type=float, default=0.05)
    parser.add_argument("--conn-max-age", type=int, default=60)
    parser.add_argument("--profile", type=int, default=0, help="py-spy the server at this step")
    parser.add_argument(
        "--profile-seconds", type=int, default=0, help="how long to profile (default: the step)"
    )
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples a second")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument("--scenario", choices=["steady", "burst", "browser"], default="steady")
    parser.add_argument("--browser-runs", type=int, default=8)
    parser.add_argument("--trace", action="store_true", help="Chromium trace of the last run")
    parser.add_argument("--burst", default="1,50,100,200", help="clients at once, per step")
    parser.add_argument("--layer", choices=["memory", "redis", "redis-pubsub"], default="memory")
    parser.add_argument("--layer-class", default="", help="a channel layer class, dotted path")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/7")
    parser.add_argument("--pg-db", default="chatsite_bench", help="created and dropped by the run")
    parser.add_argument("--servers", type=int, default=1, choices=[1, 2])
    parser.add_argument("--app-dir", default="", help="the app checkout to run (default: this)")
    args = parser.parse_args()
    args.steps = [int(s) for s in args.steps.split(",") if s]
    args.burst = [int(s) for s in args.burst.split(",") if s] if args.scenario == "burst" else []
    if args.scenario in ("burst", "browser"):
        args.steps = []
    # A sweep step: clients start over one reply's duration, then each sends two turns.
    args.duration = 3 * args.tokens / args.rate
    args.name = args.name or f"{datetime.date.today().isoformat()}-{args.db}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    # Stopped from outside: still stop the servers and drop the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        bench.setup()
        bench.run()
    finally:
        bench.stop()
    path = RESULTS / f"{args.name}.json"
    path.write_text(json.dumps(bench.results, indent=1) + "\n")
    log(f"wrote {path.relative_to(BASE_DIR)} in {bench.results.get('elapsed_s')} s")
    for bar in bench.results["bars"]:
        mark = {True: "PASS", False: "MISS", None: "----"}[bar["pass"]]
        log(f"{mark} {bar['measure']}: {bar['value']} (bar {bar['bar']})")
    if args.scenario == "browser":
        print(json.dumps(bench.results["browser"]["trace"], indent=1))
        for bar in bench.results["bars"]:
            print(f"- {bar['measure']}: {bar['value']} (bar {bar['bar']})")
    elif args.scenario == "burst":
        table = burst_table(bench.results)
        path.with_suffix(".md").write_text(table)
        print(table)
    elif not args.no_report:
        from bench import report

        report.write(path)


if __name__ == "__main__":
    main()
