"""Webhook throughput and reply latency, served by gunicorn as production serves it.

For each backend -- the embedded default (SQLite in WAL mode + django-q2's ORM broker) and
PostgreSQL + Redis -- one gunicorn (`-c config/gunicorn.py`, 4 sync workers) serves the project
with bench.settings, which adds two baselines, and `wrk` drives three endpoints in turn:

  bare view   /bench/ok/: the Django request cycle, nothing else;
  one INSERT  /bench/insert/: one INSERT of the body in autocommit, the floor for accepting an
              update durably;
  webhook     /telegram/<bot>/webhook/: the real thing, with the bot's secret and a valid update
              whose update_id (and user/chat) differs in every request, so none is a cheap duplicate.
  click       /l/<token>/: click tracking's redirect (broadcasts.clicks), GET with tokens of
              CLICK_DELIVERIES deliveries in turn: one indexed read, one upsert, a 302.

Each is measured for --duration seconds at 64 connections (requests per second, and the CPU time
gunicorn's processes and PostgreSQL's backends spend per request) and at 8 connections (p50/p99
latency), after a short warm-up. A measurement is cut into --rounds slices and the endpoints take
turns, so that whatever else runs on the machine weighs on all three alike. No cluster runs
meanwhile: what is measured is the web side. Durability stays on (SQLite synchronous=FULL unless
SQLITE_SYNCHRONOUS says otherwise, PostgreSQL's defaults).

Then the reply latency: the fake Telegram runs standalone (`python -m tests.fake_telegram`), the
bot's api_base_url points at it, one real `Q_CLUSTER_NAME=telegram manage.py qcluster` runs, and
--messages `/start` updates from distinct users are POSTed to the webhook at --rate per second.
Latency is the POST's start to the fake receiving the sendMessage (the time it records).

Each backend runs in its own subprocess on throwaway storage: a /tmp/bench-webhook-* folder for
SQLite; for PostgreSQL + Redis the database bench_webhook, dropped and recreated, and Redis
database 10, flushed -- refused if any other client is connected to it, since another cluster
popping from the same queue would steal jobs; `--redis-server` starts a private redis-server on a
free port instead. Everything is removed afterwards. PostgreSQL (and Redis, without
--redis-server) must be running, and `wrk` must be installed (Debian: apt-get install wrk).

Run from the project folder (about 2 minutes per backend at the defaults):

    .venv/bin/python -m bench.webhook [--backend sqlite|postgres|all] [--duration 10] [--redis-server]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import backends
from bench.fake_telegram_process import FakeTelegramProcess

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = {"sqlite": "sqlite+orm", "postgres": "postgres+redis"}
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/bench_webhook"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/10"
FORBIDDEN_REDIS_DBS = {"8", "9"}  # the other benchmarks'
SETTINGS = "bench.settings"
QUEUE = "telegram"
WEB_WORKERS = 4
LOAD_CONNECTIONS = 64
LATENCY_CONNECTIONS = 8
WRK_THREADS = 2
WARMUP_SECONDS = 2
BOT_TOKEN = "123456:bench"
ENDPOINTS = ("bare view", "one INSERT", "webhook", "click")
CLICK_DELIVERIES = 5_000
GOAL_RATIO = 0.9
GOAL_P99 = 1.2
GOAL_REPLY_P95_MS = 300

Result = dict[str, Any]


# --- The parent: one throwaway environment and one subprocess per backend -------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        Path(args.result_file).write_text(json.dumps(measure(args)))
        return 0
    if not _which("wrk"):
        print("wrk is not installed (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    names = list(BACKENDS) if args.backend == "all" else [args.backend]
    results: list[Result] = []
    failed = False
    with ExitStack() as stack:
        if args.redis_server and "postgres" in names:
            work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-webhook-redis-", dir="/tmp"))
            server = stack.enter_context(RedisServer(Path(work_dir)))
            args.redis_url = server.url(urlsplit(args.redis_url).path.strip("/") or 13)
            print(f"private redis-server: {args.redis_url}", flush=True)
        for name in names:
            print(f"=== {BACKENDS[name]}", flush=True)
            try:
                results.append(run_backend(name, args))
            except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
                print(f"!!! {BACKENDS[name]} failed: {exc}", file=sys.stderr, flush=True)
                failed = True
    if results:
        print_table(results, args)
    return 1 if failed else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = backends.argument_parser("bench.webhook", __doc__, BACKENDS)
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk measurement (default 10)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="slices each measurement is cut into, taken in turn (default 5)"
    )
    parser.add_argument("--messages", type=int, default=200, help="/start messages for the reply latency")
    parser.add_argument("--rate", type=float, default=5, help="/start messages per second (default 5)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="a database named bench*; it is dropped")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="a Redis database of its own; it is flushed")
    parser.add_argument(
        "--redis-server", action="store_true", help="start a private redis-server (on a free port) instead"
    )
    args = parser.parse_args(argv)
    if args.duration < 1 or args.rounds < 1 or args.duration < args.rounds:
        parser.error("--duration must be at least 1 second per round (--rounds)")
    if args.messages < 1 or args.rate <= 0:
        parser.error("--messages and --rate must be positive")
    return args


def run_backend(name: str, args: argparse.Namespace) -> Result:
    with backends.throwaway_storage(
        name, f"bench-webhook-{name}-", args.postgres_url, lambda: flush_redis(args.redis_url)
    ) as folder:
        options = [
            *("--duration", str(args.duration), "--rounds", str(args.rounds)),
            *("--messages", str(args.messages), "--rate", str(args.rate)),
        ]
        return backends.run_measurement("bench.webhook", name, backend_env(name, folder, args), folder, options)


def backend_env(name: str, var_dir: Path, args: argparse.Namespace) -> dict[str, str]:
    return backends.backend_env(
        name, var_dir, args.postgres_url, args.redis_url, settings=SETTINGS, WEB_CONCURRENCY=str(WEB_WORKERS)
    )


def flush_redis(url: str) -> None:
    backends.flush_redis(url, FORBIDDEN_REDIS_DBS)


class RedisServer:
    """A private `redis-server` on a free loopback port, configured like the shared one here
    (no RDB snapshots, no AOF), for machines where others use every database of the shared one."""

    def __init__(self, work_dir: Path):
        self.work_dir = work_dir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> RedisServer:
        import redis

        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.work_dir)]
        command += ["--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.__exit__()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def __exit__(self, *exc_info: object) -> None:
        stop_process_group(self.process, "redis-server", wait=10)


def _which(program: str) -> bool:
    return any(os.access(Path(d) / program, os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep) if d)


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    rows = [
        (
            "backend",
            "endpoint",
            f"req/s @{LOAD_CONNECTIONS}",
            "÷ INSERT",
            f"p50 @{LATENCY_CONNECTIONS}",
            f"p99 @{LATENCY_CONNECTIONS}",
            "p99 ÷ INSERT",
            "CPU ms/req",
            "CPU ÷ INSERT",
        )
    ]
    for r in results:
        insert = r["endpoints"]["one INSERT"]
        for i, name in enumerate(ENDPOINTS):
            e = r["endpoints"][name]
            ratio = p99_ratio = cpu_ratio = ""
            if name in ("webhook", "click"):
                cpu_ratio = f"{e['cpu_ms'] / insert['cpu_ms']:.2f}"
                rps = e["rps"] / insert["rps"]
                p99 = e["p99_ms"] / insert["p99_ms"]
                ratio = f"{rps:.2f} {'ok' if rps >= GOAL_RATIO else 'LOW'}"
                p99_ratio = f"{p99:.2f} {'ok' if p99 <= GOAL_P99 else 'HIGH'}"
            rows.append(
                (
                    r["backend"] if i == 0 else "",
                    name,
                    f"{e['rps']:.0f}",
                    ratio,
                    f"{e['p50_ms']:.1f} ms",
                    f"{e['p99_ms']:.1f} ms",
                    p99_ratio,
                    f"{e['cpu_ms']:.2f}",
                    cpu_ratio,
                )
            )
    _print_rows(rows, left=2)

    print()
    rows = [("backend", "/start -> reply p50", "p95", "max", "goal p95 < 300 ms")]
    for r in results:
        reply = r["reply"]
        verdict = "ok" if reply["p95_ms"] < GOAL_REPLY_P95_MS else "MISSED"
        if "redis" not in r["backend"]:
            verdict += " (goal is for Redis)"
        figures = [f"{reply[key]:.0f} ms" for key in ("p50_ms", "p95_ms", "max_ms")]
        rows.append((r["backend"], *figures, verdict))
    _print_rows(rows, left=1)

    print(
        f"\ngunicorn -c config/gunicorn.py with {WEB_WORKERS} sync workers, wrk -t{WRK_THREADS}, "
        f"{args.duration:g} s per measurement in {args.rounds} interleaved slices, no cluster running; "
        f"{os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the end.\n"
        f"  goals: webhook req/s >= {GOAL_RATIO} x one INSERT; webhook p99 <= {GOAL_P99} x one INSERT; "
        f"/start -> reply p95 < {GOAL_REPLY_P95_MS} ms with Redis\n"
        f"  CPU ms/req: CPU time of gunicorn's processes (+ PostgreSQL's backends) per request @{LOAD_CONNECTIONS}; "
        "req/s tracks it when the web side is CPU-bound\n"
        f"  /start -> reply: {args.messages} /start from distinct users at {args.rate:g}/s to the webhook, one "
        f"telegram cluster ({results[0]['cluster_workers']} workers), fake Telegram standalone; POST start -> "
        "sendMessage received by the fake"
    )
    for r in results:
        for note in r["notes"]:
            print(f"  note ({r['backend']}): {note}")


def _print_rows(rows: list[tuple[str, ...]], left: int) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for i, row in enumerate(rows):
        cells = [
            cell.ljust(width) if column < left else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


# --- The child: one backend, settings loaded from this process's environment ----------------


def measure(args: argparse.Namespace) -> Result:
    import django

    django.setup()

    from django.conf import settings
    from django.db import connection

    from bench.views import create_insert_table
    from bots.models import Bot

    label = BACKENDS[args.measure]
    var_dir = Path(settings.VAR_DIR)
    notes: list[str] = []

    create_insert_table()
    bot = Bot.objects.create(token=BOT_TOKEN, webhook_secret=Bot.new_secret())
    notes.append(queries_per_webhook(bot))
    # For SQLite this process's open connection stands in for a running cluster's: closing the
    # last connection to a WAL database checkpoints it, which a running system never does.
    connection.ensure_connection()

    endpoints = {
        "bare view": "/bench/ok/",
        "one INSERT": "/bench/insert/",
        "webhook": bot.webhook_path(),
        "click": CLICK_PATH,
    }
    with ExitStack() as stack:
        web = stack.enter_context(Gunicorn(var_dir))
        print(f"  gunicorn up on {web.url} with {WEB_WORKERS} workers", flush=True)
        runs = WrkRuns(web.url, bot.webhook_secret, var_dir, CpuMeter(web.process.pid), click_tokens(bot))
        for path in endpoints.values():
            runs.run(path, LATENCY_CONNECTIONS, WARMUP_SECONDS)
        results = {name: {} for name in endpoints}
        for connections, key in ((LOAD_CONNECTIONS, "load"), (LATENCY_CONNECTIONS, "latency")):
            slices = interleaved(runs, endpoints, connections, args.duration, args.rounds)
            if key == "latency":
                latency_slices = slices
            for name, measured in slices.items():
                results[name][key] = combine(measured)
                errors = results[name][key]["errors"]
                if errors:
                    notes.append(f"{name} @{connections}: wrk errors {errors}")
        for name, result in results.items():
            load, latency = result["load"], result["latency"]
            result.update(
                rps=load["rps"], p50_ms=latency["p50_ms"], p99_ms=latency["p99_ms"], cpu_ms=load["cpu_ms_per_request"]
            )
            print(
                f"  {name}: {load['rps']:.0f} req/s @{LOAD_CONNECTIONS}, {result['cpu_ms']:.2f} CPU ms/request "
                "(req/s per slice "
                f"{' '.join(f'{r:.0f}' for r in load['slices'])}); p50 {latency['p50_ms']:.1f} ms, "
                f"p99 {latency['p99_ms']:.1f} ms @{LATENCY_CONNECTIONS}",
                flush=True,
            )
        per_slice = [
            f"{w / i:.2f}" if i else "-"
            for w, i in zip(results["webhook"]["load"]["slices"], results["one INSERT"]["load"]["slices"], strict=True)
        ]
        notes.append(f"webhook ÷ INSERT req/s in each interleaved slice: {' '.join(per_slice)}")
        per_round = [
            f"{merged_percentile([w], 99) / merged_percentile([i], 99):.2f}" if w["requests"] and i["requests"] else "-"
            for w, i in zip(latency_slices["webhook"], latency_slices["one INSERT"], strict=True)
        ]
        notes.append(
            f"webhook ÷ INSERT p99 @{LATENCY_CONNECTIONS} in each interleaved slice ('-': a slice without answers): "
            + " ".join(per_round)
        )
        notes.append(f"gunicorn workers replaced after max_requests meanwhile: {web.restarts()}")
        notes.extend(check_stored(runs, endpoints))
        clear_backlog()

        fake = stack.enter_context(FakeTelegramProcess(var_dir))
        Bot.objects.filter(pk=bot.pk).update(api_base_url=fake.base_url)
        bot.refresh_from_db()

        from tests.clusters import ClusterProcess

        cluster = ClusterProcess(QUEUE, var_dir)
        started = time.monotonic()
        cluster.start()
        stack.callback(stop_cluster, cluster)
        up = time.monotonic() - started
        print(f"  {QUEUE} cluster up in {up:.1f} s; fake Telegram at {fake.base_url}", flush=True)
        try:
            reply = reply_latency(web.url, bot, fake.control, args.messages, args.rate, notes)
        except Exception:
            print(f"--- qcluster log (tail) ---\n{cluster.log()[-4000:]}", file=sys.stderr)
            raise
        print(
            f"  /start -> reply: p50 {reply['p50_ms']:.0f} ms, p95 {reply['p95_ms']:.0f} ms "
            f"({args.messages} at {args.rate:g}/s)",
            flush=True,
        )

    return {
        "backend": label,
        "endpoints": results,
        "reply": reply,
        "cluster_workers": settings.QUEUES[QUEUE]["workers"],
        "notes": notes,
    }


def click_tokens(bot: Any) -> list[str]:
    """A sent broadcast with one URL button to CLICK_DELIVERIES members, and a token per delivery."""
    from bots.models import TelegramUser
    from broadcasts import clicks
    from broadcasts.models import Broadcast, Delivery

    members = TelegramUser.objects.bulk_create(
        TelegramUser(bot=bot, telegram_id=7_000_000_000 + i) for i in range(CLICK_DELIVERIES)
    )
    broadcast = Broadcast.objects.create(
        bot=bot, text="Bench", buttons=[{"text": "Pay", "url": "https://pay.example.org/"}], status="done"
    )
    Delivery.objects.bulk_create(
        Delivery(broadcast=broadcast, member=m, chat_id=m.telegram_id, status=Delivery.Status.SENT) for m in members
    )
    return [clicks.token(pk, 0) for pk in broadcast.deliveries.values_list("pk", flat=True)]


def queries_per_webhook(bot: Any) -> str:
    """The SQL one webhook request issues (the view called directly, bot already cached)."""
    from django.db import connection
    from django.test import RequestFactory
    from django.test.utils import CaptureQueriesContext

    from bots.views import webhook
    from queueing.queues import broker_for

    factory = RequestFactory()
    headers = {"X-Telegram-Bot-Api-Secret-Token": bot.webhook_secret}

    def post(update_id: int) -> int:
        body = json.dumps(update_body(update_id))
        request = factory.post(bot.webhook_path(), body, content_type="application/json", headers=headers)
        return webhook(request, telegram_id=bot.telegram_id).status_code

    post(1)  # fills the view's bot cache
    broker = broker_for(QUEUE)
    pushes = []
    broker.enqueue = lambda task, push=broker.enqueue: pushes.append(task) or push(task)
    try:
        with CaptureQueriesContext(connection) as captured:
            status = post(2)
    finally:
        del broker.enqueue
    statements = "; ".join(" ".join(q["sql"].split()[:3])[:50] for q in captured.captured_queries)
    return (
        f"one webhook request (status {status}): {len(captured.captured_queries)} SQL statements ({statements}) "
        f"and {len(pushes)} push to the {type(broker).__name__} broker"
        + ("" if connection.vendor == "sqlite" else ", after the COMMIT")
    )


def update_body(update_id: int, user_id: int | None = None, text: str = "/start") -> dict[str, Any]:
    """A private text message as Telegram sends it."""
    user_id = update_id if user_id is None else user_id
    user = {"id": user_id, "is_bot": False, "first_name": "Bench", "last_name": "User", "language_code": "en"}
    entities = [{"offset": 0, "length": len(text), "type": "bot_command"}] if text.startswith("/") else []
    return {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "from": user,
            "chat": {"id": user_id, "type": "private", "first_name": "Bench", "last_name": "User"},
            "date": 1_750_000_000,
            "text": text,
            **({"entities": entities} if entities else {}),
        },
    }


# --- gunicorn and wrk ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """`gunicorn -c config/gunicorn.py config.wsgi` on a free loopback port, this environment's settings."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / "gunicorn.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Gunicorn:
        env = dict(os.environ, BIND=f"127.0.0.1:{self.port}", WEB_CONCURRENCY=str(WEB_WORKERS))
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi:application"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/bench/ok/", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"gunicorn did not start:\n{self.log_path.read_text(errors='replace')[-4000:]}")

    def restarts(self) -> int:
        return self.log_path.read_text(errors="replace").count("Autorestarting worker")

    def __exit__(self, *exc_info: object) -> None:
        stop_process_group(self.process, "gunicorn")


def stop_process_group(process: subprocess.Popen | None, what: str, wait: float = 30) -> None:
    """SIGTERM to the leader, SIGKILL to its whole group if it takes longer than `wait`."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(wait)
    except subprocess.TimeoutExpired:
        print(f"  {what} ignored SIGTERM for {wait:g} s: killed", file=sys.stderr, flush=True)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


WRK_SCRIPT = string.Template(
    r"""-- Generated by bench.webhook: POST a Telegram update whose update_id (and user/chat id) no
-- request of this run shares: thread t of $threads sends first_id + n * $threads + t.
local path = "$path"
local headers = {["Content-Type"] = "application/json", ["X-Telegram-Bot-Api-Secret-Token"] = "$secret"}
local body = [==[$body]==]
local first_id = $first_id
$numbering
function request()
  local id = first_id + n * $threads + tid
  n = n + 1
  return wrk.format("POST", path, headers, string.format(body, $ids))
end

$done"""
)
# Each wrk thread gets its number `tid` and counts its requests in `n`.
WRK_NUMBERING = r"""local threads_started = 0

function setup(thread)
  thread:set("tid", threads_started)
  threads_started = threads_started + 1
end

function init(args)
  n = 0
end
"""
WRK_DONE = r"""function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
  -- The latency quantiles at every 0.1 %, so that slices can be merged.
  local quantiles = {}
  for i = 1, 999 do
    quantiles[i] = latency:percentile(i / 10)
  end
  io.write("BENCHQ " .. table.concat(quantiles, ",") .. "\n")
end
"""
CLICK_PATH = "/l/"
CLICK_SCRIPT = string.Template(
    r"""-- Generated by bench.webhook: GET click tracking's redirect, thread t of $threads taking
-- tokens t, t + $threads, ... in turn.
local tokens = {$tokens}
$numbering
function request()
  local token = tokens[((n * $threads + tid) % #tokens) + 1]
  n = n + 1
  return wrk.format("GET", "$path" .. token .. "/")
end

$done"""
)
MARKER = 4_242_424_242


class CpuMeter:
    """CPU time used by the server side: gunicorn's processes and, for PostgreSQL, the backends of
    the benchmark's database. Unlike req/s it hardly moves when other programs load the machine."""

    TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")

    def __init__(self, gunicorn_pid: int):
        self.gunicorn_pgid = os.getpgid(gunicorn_pid)

    def _pids(self) -> set[int]:
        from django.db import connection

        pids = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) == self.gunicorn_pgid:
                        pids.add(int(entry.name))
                except ProcessLookupError:
                    continue
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                pids.update(pid for (pid,) in cursor.fetchall())
        return pids

    def snapshot(self) -> dict[int, float]:
        ticks = {}
        for pid in self._pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            ticks[pid] = (int(fields[11]) + int(fields[12])) * self.TICK_MS  # utime + stime
        return ticks

    @staticmethod
    def used_ms(before: dict[int, float], after: dict[int, float]) -> float:
        """CPU used in between (a process that ended meanwhile is not counted)."""
        return sum(ms - before.get(pid, 0.0) for pid, ms in after.items())


class WrkRuns:
    """wrk runs against one server; every run gets ids of its own, and the requests sent are counted."""

    def __init__(self, base_url: str, secret: str, work_dir: Path, cpu: CpuMeter, click_tokens: list[str]):
        self.base_url = base_url
        self.secret = secret
        self.click_tokens = click_tokens
        self.work_dir = work_dir
        self.cpu = cpu
        self.count = 0
        self.sent: dict[str, int] = {}

    def run(self, path: str, connections: int, seconds: float) -> Result:
        self.count += 1
        first_id = self.count * 1_000_000_000
        template = json.dumps(update_body(MARKER), separators=(",", ":")).replace("%", "%%")
        placeholders = template.count(str(MARKER))
        script = self.work_dir / f"wrk-{self.count}.lua"
        if path == CLICK_PATH:
            tokens = ", ".join(f'"{token}"' for token in self.click_tokens)
            script.write_text(
                CLICK_SCRIPT.substitute(
                    path=path, tokens=tokens, threads=WRK_THREADS, numbering=WRK_NUMBERING, done=WRK_DONE
                )
            )
        else:
            script.write_text(
                WRK_SCRIPT.substitute(
                    path=path,
                    secret=self.secret,
                    body=template.replace(str(MARKER), "%d"),
                    first_id=first_id,
                    threads=WRK_THREADS,
                    ids=", ".join(["id"] * placeholders),
                    numbering=WRK_NUMBERING,
                    done=WRK_DONE,
                )
            )
        command = [
            *("wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s"),
            *("-s", str(script), f"{self.base_url}{path}"),
        ]
        before = self.cpu.snapshot()
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        cpu_ms = self.cpu.used_ms(before, self.cpu.snapshot())
        lines = {line.partition(" ")[0]: line.partition(" ")[2] for line in output.splitlines()}
        if "BENCHJSON" not in lines or "BENCHQ" not in lines:
            raise RuntimeError(f"wrk printed no result:\n{output}")
        result = json.loads(lines["BENCHJSON"])
        result["quantiles_us"] = [float(q) for q in lines["BENCHQ"].split(",")]
        result["cpu_ms"] = cpu_ms
        self.sent[path] = self.sent.get(path, 0) + result["requests"]
        return result


def interleaved(
    runs: WrkRuns, endpoints: dict[str, str], connections: int, seconds: float, rounds: int
) -> dict[str, list[Result]]:
    """`seconds` per endpoint, cut into `rounds` slices taken in turn (the order rotating), so
    that whatever else the machine does meanwhile weighs on every endpoint alike."""
    slice_seconds = max(1, round(seconds / rounds))
    measured: dict[str, list[Result]] = {name: [] for name in endpoints}
    names = list(endpoints)
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            measured[name].append(runs.run(endpoints[name], connections, slice_seconds))
    return measured


def combine(slices: list[Result]) -> Result:
    errors: Counter[str] = Counter()
    for result in slices:
        errors.update({k: result[k] for k in ("connect", "read", "write", "status", "timeout") if result[k]})
    requests = sum(r["requests"] for r in slices)
    return {
        "rps": requests / (sum(r["duration_us"] for r in slices) / 1e6),
        "slices": [r["requests"] / (r["duration_us"] / 1e6) for r in slices],
        "p50_ms": merged_percentile(slices, 50) / 1000,
        "p99_ms": merged_percentile(slices, 99) / 1000,
        "requests": requests,
        "cpu_ms_per_request": sum(r["cpu_ms"] for r in slices) / max(requests, 1),
        "errors": dict(errors),
    }


def merged_percentile(slices: list[Result], p: float) -> float:
    """A percentile of all the slices' requests together: each slice's 999 quantiles stand for its
    requests in equal shares (exact to about 0.1 % of rank)."""
    weighted = sorted(
        (q, r["requests"] / len(r["quantiles_us"])) for r in slices if r["requests"] for q in r["quantiles_us"]
    )
    if not weighted:
        return float("nan")
    rank, seen = sum(w for _, w in weighted) * p / 100, 0.0
    for value, weight in weighted:
        seen += weight
        if seen >= rank:
            return value
    return weighted[-1][0]


def check_stored(runs: WrkRuns, endpoints: dict[str, str]) -> list[str]:
    """Every answered INSERT and webhook request left its row (wrk counts requests it sent)."""
    from django.db import connection
    from django.db.models import Sum

    from bench.views import INSERT_TABLE
    from bots.models import Update
    from broadcasts.models import Click
    from queueing.models import JobRecord

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {INSERT_TABLE}")
        inserted = cursor.fetchone()[0]
    updates = Update.objects.filter(update_id__gte=1_000_000_000).count()
    jobs = JobRecord.objects.filter(label__regex=r"^update [0-9]{10,} ").count()
    sent_insert, sent_webhook = runs.sent[endpoints["one INSERT"]], runs.sent[endpoints["webhook"]]
    clicked = Click.objects.aggregate(total=Sum("count"))["total"] or 0
    return [
        f"rows stored: {inserted} for {sent_insert} INSERT requests; {updates} updates and {jobs} jobs for "
        f"{sent_webhook} webhook requests; {clicked} clicks counted for {runs.sent[CLICK_PATH]} click requests "
        "(wrk does not count the requests in flight when a run ends)"
    ]


def clear_backlog() -> None:
    """The throughput phase left thousands of queued jobs: forget them before the cluster starts."""
    from bots.models import Update
    from queueing.models import JobRecord
    from queueing.queues import broker_for

    broker_for(QUEUE).purge_queue()
    JobRecord.objects.filter(status=JobRecord.Status.QUEUED).update(status=JobRecord.Status.CANCELLED)
    Update.objects.update(status=Update.Status.PROCESSED)


def stop_cluster(cluster: Any) -> None:
    try:
        cluster.stop()
    except RuntimeError:
        cluster.kill()


# --- the fake Telegram and the reply latency -------------------------------------------------


def post_update(url: str, update: dict[str, Any], secret: str) -> int:
    from tests.fake_telegram import post_update

    return post_update(url, update, secret)


def reply_latency(base_url: str, bot: Any, fake: Any, messages: int, rate: float, notes: list[str]) -> Result:
    """POST /start from distinct users at `rate`, then match each sendMessage the fake received."""
    url = base_url + bot.webhook_path()
    first_user = 900_000_001

    # Warm-up: each worker initialises its telegram.Bot (getMe) on its first update.
    warmup = 8
    for i in range(warmup):
        status = post_update(url, update_body(500_000_001 + i, user_id=first_user - warmup + i), bot.webhook_secret)
        if status != 200:
            raise RuntimeError(f"the webhook answered {status}")
    fake.wait_for_calls(warmup, method="sendMessage", timeout=60)

    posted: dict[int, float] = {}
    update_ids: dict[int, int] = {}
    start = time.monotonic()
    for i in range(messages):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        user_id = first_user + i
        update_ids[user_id] = 600_000_001 + i
        posted[user_id] = time.time()
        status = post_update(url, update_body(update_ids[user_id], user_id=user_id), bot.webhook_secret)
        if status != 200:
            raise RuntimeError(f"the webhook answered {status}")
    deadline = time.monotonic() + 60
    while True:
        received: dict[int, float] = {}
        replies = Counter()
        for call in fake.calls("sendMessage"):
            replies[call.chat_id] += 1
            if call.chat_id in posted:
                received.setdefault(call.chat_id, call.received_at)
        if len(received) == messages or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if len(received) != messages or any(n > 1 for n in replies.values()):
        twice = sorted(chat for chat, n in replies.items() if n > 1)
        missing = sorted(set(posted) - set(received))
        others = sorted(chat for chat in replies if chat not in posted and not first_user - warmup <= chat < first_user)
        notes.append(
            f"/start: no reply yet to chats {missing}; replies to other chats {others}; "
            f"chats answered more than once: {twice}"
        )
    latencies = sorted((received[user] - posted[user]) * 1000 for user in received)
    notes.append(reply_stages(posted, received, update_ids))
    return {
        "p50_ms": statistics.median(latencies),
        "p95_ms": statistics.quantiles(latencies, n=20, method="inclusive")[18] if len(latencies) > 1 else latencies[0],
        "max_ms": latencies[-1],
    }


def reply_stages(posted: dict[int, float], received: dict[int, float], update_ids: dict[int, int]) -> str:
    """Where the reply latency goes: POST -> job enqueued -> job started (queue wait) -> reply sent."""
    from queueing.models import JobRecord

    stages: dict[str, list[float]] = {"post->enqueued": [], "enqueued->started": [], "started->reply": []}
    labels = {f"update {update_id} chat {chat}": chat for chat, update_id in update_ids.items()}
    for label, enqueued, started in JobRecord.objects.filter(label__in=labels).values_list(
        "label", "enqueued_at", "started_at"
    ):
        chat = labels[label]
        if chat not in received or started is None:
            continue
        stages["post->enqueued"].append((enqueued.timestamp() - posted[chat]) * 1000)
        stages["enqueued->started"].append((started.timestamp() - enqueued.timestamp()) * 1000)
        stages["started->reply"].append((received[chat] - started.timestamp()) * 1000)

    def p(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=20, method="inclusive")[q] if len(values) > 1 else values[0]

    parts = [f"{name} p50 {statistics.median(v):.0f} / p95 {p(v, 18):.0f} ms" for name, v in stages.items() if v]
    return "/start stages: " + "; ".join(parts)


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
