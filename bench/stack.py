"""The stack the benches run against, and what they share: `open_stack` starts a headless
Temporal dev server (127.0.0.1, a free port, in memory or on a SQLite file; our search
attributes), a mail catcher, a temporary SQLite database with one organisation, and worker
subprocesses, then stops it all (the temp dir, with the logs, is kept after an error).

    .venv/bin/python bench/stack.py worker KIND SETTINGS.json

runs one worker until SIGTERM (what `open_stack` starts): `project`, the production worker
(`worker.build_worker`), or `bare`, the bare shape of bench_flow.py (bare_shape.py).
`Stack.cpu` reads the CPU of the server and of each worker from /proc; `seed_paid_invitees`
and `bounded` are the benches' seeding and fan-out.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydantic import SecretStr  # noqa: E402
from sqlalchemy import Engine  # noqa: E402
from sqlmodel import Session  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from config import Settings, connect_temporal  # noqa: E402
from demo.seed import IndividualSpec, create_individual, create_org  # noqa: E402
from messages import search_attributes  # noqa: E402
from records.db import init_db, make_engine  # noqa: E402

ADMIN = "admin@bench.test"
KINDS = ("bare", "project")  # the workers: the bare shape, the production worker

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU of a process (all its threads) from /proc; None elsewhere."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # fields[0] is field 3 (state) of proc(5)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stop_process(proc: subprocess.Popen[bytes], grace: float = 15) -> None:
    """SIGTERM to the process group it leads, SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def spawn(args: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
    # Its own session: Ctrl-C reaches only this process, which then stops the child.
    return subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, **kw)


def start_dev_server(port: int, tmp: Path, persistence: str) -> subprocess.Popen[bytes]:
    temporal = Path(sys.executable).parent / "temporal"
    args = [str(temporal), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
            "--headless", "--log-level", "error", *search_attributes.cli_flags(),
            "--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true"]
    if persistence == "file":
        args += ["--db-filename", str(tmp / "temporal.db")]
    return spawn(args, tmp / "temporal.log")


async def connect(settings: Settings, proc: subprocess.Popen[bytes] | None) -> Client:
    deadline = time.monotonic() + 60
    while True:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the dev server exited with code {proc.returncode}")
        try:
            return await connect_temporal(settings)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def database_url(db: str | None, tmp: Path) -> str:
    if db is None:
        return f"sqlite:///{tmp / 'platform.db'}"
    return db if "://" in db else f"sqlite:///{Path(db).resolve()}"


def settings_file(settings: Settings, path: Path) -> Path:
    """What a worker subprocess needs to build the same Settings (secret included)."""
    data = settings.model_dump(mode="json")
    data["link_secret"] = settings.link_secret.get_secret_value()
    path.write_text(json.dumps(data))
    return path


def start_worker(kind: str, settings: Settings, tmp: Path,
                 name: str | None = None) -> subprocess.Popen[bytes]:
    config = settings_file(settings, tmp / f"settings-{kind}.json")
    return spawn([sys.executable, str(Path(__file__)), "worker", kind, str(config)],
                 tmp / f"worker-{name or kind}.log", cwd=ROOT,
                 env={**os.environ, "PYTHONPATH": str(ROOT)})


def log_text(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


async def wait_ready(proc: subprocess.Popen[bytes], log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while "ready" not in log_text(log):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"a worker did not start ({log}):\n{log_text(log)[-2000:]}")
        await asyncio.sleep(0.1)



async def serve_worker(kind: str, settings: Settings) -> None:
    """`stack.py worker KIND SETTINGS.json`: one worker until SIGTERM."""
    client = await connect_temporal(settings)
    if kind == "project":
        from worker import build_worker

        engine = make_engine(settings.database_url)
        worker = build_worker(client, settings, engine)
    else:
        # Imported by name (not __main__), so that the sandbox can import it again.
        import bare_shape

        worker = Worker(client, task_queue=settings.task_queue,
                        workflows=[bare_shape.BareShape], activities=[bare_shape.bare_step],
                        max_concurrent_activities=50)  # as build_worker does today
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with worker:
        print("ready", flush=True)
        await stop.wait()


@dataclass
class Stack:
    """Everything a bench runs against; `open_stack` starts it and stops it all."""

    tmp: Path
    settings: Settings  # the project's (task queue, database, mail, links)
    bare_settings: Settings
    temporal: Client
    engine: Engine
    account_id: int
    server: subprocess.Popen[bytes] | None
    # Worker processes per kind (`processes` of them each, all on that kind's task queue).
    workers: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)

    def cpu(self) -> dict[str, float | None]:
        """CPU seconds so far: server, each kind's workers (summed), and this process
        (driver, mail catcher)."""
        return {"server": cpu_seconds(self.server.pid if self.server else None),
                **{f"worker_{k}": _sum(cpu_seconds(p.pid) for p in ps)
                   for k, ps in self.workers.items()},
                "driver": own_cpu_seconds()}

    def check_alive(self) -> None:
        named = [(f"{k} worker {i + 1}", p) for k, ps in self.workers.items()
                 for i, p in enumerate(ps)]
        for name, proc in [("dev server", self.server), *named]:
            if proc is not None and proc.poll() is not None:
                raise SystemExit(f"the {name} process exited with code {proc.returncode}; "
                                 f"logs in {self.tmp}")


@asynccontextmanager
async def open_stack(server: str, db: str | None, seats: int, kinds: Iterable[str] = KINDS,
                     http_port: int | None = None, processes: int = 1) -> AsyncIterator[Stack]:
    """`processes`: worker processes per kind (the same number for every kind)."""
    from mailcatcher import start_catcher

    tmp = Path(tempfile.mkdtemp(prefix="bench-flow-"))
    own_server = server in ("memory", "file")
    address = f"127.0.0.1:{free_port()}" if own_server else server
    settings = Settings(
        database_url=database_url(db, tmp), temporal_address=address,
        task_queue=f"bench-{uuid.uuid4().hex}",
        recordings_dir=tmp / "recordings", maildir=tmp / "mail", smtp_host="127.0.0.1",
        smtp_port=free_port(), link_secret=SecretStr(uuid.uuid4().hex),
        public_base_url=f"http://127.0.0.1:{http_port or 8000}", metrics_port=None)
    bare_settings = settings.model_copy(update={"task_queue": settings.task_queue + "-bare"})
    engine = make_engine(settings.database_url)
    init_db(engine)
    with Session(engine) as s:
        org = create_org(s, f"Bench {tmp.name}", owner=f"owner.{tmp.name}@bench.test",
                         admins=(ADMIN,), seats=seats)
        s.commit()
        assert org.id is not None
        account_id = org.id
    catcher = start_catcher("127.0.0.1", settings.smtp_port, settings.maildir)
    proc = start_dev_server(int(address.rsplit(":", 1)[1]), tmp, server) if own_server else None
    stack: Stack | None = None
    finished = False
    try:
        temporal = await connect(settings, proc)
        stack = Stack(tmp, settings, bare_settings, temporal, engine, account_id, proc)
        for kind in kinds:
            stack.workers[kind] = [
                start_worker(kind, settings if kind == "project" else bare_settings, tmp,
                             _worker_name(kind, i)) for i in range(processes)]
        for kind, procs in stack.workers.items():
            for i, worker in enumerate(procs):
                await wait_ready(worker, tmp / f"worker-{_worker_name(kind, i)}.log")
        yield stack
        finished = True
    finally:
        for procs in (stack.workers.values() if stack else ()):
            for worker in procs:
                stop_process(worker)
        if proc is not None:
            stop_process(proc)
        catcher.stop()
        engine.dispose()
        if finished:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs and data kept in {tmp}", file=sys.stderr)


def _worker_name(kind: str, index: int) -> str:
    return kind if index == 0 else f"{kind}-{index + 1}"


def _sum(values: Iterable[float | None]) -> float | None:
    known = list(values)
    return None if any(v is None for v in known) else sum(v for v in known if v is not None)


def seed_paid_invitees(stack: Stack, emails: list[str]) -> None:
    """Paid individuals with a little of everything: the whole path runs, quickly."""
    now = datetime.now(UTC)
    with Session(stack.engine) as s:
        for email in emails:
            create_individual(s, stack.settings.recordings_dir, IndividualSpec(
                email=email, first_name="Paid", last_name="Invitee", price_minor=1499,
                period_start=now - timedelta(days=10), period_end=now + timedelta(days=20),
                meetings=2, recordings=1, recording_bytes=4096, chat=5, contacts=2,
                reports=1))
        s.commit()


async def bounded(items: list[str], concurrency: int,
                  work: Callable[[str], Awaitable[None]]) -> None:
    """`work(item)` for every item, `concurrency` at a time."""
    pending = iter(items)

    async def runner() -> None:
        for item in pending:
            await work(item)

    async with asyncio.TaskGroup() as tg:
        for _ in range(max(1, min(concurrency, len(items)))):
            tg.create_task(runner())


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "worker":
        raise SystemExit("usage: stack.py worker KIND SETTINGS.json (started by open_stack)")
    asyncio.run(serve_worker(sys.argv[2], Settings(**json.loads(Path(sys.argv[3]).read_text()))))
