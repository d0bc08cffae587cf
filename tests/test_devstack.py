"""`make run`'s supervisor: the whole stack comes up within 90 s and SIGINT stops every
process it started. Runs devstack.py exactly as `make run` does, on free ports and a
temporary data directory."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from config import ROOT
from records.db import make_engine
from records.schema import current_revisions, head_revision
from tests.conftest import free_port

pytestmark = [pytest.mark.devstack, pytest.mark.timeout(200)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (localhost)
        return resp.status, resp.read().decode()


async def test_make_run_stack_comes_up_and_stops_cleanly(tmp_path: Path) -> None:
    ports = {name: free_port()
             for name in ("temporal", "ui", "smtp", "http", "metrics", "admin")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVITES_", "TEMPORAL_"))}
    env.update({
        # Only the data dir: the database, Maildir, recordings and logs follow it.
        "INVITES_DATA_DIR": str(tmp_path / "data"),
        "INVITES_TEMPORAL_ADDRESS": f"127.0.0.1:{ports['temporal']}",
        "INVITES_UI_PORT": str(ports["ui"]),
        "INVITES_SMTP_PORT": str(ports["smtp"]),
        "INVITES_HTTP_PORT": str(ports["http"]),
        "INVITES_PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['http']}",
        "INVITES_METRICS_PORT": str(ports["metrics"]),
        "INVITES_ADMIN_PORT": str(ports["admin"]),
    })
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "devstack.py"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    pids: dict[str, int] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        ready_after = time.monotonic() - started
        text = "".join(output)
        assert "Ready in" in text, text
        assert ready_after < 90, f"stack took {ready_after:.0f}s"
        pids = json.loads((tmp_path / "data" / "devstack.pids").read_text())
        assert set(pids) == {"temporal", "mailcatcher", "worker", "linkhandler", "admin"}

        status, _ = _get(f"http://127.0.0.1:{ports['ui']}/")
        assert status == 200
        client = await Client.connect(f"127.0.0.1:{ports['temporal']}")
        deadline = time.monotonic() + 30
        pollers: list[object] = []
        while time.monotonic() < deadline and not pollers:
            resp = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
                namespace="default", task_queue=TaskQueue(name="invitations"),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW))
            pollers = list(resp.pollers)
        assert pollers, "no worker polls the invitations task queue"

        demo_links = [ln.split()[-1] for ln in output if "/i/" in ln]
        demo_emails = [ln.split()[0] for ln in output if "/i/" in ln]
        assert len(demo_links) == 4, text
        status, page = _get(demo_links[0])
        assert status == 200 and "Acme" in page
        # The printed sign-in link opens the console as the demo admin (once).
        console = f"http://127.0.0.1:{ports['admin']}"
        assert f"Admin console     {console}" in text, text
        [signin] = [ln.split()[-1] for ln in output if "/signin/" in ln]
        assert signin.startswith(console + "/signin/")
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with browser.open(signin, timeout=10) as resp:  # asks to confirm
            form = re.search(r'name="csrf" value="([^"]+)"', resp.read().decode())
        assert form is not None
        confirm = urllib.parse.urlencode({"csrf": form.group(1)}).encode()
        with browser.open(signin, data=confirm, timeout=10) as resp:  # 303 to /users
            users = resp.read().decode()
            assert resp.status == 200 and resp.url == console + "/users"
        assert 'id="signed-in-as">admin@acme.test<' in users and "owner@acme.test" in users
        with browser.open(console + "/users/pending", timeout=10) as resp:
            listed = resp.read().decode()
        assert all(f'data-email="{e}"' in listed for e in demo_emails), (demo_emails, listed)
        try:
            urllib.request.urlopen(signin, timeout=10)  # noqa: S310 (localhost)
            raise AssertionError("the sign-in link worked twice")
        except urllib.error.HTTPError as used:
            assert used.code == 410
        assert (tmp_path / "data" / "platform.db").exists()
        assert (tmp_path / "data" / "logs" / "worker.log").exists()
        assert (tmp_path / "data" / "logs" / "admin.log").exists()
        assert any((tmp_path / "data" / "recordings").iterdir())  # the demo's recordings
        engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'platform.db'}")
        try:
            with engine.connect() as conn:  # migrated at start-up
                assert current_revisions(conn) == (head_revision(),)
        finally:
            engine.dispose()
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "Stopped." in rest
    left = {name: pid for name, pid in pids.items() if _alive(pid)}
    assert not left, f"still running after SIGINT: {left}"
    assert not (tmp_path / "data" / "devstack.pids").exists()
