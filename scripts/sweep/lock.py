"""A run folder's lock, ``<run folder>/.lock``: created with O_EXCL, refreshed every minute while the
run goes on, so that two sweeps on the same output folder (on one host or several) never run one run
twice; a lock whose process is gone, or that has not been refreshed for ``STALE_LOCK_S``, is taken over."""
import contextlib
import json
import os
import os.path as osp
import socket
import time
import uuid

LOCK = ".lock"
HEARTBEAT_S = 60  # a running run's lock file is touched this often ...
STALE_LOCK_S = 600  # ... and taken over when untouched this long (its holder died on another host)


def _read_lock(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}  # gone, or its holder died between creating and filling it


def _stale(path, holder):
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return True
    if age > STALE_LOCK_S:
        return True
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    return False


def _create_exclusive(path, content=""):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(content)
    return True


class RunLock:
    """``<run folder>/.lock``: who runs it (host, pid, a token); refreshed while the run goes on."""

    def __init__(self, folder):
        self.path = osp.join(folder, LOCK)
        self.token = uuid.uuid4().hex

    def acquire(self):
        """True when this process now holds the lock; False when a live holder has it."""
        content = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        if _create_exclusive(self.path, content):
            return True
        if not self._break_if_stale():
            return False
        return _create_exclusive(self.path, content)

    def _break_if_stale(self):
        # One breaker at a time (its own O_EXCL file), re-checking under it, so that two sweeps
        # finding the same stale lock cannot both remove it, the second one removing a fresh lock.
        breaker = self.path + ".break"
        if not _create_exclusive(breaker):
            if _stale(breaker, {}):  # a breaker that died midway
                _remove(breaker)
            return False
        try:
            if not _stale(self.path, _read_lock(self.path)):
                return False
            print(f"Taking over the stale lock {self.path} ({_read_lock(self.path) or 'unreadable'})")
            _remove(self.path)
            return True
        finally:
            _remove(breaker)

    def holder(self):
        return _read_lock(self.path)

    def refresh(self):
        with contextlib.suppress(FileNotFoundError):  # taken over after a long stall: the run goes on
            os.utime(self.path)

    def release(self):
        if self.holder().get("token") == self.token:  # never remove a lock someone else took over
            _remove(self.path)


def _remove(path):
    with contextlib.suppress(FileNotFoundError):  # another sweep removed it first
        os.remove(path)


def held_elsewhere(folder):
    path = osp.join(folder, LOCK)
    return osp.exists(path) and not _stale(path, _read_lock(path))
