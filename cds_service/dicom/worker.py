"""Decode images in worker processes limited in memory and time (issue 30).

The header and codestream checks of :mod:`cds_service.dicom.decode` refuse images whose streams
disagree with their DICOM header, but an image can agree with its header and still be expensive:
a 1 kB JPEG-LS stream honestly declaring 7745×7745 pixels (the largest image allowed) makes CharLS
and the grey-scale pipeline allocate ~850 MB while holding the GIL. So pixel data is decoded in a
small pool of worker processes, each with an address-space limit (``RLIMIT_AS``,
``HIPCAD_DECODE_MEMORY_MB``) and a per-image time limit (``HIPCAD_DECODE_TIMEOUT_S``). An image
that exceeds either costs one worker, which is killed and replaced; the service's event loop and
memory are untouched, and the caller gets the usual :class:`~cds_service.errors.UnusableImageError`
(reason code ``image-not-analysable``).

What crosses the process boundary:

* to the worker, the pickled :class:`pydicom.Dataset` and the pixel limit (the service trusts itself);
* back, never a pickle (a decoder exploited by a hostile image must not reach the service through
  ``pickle.loads``): a small JSON header, then the uint8 grey levels received straight into an array
  whose size the service computed and bounded (``Connection.recv_bytes_into``).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import warnings
from multiprocessing import BufferTooShort
from multiprocessing.connection import Connection
from queue import Queue

import numpy as np
import pydicom

from cds_service.dicom.decode import DecodedImage, decode_dataset
from cds_service.errors import UnusableImageError
from cds_service.settings import Settings

log = logging.getLogger(__name__)

MiB = 2**20
#: Largest JSON message a worker may send (the orientation and laterality strings are short).
MAX_HEADER_BYTES = 4096
#: How long a new worker may take to import the decoder before it counts as failed, seconds.
STARTUP_S = 60.0
#: One thread per library: OpenBLAS's and glibc's per-thread reservations would otherwise eat the
#: address-space limit before any pixel is decoded.
WORKER_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
READY = b"ready"


def serve(connection: Connection, memory_bytes: int) -> None:
    """A worker's life: limit its address space, then decode requests until the service hangs up.

    Logging and warnings are off: pydicom's messages can quote header values (UIDs, names), and the
    worker's stderr is not the service's scrubbed JSON log.
    """
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    connection.send_bytes(READY)
    while True:
        try:
            ds, max_pixels = connection.recv()
        except EOFError:
            return
        try:
            image = decode_dataset(ds, max_pixels)
        except (UnusableImageError, MemoryError) as exc:
            out_of_memory = _out_of_memory(exc)
            reason = f"decoding needs more than the {memory_bytes // MiB} MB decode memory limit"
            connection.send_bytes(json.dumps({"error": reason if out_of_memory else str(exc)}).encode())
            if out_of_memory:
                return  # a fresh worker rather than one whose heap a failed allocation left fragmented
            continue
        finally:
            del ds
        header = {
            "shape": list(image.grey.shape),
            "row_direction": image.row_direction,
            "image_laterality": image.image_laterality,
            "sop_instance_uid": image.sop_instance_uid,
        }
        connection.send_bytes(json.dumps(header).encode())
        connection.send_bytes(np.ascontiguousarray(image.grey).reshape(-1))  # 1-D: Connection counts len()


def _out_of_memory(exc: BaseException) -> bool:
    """Whether the refusal came from a failed allocation: numpy's MemoryError, or a C codec's own
    report (libjpeg: "Out of free memory"; CharLS' std::bad_alloc surfaces with no message at all)."""
    cause = exc.__cause__ or exc
    return isinstance(cause, MemoryError) or "memory" in str(cause).lower()


class _Worker:
    """One worker process (``python -m cds_service.dicom.worker``) and the service's end of its socket.

    A plain subprocess rather than a multiprocessing one: those re-import the service's ``__main__``
    in every worker, which costs the address space the limit is about.
    """

    def __init__(self, memory_bytes: int) -> None:
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(  # noqa: S603 - this interpreter, this module, numbers
            [sys.executable, "-m", __name__, str(theirs.fileno()), str(memory_bytes)],
            pass_fds=[theirs.fileno()],
            env={**os.environ, **WORKER_ENVIRONMENT},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        theirs.close()
        self.connection = Connection(ours.detach())
        self.ready = False

    def wait_ready(self) -> None:
        """Block until the worker has imported the decoder (outside any image's time limit)."""
        if not self.ready:
            if not self.connection.poll(STARTUP_S) or self.connection.recv_bytes(len(READY)) != READY:
                raise EOFError("the decode worker did not start")
            self.ready = True

    def alive(self) -> bool:
        return self.process.poll() is None

    def idle_and_well(self) -> bool:
        """Running, and silent since its last answer (a ready worker with bytes or EOF pending has died)."""
        return self.alive() and not (self.ready and self.connection.poll(0))

    def stop(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait(timeout=10)
        self.connection.close()

    def ended(self) -> str:
        """How the process ended, for the log and the refusal (an exit code or a signal number)."""
        try:
            code = self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return "still running"
        return f"signal {-code}" if code < 0 else f"exit code {code}"


class DecodeWorkers:
    """A pool of ``workers`` decoding processes, each limited to ``memory_mb`` of address space and
    ``timeout_s`` per image; :meth:`decode` has :func:`~cds_service.dicom.decode.decode_dataset`'s contract."""

    def __init__(self, workers: int, memory_mb: int, timeout_s: float) -> None:
        if workers < 1:
            raise ValueError("a decode pool needs at least one worker")
        self.memory_bytes = memory_mb * MiB
        self.timeout_s = timeout_s
        self.replaced = 0
        self._idle: Queue[_Worker] = Queue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        for _ in range(workers):
            self._idle.put(self._start())

    def _start(self) -> _Worker:
        worker = _Worker(self.memory_bytes)
        with self._lock:
            self._all.add(worker)
        return worker

    def _replace(self, worker: _Worker, why: str) -> None:
        """Kill ``worker`` and put a fresh one in its place."""
        ended = "killed" if worker.alive() else worker.ended()
        worker.stop()
        with self._lock:
            self._all.discard(worker)
            self.replaced += 1
        log.warning("decode worker replaced (%s, %s)", why, ended)
        self._idle.put(self._start())

    def pids(self) -> list[int]:
        """Process ids of the current workers (tests and diagnostics)."""
        with self._lock:
            return sorted(w.process.pid for w in self._all)

    def decode(self, ds: pydicom.Dataset, max_pixels: int) -> DecodedImage:
        """``decode_dataset(ds, max_pixels)`` in a worker; waits (blocking this thread) for an idle one.

        Raises:
            UnusableImageError: whatever ``decode_dataset`` refuses, and an image whose decoding runs
                past the time limit, past the memory limit, or kills its worker.
        """
        worker = self._idle.get()
        if not worker.idle_and_well():  # died while idle (e.g. the kernel's OOM killer): not this image's fault
            self._replace(worker, "found dead")
            worker = self._idle.get()
        try:
            image = self._exchange(worker, ds, max_pixels)
        except UnusableImageError:  # refused by decode_dataset: the worker is fine
            self._idle.put(worker)
            raise
        except _WorkerLost as lost:
            self._replace(worker, lost.why)
            raise UnusableImageError(lost.refusal) from None
        except BaseException:
            self._replace(worker, "interrupted")
            raise
        self._idle.put(worker)
        return image

    def _exchange(self, worker: _Worker, ds: pydicom.Dataset, max_pixels: int) -> DecodedImage:
        try:
            worker.wait_ready()
            deadline = time.monotonic() + self.timeout_s
            worker.connection.send((ds, max_pixels))
            header = json.loads(self._receive(worker, deadline, MAX_HEADER_BYTES))
            if "error" in header:
                if "memory limit" in header["error"]:
                    raise _WorkerLost("memory limit", str(header["error"]))
                raise UnusableImageError(str(header["error"]))
            rows, columns = (int(v) for v in header["shape"])
            if not 0 < rows * columns <= max_pixels:
                raise _WorkerLost("bad answer", "the decoder answered an image of an impossible size")
            grey = np.empty((rows, columns), dtype=np.uint8)
            self._wait(worker, deadline)
            if worker.connection.recv_bytes_into(grey.reshape(-1)) != grey.size:
                raise _WorkerLost("bad answer", "the decoder answered fewer pixels than it announced")
        except (EOFError, OSError, ValueError, KeyError, TypeError, BufferTooShort) as exc:
            raise _WorkerLost(f"lost: {type(exc).__name__}", f"the decoder process ended ({worker.ended()})") from exc
        return DecodedImage(
            grey=grey,
            row_direction=_text(header["row_direction"]),
            image_laterality=_text(header["image_laterality"]),
            sop_instance_uid=str(header["sop_instance_uid"]),
        )

    def _wait(self, worker: _Worker, deadline: float) -> None:
        if not worker.connection.poll(max(0.0, deadline - time.monotonic())):
            raise _WorkerLost("time limit", f"decoding took longer than the {self.timeout_s:g} s limit")

    def _receive(self, worker: _Worker, deadline: float, limit: int) -> bytes:
        self._wait(worker, deadline)
        return worker.connection.recv_bytes(limit)

    def close(self) -> None:
        """Kill every worker (in-flight decodes then fail as lost workers)."""
        with self._lock:
            workers, self._all = list(self._all), set()
        for worker in workers:
            worker.stop()


def _text(value: object) -> str | None:
    """A short string or None, whatever JSON value the worker sent."""
    return None if value is None else str(value)[:64]


class _WorkerLost(Exception):
    """The worker cannot be reused: ``why`` is logged, ``refusal`` is the UnusableImageError's message."""

    def __init__(self, why: str, refusal: str) -> None:
        super().__init__(why)
        self.why, self.refusal = why, refusal


_POOLS: dict[tuple[int, int, float], DecodeWorkers] = {}
_POOLS_LOCK = threading.Lock()


def pool_for(settings: Settings) -> DecodeWorkers | None:
    """The process's pool for these settings' limits (started on first use); None with 0 workers."""
    if settings.decode_workers < 1:
        return None
    key = (settings.decode_workers, settings.decode_memory_mb, settings.decode_timeout_s)
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = DecodeWorkers(*key)
        return _POOLS[key]


def decode_in_worker(ds: pydicom.Dataset, settings: Settings) -> DecodedImage:
    """:func:`~cds_service.dicom.decode.decode_dataset` bounded by the settings' worker limits
    (``HIPCAD_DECODE_WORKERS`` 0: in this process, unbounded)."""
    pool = pool_for(settings)
    if pool is None:
        return decode_dataset(ds, settings.max_image_pixels)
    return pool.decode(ds, settings.max_image_pixels)


@atexit.register
def _close_pools() -> None:
    with _POOLS_LOCK:
        for pool in _POOLS.values():
            pool.close()
        _POOLS.clear()


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])), int(sys.argv[2]))
