"""The sandbox's memory in a JSON file across restarts (``python -m mock_provider --state-file PATH``).

A real provider does not forget the tokens it issued when billhub restarts; neither does the sandbox,
so accounts linked before a restart still fetch after it. What is kept is ``SandboxState.snapshot``:
OAuth codes, access and refresh tokens, and bill revisions. The file is written when something
changed, at most every ``INTERVAL_SECONDS``, and once more when the server stops; to a temporary file
first, then moved over the old one, so a crash mid-write leaves the previous file whole. A file that
cannot be read is reported, kept beside it as ``<name>.unreadable``, and the sandbox starts empty.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mock_provider.state import SandboxState

FORMAT = 1
INTERVAL_SECONDS = 0.5
EXTENSION = "mock_provider.persistence"


class SandboxFile:
    def __init__(self, state: SandboxState, path: Path) -> None:
        self._state = state
        self.path = path
        self._lock = threading.Lock()
        self._saved_changes = -1
        self.report: dict[str, Any] = {"file": str(path), "found": False, "restored": {}, "problem": None}
        self.saves = 0

    def restore(self) -> dict[str, Any]:
        """Loads the file, if there is one; the report says what it held or why it could not be read."""
        if self.path.exists():
            self.report["found"] = True
            try:
                document = json.loads(self.path.read_text())
                if not isinstance(document, dict) or document.get("format") != FORMAT:
                    raise ValueError("not a saved sandbox state")
                self.report["restored"] = self._state.restore(document["state"])
                self.report["saved_at"] = document.get("saved_at")
            except Exception as error:  # anything at all: the sandbox starts regardless, empty
                self.report["problem"] = f"{type(error).__name__}: {error}"[:300]
                aside = self.path.with_name(f"{self.path.name}.unreadable")
                os.replace(self.path, aside)
                self.report["kept_as"] = str(aside)
                self._state.reset()
        self._saved_changes = self._state.changes()
        return self.report

    @property
    def unsaved_changes(self) -> bool:
        return self._state.changes() != self._saved_changes

    def save_if_changed(self) -> bool:
        with self._lock:
            changes = self._state.changes()
            if changes == self._saved_changes:
                return False
            saved_at = datetime.now(UTC).isoformat(timespec="seconds")
            document = {"format": FORMAT, "saved_at": saved_at, "state": self._state.snapshot()}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            with temporary.open("w") as file:
                json.dump(document, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
            self._saved_changes = changes
            self.saves += 1
            return True

    def keep_saving(self) -> None:
        """Saves what changed every ``INTERVAL_SECONDS`` for as long as the process runs (in a daemon
        thread: the last save is the stop's)."""
        while True:
            time.sleep(INTERVAL_SECONDS)
            try:
                self.save_if_changed()
            except OSError as error:  # a full disk, say: keep serving, try again
                print(f"could not save the sandbox's state to {self.path}: {error}", flush=True)

    def status(self) -> dict[str, Any]:
        return {**self.report, "unsaved_changes": self.unsaved_changes, "saves": self.saves}
