"""A throwaway PostgreSQL cluster for the test session (see conftest `pg_cluster`).

`initdb` into a temp dir, `pg_ctl start` on a free 127.0.0.1 port with durability off
(fsync, synchronous commit, full-page writes: the data dies with the session anyway), and
the server's TimeZone set to America/New_York, so any timestamp that shifts with the
server's time zone shows in every PostgreSQL test. PostgreSQL refuses to run as root: as
root the cluster belongs to the `postgres` user (Debian's package creates it).

Each test gets its own database, copied from a template that holds the models' schema at
the head revision (`records.schema.create_schema_at_head`), or an empty one.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

SERVER_TIMEZONE = "America/New_York"
TEMPLATE = "invites_template"


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl are: `pg_config --bindir`, else the newest Debian one."""
    candidates: list[str] = []
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             check=True, timeout=10)
        candidates.append(out.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda p: int(Path(p).parent.name), reverse=True)
    for cand in candidates:
        if (Path(cand) / "initdb").exists() and (Path(cand) / "pg_ctl").exists():
            return Path(cand)
    return None


class PgCluster:
    def __init__(self, bindir: Path, port: int) -> None:
        self.bindir, self.port = bindir, port
        self.root = Path(tempfile.mkdtemp(prefix="invites-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise RuntimeError("running as root needs runuser to start PostgreSQL")
            shutil.chown(self.root, user="postgres", group="postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.watchdog: subprocess.Popen[bytes] | None = None

    def _pg_ctl(self, *args: str) -> list[str]:
        return [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]

    def start(self) -> None:
        # If pytest dies without running finalizers (SIGKILL), this stops the server and
        # removes the directory once pytest is gone, whatever step it died in.
        stop = shlex.join(self._pg_ctl("stop", "-m", "immediate"))
        self.watchdog = subprocess.Popen(
            ["sh", "-c", f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
                         f"{stop} >/dev/null 2>&1; rm -rf {shlex.quote(str(self.root))}"],
            start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        subprocess.run([*self.as_user, str(self.bindir / "initdb"), "-D", str(self.data),
                        "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
                        "--no-sync"], check=True, capture_output=True, timeout=120)
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   f"-c max_connections=300 -c timezone={SERVER_TIMEZONE}")
        started = subprocess.run(self._pg_ctl("-l", str(self.log), "-w", "-t", "60",
                                              "-o", options, "start"),
                                 capture_output=True, text=True, timeout=90)
        if started.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed:\n{started.stdout}{started.stderr}{log}")

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(self._pg_ctl("stop", "-m", "immediate"), capture_output=True,
                           timeout=60)
        if self.watchdog is not None and self.watchdog.poll() is None:
            self.watchdog.kill()
            self.watchdog.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def _admin(self, sql: str) -> None:
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as conn:
            # Only identifiers this module made: no user input reaches this string.
            conn.execute(sql)  # type: ignore[arg-type]

    def make_template(self) -> None:
        from records.db import make_engine
        from records.schema import create_schema_at_head

        self._admin(f"CREATE DATABASE {TEMPLATE}")
        engine = make_engine(self.url(TEMPLATE))
        try:
            with engine.begin() as conn:
                create_schema_at_head(conn)
        finally:
            engine.dispose()  # a template must have no connections while it is copied

    def create_database(self, *, empty: bool = False) -> str:
        """A new database, with the schema at head unless `empty`; returns its name."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self._admin(f"CREATE DATABASE {name} TEMPLATE {'template0' if empty else TEMPLATE}")
        return name

    def drop_database(self, name: str) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
