"""Side work a node hands to its own thread: writing files, posting to a web hook.

:class:`BackgroundJobs` is one daemon thread draining a bounded queue, so the node's
``process`` never waits on a disk or a network. It counts what is queued or in progress
(``pending``), lets a node wait for it at the end of the stream (``wait_idle``) and give up on
what is still queued (``abandon``). Used by ``sound.yamnet`` for evidence clips and webhooks.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from typing import Any

log = logging.getLogger(__name__)


class BackgroundJobs:
    """One daemon thread draining a bounded queue; ``pending`` counts queued + in-flight jobs.
    When the queue is full, ``submit`` drops the new job, or with ``drop_oldest`` the oldest
    queued one; either way it returns False (the caller counts and reports)."""

    def __init__(self, name: str, handler, errors: deque[str], maxsize: int = 32,
                 drop_oldest: bool = False):
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.maxsize = maxsize
        self._drop_oldest = drop_oldest
        self._handler = handler
        self._errors = errors
        self._lock = threading.Lock()
        self.stop_event = threading.Event()
        self.pending = 0
        self.dropped = 0
        self._idle = threading.Condition(self._lock)
        self._t = threading.Thread(target=self._loop, name=name, daemon=True)
        self._t.start()

    def submit(self, job: Any) -> bool:
        with self._lock:
            self.pending += 1
        while True:
            try:
                self._q.put_nowait(job)
                break
            except queue.Full:
                if not self._drop_oldest:
                    with self._lock:
                        self.pending -= 1
                        self.dropped += 1
                    return False
            try:  # make room: the oldest queued job goes
                self._q.get_nowait()
            except queue.Empty:  # the worker took it meanwhile: room now
                continue
            with self._lock:
                self.pending -= 1
                self.dropped += 1
            self._q.put_nowait(job)  # the only producer: the slot just freed is still free
            return False
        return True

    def abandon(self) -> int:
        """End of stream, out of time: drop the queued jobs (returned: how many) and tell the
        job in progress to give up its retries (``stop_event``); it is counted by its outcome."""
        self.stop_event.set()
        n = 0
        while True:
            try:
                job = self._q.get_nowait()
            except queue.Empty:
                break
            if job is None:
                continue
            n += 1
        with self._lock:
            self.pending -= n
            self._idle.notify_all()
        return n

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            try:
                self._handler(job)
            except Exception as e:  # noqa: BLE001 - a side output must never kill the node
                msg = f"{self._t.name}: {type(e).__name__}: {e}"
                log.info(msg)  # reported as engine.node_error
                self._errors.append(msg)
            finally:
                with self._lock:
                    self.pending -= 1
                    self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._lock:
            while self.pending:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float) -> None:
        self.wait_idle(timeout)
        self.stop_event.set()
        try:
            self._q.put(None, timeout=1.0)
        except queue.Full:
            pass
        self._t.join(timeout=max(timeout, 1.0))
