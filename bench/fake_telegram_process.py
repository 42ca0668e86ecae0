"""The fake Telegram in a process of its own (`python -m tests.fake_telegram`), so that the
benchmarked clusters compete with it for the CPU as they would with the network, not share a
process with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class FakeTelegramProcess:
    """`with FakeTelegramProcess(folder, "--record", "counts") as fake:` then `fake.base_url`
    and `fake.control` (a FakeTelegramControl)."""

    def __init__(self, log_dir: Path, *options: str):
        self.log_path = log_dir / "fake-telegram.log"
        self.options = options
        self.process: subprocess.Popen | None = None
        self.base_url = ""

    def __enter__(self) -> FakeTelegramProcess:
        from tests.fake_telegram import FakeTelegramControl

        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.fake_telegram", "--port", "0", *self.options],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.process.poll() is None:
            first = self.log_path.read_text(errors="replace").partition("\n")
            if first[1] and first[0].startswith("http"):
                self.base_url = first[0].strip()
                self.control = FakeTelegramControl(self.base_url)
                self.control.wait_until_up()
                return self
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"the fake Telegram did not start:\n{self.log_path.read_text(errors='replace')}")

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
