"""Bounded queues between the DSP thread and worker threads, with an explicit policy when full.

Policies: ``drop_oldest`` (default for analysis nodes: the freshest audio matters most),
``drop_newest`` (keep what is queued, refuse the new item) and ``block`` (the producer waits; used
for file runs as fast as possible and for recorders that must never lose a sample). Every drop is
counted; ``max_depth`` records the high-water mark.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class BoundedQueue:
    def __init__(self, maxsize: int, policy: str = "drop_oldest"):
        if policy not in ("drop_oldest", "drop_newest", "block"):
            raise ValueError(f"unknown queue policy {policy!r}")
        self.maxsize = maxsize
        self.policy = policy
        self._q: deque[Any] = deque()
        self._cv = threading.Condition()
        self.drops = 0
        self.max_depth = 0

    def __len__(self) -> int:
        return len(self._q)

    def put(self, item: Any, force: bool = False) -> bool:
        """Enqueue ``item``; returns False if it (or the oldest item) was dropped.

        ``force`` bypasses the size limit (control markers such as flush/stop are never dropped).
        """
        with self._cv:
            dropped = False
            if not force and len(self._q) >= self.maxsize:
                if self.policy == "drop_newest":
                    self.drops += 1
                    return False
                if self.policy == "drop_oldest":
                    self._q.popleft()
                    self.drops += 1
                    dropped = True
                else:
                    while len(self._q) >= self.maxsize:
                        self._cv.wait(0.1)
            self._q.append(item)
            # the high-water mark of work: a forced marker past a full queue is not more of it
            depth = min(len(self._q), self.maxsize)
            if depth > self.max_depth:
                self.max_depth = depth
            self._cv.notify_all()
            return not dropped

    def clear(self) -> int:
        """Drop every queued item (counted as drops); returns how many."""
        with self._cv:
            n = len(self._q)
            self._q.clear()
            self.drops += n
            self._cv.notify_all()
            return n

    def get(self, timeout: float | None = None) -> Any:
        """Dequeue the oldest item; raises TimeoutError if none arrives in ``timeout``."""
        with self._cv:
            if not self._q:
                self._cv.wait_for(lambda: bool(self._q), timeout)
                if not self._q:
                    raise TimeoutError
            item = self._q.popleft()
            self._cv.notify_all()
            return item
