"""Exception hierarchy.

Every error a *user* can cause (a bad graph file, a missing model, a corrupt audio file, an unknown
device) is an :class:`EngineError`. The CLI prints its message as one paragraph and exits with
``exit_code`` (2) without a traceback. Messages always say what is wrong *and* how to fix it.
"""

from __future__ import annotations


class EngineError(Exception):
    """Root of all user-facing errors. ``str(err)`` is the complete message."""

    exit_code: int = 2


class GraphError(EngineError):
    """A graph file is malformed. ``problems`` lists every problem found, each with its path."""

    def __init__(self, source: str, problems: list[str], where: str = "in graph file"):
        self.source = source
        self.problems = list(problems)
        n = len(self.problems)
        head = f"{source}: {n} problem{'s' if n != 1 else ''} {where}"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


class NegotiationError(EngineError):
    """Raised by ``Node.negotiate`` when the audio formats offered to a node do not fit."""


class AudioFileError(EngineError):
    """An audio file cannot be read: names the file and what is wrong with it."""


class ModelError(EngineError):
    """A model is missing, corrupt or fails its checksum; the message names the fetch command."""


class DeviceError(EngineError):
    """An audio device cannot be found or opened (the host API's own message is kept)."""


class ParamError(EngineError):
    """A run-time parameter change (e.g. ``Engine.set``) is invalid."""


class PortError(EngineError, KeyError):
    """A node's ``process`` asked its :class:`~engine.node.NodeIO` for a port it does not have
    (``io.emit("evts", ev)``). Still a ``KeyError`` for code that catches one."""

    def __str__(self) -> str:  # not KeyError's repr of the message
        return str(self.args[0]) if self.args else ""
