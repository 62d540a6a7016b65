"""``allocate`` and ``explain -f`` on two processors: reading the input while the models load,
then checking part of it in a second process.

One interpreter runs one thread of Python at a time, and a large input spends most of the
command in three steps that do not need each other's results until the end: importing the
models and the allocator, reading the YAML, and checking every object as the API server
would. On a machine with a second processor a forked child takes part of that work:

1. :func:`start_reading` forks a child *before* the models are imported; it reads every
   file (:func:`~dra_driver.manifest_read.read_documents`) and sends the documents back
   through a pipe with :mod:`marshal` (plain dicts, lists, strings and numbers: about 10 ms
   per megabyte both ways), while this process imports the models.
2. :func:`load_inventory` forks a child *after* the models are imported; it checks a share
   of the documents (:func:`~dra_driver.manifests.document_is_clean`) and says only
   whether all of them were clean (its exit status), while this process parses every
   document and checks the rest.

Neither child ever decides an outcome. Only an answer of "all clean" is used; anything
else (a problem found, a crash, a signal, a value marshal cannot carry) makes this process
do that step itself, the way it does without a child, so every result, error message and
warning is the one the serial path gives, in the same order. A child writes nothing to
stdout or stderr and ends with :func:`os._exit` (no buffers flushed, no exit handlers
run).

Used only where it pays: ``os.fork`` exists, at least two processors are available to
this process, no other thread runs (forking a threaded process is unsafe), no input comes
from stdin (step 1), and the input is large (:data:`MIN_BYTES`, :data:`MIN_WEIGHT`).
``--serial`` (env ``DRA_DRIVER_SERIAL``) turns it off.
"""

from __future__ import annotations

import contextlib
import gc
import marshal
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, NoReturn

from dra_driver.manifest_files import manifest_files

if TYPE_CHECKING:
    from dra_driver.manifest_read import Document
    from dra_driver.manifests import Inventory

__all__ = ["MIN_BYTES", "MIN_WEIGHT", "PendingRead", "load_inventory", "start_reading"]

#: Input (bytes of files) under which reading stays in this process: a fork and the
#: marshal round trip cost about as much as reading a quarter of a megabyte.
MIN_BYTES: Final = 256 * 1024
#: Documents plus their devices under which checking stays in this process.
MIN_WEIGHT: Final = 400
#: The share of the documents the checking child takes: this process parses all of them
#: (about 0.6 of the checking work per document) and checks the rest.
CHILD_SHARE: Final = 0.6
_CHUNK: Final = 1 << 20


def can_fork() -> bool:
    """Whether a second process can help here: fork exists, two processors are available
    to this process, and no thread other than this one runs."""
    if not hasattr(os, "fork"):
        return False
    try:
        processors = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        processors = os.cpu_count() or 1
    return processors >= 2 and _single_threaded()


def _single_threaded() -> bool:
    """Whether this thread is the process's only one (a fork copies no other thread, and
    a lock another thread holds stays held in the child)."""
    threading = sys.modules.get("threading")
    return threading is None or threading.active_count() == 1


def _total_bytes(files: Sequence[str]) -> int:
    total = 0
    for file in files:
        with contextlib.suppress(OSError):  # the reader names the file
            total += os.stat(file).st_size
    return total


class PendingRead:
    """The documents a reading child sends (:meth:`documents`)."""

    def __init__(self, pid: int, pipe: int) -> None:
        self._pid = pid
        self._pipe = pipe

    def documents(self) -> list[Document] | None:
        """The child's documents; ``None`` where it failed (the caller reads the files
        itself, and meets the same error). Waits for the child; call it once."""
        from dra_driver.manifest_read import Document

        chunks: list[bytes] = []
        try:
            while chunk := os.read(self._pipe, _CHUNK):
                chunks.append(chunk)
        finally:
            os.close(self._pipe)
        if not _succeeded(self._pid):
            return None
        try:
            pairs = marshal.loads(b"".join(chunks))
        except (EOFError, ValueError, TypeError):
            return None
        return [Document(source, data) for source, data in pairs]


def start_reading(paths: Sequence[str], *, min_bytes: int = MIN_BYTES) -> PendingRead | None:
    """Fork a child that reads ``paths``, or ``None`` where it would not pay (see the module)."""
    if "-" in paths or not can_fork():
        return None
    # The files the paths name, listed once: the child reads these (each names itself, as
    # in a directory's listing, so the documents' sources are the same).
    files = [str(file) for path in paths for file in manifest_files(path)]
    if _total_bytes(files) < min_bytes:
        return None
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        _run_child(lambda: _send_documents(files, write_end))
    os.close(write_end)
    return PendingRead(pid, read_end)


def _send_documents(files: Sequence[str], pipe: int) -> bool:
    from dra_driver.manifest_read import read_documents

    documents = read_documents(files, sys.stdin)  # no path is "-": stdin is not read
    payload = memoryview(marshal.dumps([(d.source, d.data) for d in documents]))
    while payload:
        payload = payload[os.write(pipe, payload) :]
    os.close(pipe)
    return True


def load_inventory(
    documents: list[Document], *, lenient: bool, min_weight: int = MIN_WEIGHT
) -> Inventory:
    """:func:`dra_driver.manifests.load_inventory` of ``documents``, a share of them checked
    by a child where that pays; the same result and the same errors either way."""
    from dra_driver.manifests import document_is_clean
    from dra_driver.manifests import load_inventory as load_serially

    if _weight(documents) < min_weight or not can_fork():
        return load_serially(documents, lenient=lenient)
    share = _child_share(len(documents))
    pid = os.fork()
    if pid == 0:  # the child
        _run_child(lambda: all(document_is_clean(documents[i]) for i in share))
    inventory: Inventory | None = None
    error: Exception | None = None
    try:
        inventory = load_serially(documents, lenient=lenient, trusted=share)
    except Exception as exc:  # judged below, once the child has answered
        error = exc
    if not _succeeded(pid):
        # Something in the child's share to report, or no answer: the serial path says it.
        return load_serially(documents, lenient=lenient)
    if error is not None:
        raise error
    assert inventory is not None
    return inventory


def _weight(documents: list[Document]) -> int:
    """Documents plus the devices of those that list devices (slices)."""
    weight = len(documents)
    for document in documents:
        spec = document.data.get("spec")
        devices = spec.get("devices") if isinstance(spec, dict) else None
        if isinstance(devices, list):
            weight += len(devices)
    return weight


def _child_share(count: int) -> frozenset[int]:
    """About :data:`CHILD_SHARE` of the positions, spread evenly over the input (so every
    kind, whatever its size per document, is split in the same proportion)."""
    return frozenset(i for i in range(count) if int((i + 1) * CHILD_SHARE) > int(i * CHILD_SHARE))


def _run_child(work: Callable[[], bool]) -> NoReturn:
    """Run ``work`` in a forked child and end it: exit status 0 where ``work`` returned
    true, 1 otherwise (an exception included). Never returns."""
    code = 1
    try:
        gc.disable()  # nothing it builds outlives it
        if work():
            code = 0
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _succeeded(pid: int) -> bool:
    """Reap the child; whether it exited with status 0."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return False
    return os.waitstatus_to_exitcode(status) == 0
