"""The two backends every benchmark measures, and their throwaway databases: SQLite in a
temporary folder, or a PostgreSQL database named bench* and a Redis database of its own."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent


def argument_parser(module: str, doc: str | None, labels: dict[str, str]) -> argparse.ArgumentParser:
    """A benchmark's options: --backend (one of `labels`, or "all"), and the hidden ones the
    parent passes to its measuring subprocess (run_measurement)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=(doc or "").split("\n\n")[0])
    parser.add_argument("--backend", choices=[*labels, "all"], default="all")
    parser.add_argument("--measure", choices=list(labels), help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    return parser


def run_backends(
    args: argparse.Namespace,
    labels: dict[str, str],
    measure: Callable[[argparse.Namespace], dict],
    run_backend: Callable[[str, argparse.Namespace], dict],
    print_table: Callable[[list[dict], argparse.Namespace], None],
) -> int:
    """A benchmark's main(): in the measuring subprocess (--measure), `measure` and write its
    result; in the parent, `run_backend` for each backend --backend names ("all": every one of
    `labels`, backend -> name shown), then the table of those that ran. A backend that fails
    is reported and the others still run; returns 1 when any failed."""
    if args.measure:
        Path(args.result_file).write_text(json.dumps(measure(args)))
        return 0
    names = list(labels) if args.backend == "all" else [args.backend]
    results: list[dict] = []
    failed = False
    for name in names:
        print(f"=== {labels[name]}", flush=True)
        try:
            results.append(run_backend(name, args))
        except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
            print(f"!!! {labels[name]} failed: {exc}", file=sys.stderr, flush=True)
            failed = True
    if results:
        print_table(results, args)
    return 1 if failed else 0


def print_aligned(rows: Sequence[Sequence[str]], underline: bool = False) -> None:
    """Rows of cells as a table: the first column to the left, the others to the right; with
    `underline`, a rule under the first row (the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, (label, *cells) in enumerate(rows):
        print("  ".join([label.ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells, widths[1:], strict=True))]))
        if underline and i == 0:
            print("  ".join("-" * w for w in widths))


def print_notes(results: list[dict]) -> None:
    for result in results:
        for note in result["notes"]:
            print(f"  note ({result['backend']}): {note}")


@contextmanager
def clusters_running(clusters: list) -> Iterator[list]:
    """Start the (tests.clusters) ClusterProcess objects; stop them afterwards, killing any that
    will not stop, after printing each one's log tail if the measurement failed."""
    try:
        for cluster in clusters:
            cluster.start()
        yield clusters
    except Exception:
        for cluster in clusters:
            print(f"--- qcluster {cluster.queue} log (tail) ---\n{cluster.log()[-3000:]}", file=sys.stderr)
        raise
    finally:
        for cluster in reversed(clusters):
            try:
                cluster.stop()
            except RuntimeError:
                cluster.kill()


@contextmanager
def throwaway_storage(name: str, prefix: str, postgres_url: str, flush: Callable[[], None]) -> Iterator[Path]:
    """A temporary folder (the SQLite database and VAR_DIR); for "postgres" also a fresh
    database and an empty Redis database (`flush`), dropped and emptied afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir="/tmp") as tmp:
        if name == "postgres":
            flush()
            recreate_postgres(postgres_url)
        try:
            yield Path(tmp)
        finally:
            if name == "postgres":
                drop_postgres(postgres_url)
                try:
                    flush()
                except RuntimeError as exc:
                    print(f"  Redis left as it is: {exc}", file=sys.stderr, flush=True)


def run_measurement(module: str, name: str, env: dict[str, str], folder: Path, options: list[str]) -> dict:
    """Migrate, then run `python -m module --measure name` in a process of its own with `env`,
    and return the JSON it wrote."""
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    result_file = folder / "result.json"
    command = [sys.executable, "-m", module, "--measure", name, "--result-file", str(result_file), *options]
    subprocess.run(command, cwd=ROOT, env=env, check=True)
    return json.loads(result_file.read_text())


def backend_env(
    name: str, var_dir: Path, postgres_url: str, redis_url: str, settings: str = "config.settings", **extra: str
) -> dict[str, str]:
    """The process environment wins over a developer's .env, so every setting that matters is set."""
    env = dict(os.environ)
    env.pop("Q_CLUSTER_NAME", None)
    # DEBUG off as in production, but plain HTTP: benchmarks talk to the app without TLS.
    env.update(
        DJANGO_SETTINGS_MODULE=settings,
        VAR_DIR=str(var_dir),
        DEBUG="0",
        SECURE_SSL_REDIRECT="0",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    if name == "sqlite":
        env.update(DATABASE_URL=f"sqlite:///{var_dir / 'db.sqlite3'}", REDIS_URL="")
    else:
        env.update(DATABASE_URL=postgres_url, REDIS_URL=redis_url)
    return env


def _postgres_target(url: str) -> tuple[str, str]:
    """(database name, URL of the maintenance database) -- refusing anything not named bench*."""
    parts = urlsplit(url)
    database = parts.path.lstrip("/")
    if not database.startswith("bench"):
        raise SystemExit(f"Refusing to drop database {database!r}: the benchmark's database name starts with 'bench'")
    return database, urlunsplit(parts._replace(path="/postgres"))


def recreate_postgres(url: str) -> None:
    from psycopg import sql

    drop_postgres(url)
    database, maintenance = _postgres_target(url)
    _postgres_admin(maintenance, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def drop_postgres(url: str) -> None:
    from psycopg import sql

    database, maintenance = _postgres_target(url)
    _postgres_admin(maintenance, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def _postgres_admin(url: str, statement: Any) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


# Database 0 is the developer's; the tests take 15 downwards, one per pytest-xdist worker.
RESERVED_REDIS_DBS = {"", "0", "11", "12", "13", "14", "15"}


def flush_redis(url: str, forbidden_dbs: set[str] = frozenset(), check_others: bool = True) -> None:
    """Empty the benchmark's Redis database -- never a reserved one or one in `forbidden_dbs`
    (other benchmarks'), and not while another program is connected to it."""
    import redis

    if urlsplit(url).path.strip("/") in RESERVED_REDIS_DBS | forbidden_dbs:
        raise SystemExit(f"Refusing to flush {url}: give the benchmark a Redis database of its own")
    client = redis.from_url(url)
    if check_others:
        me, db = client.client_id(), client.connection_pool.connection_kwargs.get("db", 0)
        others = [c for c in client.client_list() if int(c["db"]) == db and int(c["id"]) != me]
        if others:
            raise RuntimeError(
                f"{len(others)} other clients are connected to {url} (commands: "
                f"{', '.join(sorted({c['cmd'] for c in others}))}): it is not the benchmark's own. "
                "Pass another --redis-url"
            )
    client.flushdb()


class RssSampler:
    """Every 0.5 s, VmRSS of every process in some process groups: each process's peak (with
    its command line), the largest of them, and the largest sum over the groups."""

    def __init__(self, pgids: list[int], interval: float = 0.5):
        self.pgids, self.interval = set(pgids), interval
        self.peaks: dict[int, tuple[str, int]] = {}  # pid -> (command, peak kB)
        self.peak_process = self.peak_group = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
                try:
                    if os.getpgid(pid) not in self.pgids:
                        continue
                    status = Path(f"/proc/{pid}/status").read_text()
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
                except (OSError, ProcessLookupError):
                    continue
                kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
                total += kb
                self.peaks[pid] = (command, max(kb, self.peaks.get(pid, ("", 0))[1]))
                self.peak_process = max(self.peak_process, kb)
            self.peak_group = max(self.peak_group, total)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds(pgids: Sequence[int] = (), database: str = "") -> float:
    """CPU time (user + system, children reaped included) of every process in the process groups
    `pgids`, plus PostgreSQL's backends serving `database`: take it before and after, the
    difference is what a measurement cost in CPU, whatever else the machine was running."""
    ticks = 0
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ours = int(fields[2]) in pgids  # fields[2] is the process group (stat field 5)
            if not ours and database:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                ours = command.startswith("postgres: ") and f" {database} " in command
        except (OSError, IndexError, ValueError):
            continue
        if ours:
            ticks += sum(int(n) for n in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")
