"""A local SMTP server (aiosmtpd) that keeps every message it receives in a Maildir.

`make run` starts it on settings.smtp_host:smtp_port, storing into settings.maildir
(.data/mail). Tests start one on a free port with `start_catcher`.
"""

from __future__ import annotations

import argparse
import itertools
import mailbox
import os
import signal
import socket
import threading
import time
import uuid
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller


class MaildirHandler:
    def __init__(self, maildir: Path) -> None:
        for sub in ("tmp", "new", "cur"):  # Maildir(create=True) skips an existing dir
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        self.maildir = maildir
        self._unique = f"{os.getpid()}_{uuid.uuid4().hex[:8]}.{socket.gethostname()}"
        self._count = itertools.count()

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        """Stored as received (line ends as in a Maildir: LF), the Maildir way: written in
        tmp/, then renamed into new/ (readers never see half a message). Not parsed: the
        catcher should cost little next to what it catches (bench/)."""
        data = (envelope.original_content or envelope.content).replace(b"\r\n", b"\n")
        name = f"{time.time():.6f}.{self._unique}_{next(self._count)}"
        tmp = self.maildir / "tmp" / name
        tmp.write_bytes(data)
        os.rename(tmp, self.maildir / "new" / name)
        return "250 Message accepted for delivery"


def start_catcher(host: str, port: int, maildir: Path) -> Controller:
    controller = Controller(MaildirHandler(maildir), hostname=host, port=port)
    controller.start()
    return controller


def read_messages(maildir: Path) -> list[EmailMessage]:
    """Every caught message, oldest first, parsed with the modern email API."""
    box = mailbox.Maildir(str(maildir), create=True)
    msgs = []
    for key in box.keys():
        with box.get_file(key) as fh:
            raw = fh.read()
        msgs.append((raw, message_from_bytes(raw, policy=policy.default)))
    msgs.sort(key=lambda pair: pair[1].get("Date", ""))
    return [m for _, m in msgs]  # type: ignore[misc]


def main() -> None:
    from config import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=settings.smtp_host)
    parser.add_argument("--port", type=int, default=settings.smtp_port)
    parser.add_argument("--maildir", type=Path, default=settings.maildir)
    args = parser.parse_args()
    controller = start_catcher(args.host, args.port, args.maildir)
    print(f"mail catcher: smtp://{args.host}:{args.port} -> {args.maildir}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
