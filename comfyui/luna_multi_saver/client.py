"""A pure-Python client for luna-daemon, protocol version 1 (the twin of ``src/client.rs``; no ComfyUI, no torch).

Frames are a 4-byte big-endian length then that many bytes of MessagePack (maps with named fields, an enum's
variant in its ``type`` field); either side refuses a frame over 1 MiB before reading it. The first exchange is
``hello`` -> ``welcome``; a daemon speaking another protocol version is a :class:`VersionMismatch`. Pixels travel
through warm shared-memory segments (:mod:`.shm`): one job's images and, when it is large, its metadata are laid out
in one segment at 64-byte-aligned offsets, and only descriptors go over the socket.

::

    client = Client.connect()                      # $LUNA_DAEMON_SOCKET or the daemon's default socket
    accepted = client.submit(JobOptions(output_dir="/abs/out"), [SlotImages(batch, format="png")])
    status = client.wait(accepted.job_id)          # until every image is final and the segment is released
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import socket
import struct
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgpack
import numpy as np

from . import constants, shm, trust
from .pixels import images_of

PROTOCOL_NAME = constants.PROTOCOL_NAME
PROTOCOL_VERSION = constants.PROTOCOL_VERSION
MAX_FRAME_LEN = constants.MAX_FRAME_LEN
DEFAULT_CLIENT_NAME = "luna-python/0.1.0"
# Metadata whose MessagePack encoding is larger than this goes into the segment instead of the frame.
INLINE_METADATA_MAX = constants.INLINE_METADATA_MAX
# Stable error codes (constants.json, checked against src/protocol/error_code.rs).
ERROR_NAMES = constants.ERROR_NAMES
VERSION_MISMATCH = constants.ERROR_CODES["version_mismatch"]
BUSY = constants.ERROR_CODES["busy"]


class ClientError(Exception):
    """Anything that went wrong talking to the daemon."""


class DaemonUnreachable(ClientError):
    """No daemon answers on the socket."""


class UntrustedDaemon(ClientError):
    """The socket's directory, the server's user id or the announced spool directory is not this user's
    (:mod:`.trust`): nothing was sent to it. Not "unreachable": auto-starting a daemon would not help."""


class ProtocolError(ClientError):
    """A frame could not be read or decoded, or a reply does not fit the request."""


class ConnectionLost(ClientError):
    """The connection ended (or timed out) before the reply. For a submit, ``job_may_exist`` tells whether the
    daemon had already taken the segment (the job may still be saved by the daemon)."""

    def __init__(self, message: str, job_may_exist: bool = False):
        super().__init__(message)
        self.job_may_exist = job_may_exist


class DaemonError(ClientError):
    """The daemon refused the request; nothing was accepted."""

    def __init__(self, reply: dict):
        self.code = int(reply.get("code", 0))
        self.name = str(reply.get("name") or ERROR_NAMES.get(self.code, "unknown"))
        self.message = str(reply.get("message", ""))
        self.supported_versions = list(reply.get("supported_versions") or [])
        super().__init__(f"{self.message} [{self.name}]")


class VersionMismatch(DaemonError):
    """The daemon and this client speak different protocol versions."""

    def __init__(self, reply: dict):
        super().__init__(reply)
        supported = ", ".join(str(v) for v in self.supported_versions) or "unknown"
        self.args = (
            f"protocol version mismatch: this client speaks luna-daemon protocol {PROTOCOL_VERSION}, the daemon "
            f"speaks {supported}: {self.message} (upgrade the older side)",
        )


def default_socket() -> str:
    """The daemon's default socket, as ``src/paths.rs``: ``$LUNA_DAEMON_SOCKET``, else
    ``$XDG_RUNTIME_DIR/luna-daemon/luna-daemon.sock``, else ``<tmp>/luna-daemon-<uid>/luna-daemon.sock``
    (a named pipe ``\\\\.\\pipe\\luna-daemon-<user>`` on Windows)."""
    explicit = os.environ.get("LUNA_DAEMON_SOCKET")
    if explicit:
        return explicit
    if sys.platform == "win32":
        return rf"\\.\pipe\luna-daemon-{os.environ.get('USERNAME', 'user')}"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        return os.path.join(runtime, "luna-daemon", "luna-daemon.sock")
    tmp = os.environ.get("TMPDIR") or "/tmp"
    return os.path.join(tmp, f"luna-daemon-{os.geteuid()}", "luna-daemon.sock")


def encode_frame(message: dict) -> bytes:
    """Prefix and body of one message; refuses bodies over the cap."""
    body = msgpack.packb(message, use_bin_type=True)
    if len(body) > MAX_FRAME_LEN:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME_LEN}-byte limit")
    return struct.pack(">I", len(body)) + body


def decode_message(body: bytes) -> dict:
    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several unrelated types
        raise ProtocolError(f"malformed message from the daemon: {e}") from e
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError(f"malformed message from the daemon: not a map with a type: {message!r:.200}")
    return message


# Windows: all instances of the pipe are serving other clients right now; wait for one (WaitNamedPipe).
ERROR_PIPE_BUSY = 231
PIPE_BUSY_WAIT_MS = 5000


class _PipeTransport:
    """A Windows named pipe opened as a file (``CreateFile`` on ``\\\\.\\pipe\\...``, what ``interprocess``
    serves there): a byte stream like the Unix socket. A busy pipe is waited for once (``WaitNamedPipe``).
    ``opener`` and ``winapi`` are seams for the unit tests, which run on Linux (no Windows CPython here)."""

    def __init__(self, path: str, opener: Callable = open, winapi=None):
        self._winapi = winapi if winapi is not None else _load_winapi()
        try:
            self._file = opener(path, "r+b", buffering=0)
        except OSError as e:
            if getattr(e, "winerror", None) != ERROR_PIPE_BUSY or self._winapi is None:
                raise
            self._winapi.WaitNamedPipe(path, PIPE_BUSY_WAIT_MS)
            self._file = opener(path, "r+b", buffering=0)

    def sendall(self, data: bytes) -> None:
        self._file.write(data)

    def recv(self, n: int) -> bytes:
        return self._file.read(n)

    def settimeout(self, timeout: float | None) -> None:
        pass  # reads on a pipe handle opened by open() cannot time out; the daemon answers or closes

    def peer_gone(self) -> bool:
        """Whether the daemon closed its end (``PeekNamedPipe`` fails with a broken pipe)."""
        if self._winapi is None:
            return False
        try:
            import msvcrt

            self._winapi.PeekNamedPipe(msvcrt.get_osfhandle(self._file.fileno()), 0)
        except (BrokenPipeError, OSError):
            return True
        return False

    def close(self) -> None:
        self._file.close()


# How a pipe is opened: the built-in open(); the unit tests replace it with a byte stream (see _PipeTransport).
_pipe_opener = open


def _load_winapi():
    """CPython's ``_winapi`` (Windows only; also in the embedded distribution ComfyUI portable ships)."""
    try:
        import _winapi
    except ImportError:
        return None
    return _winapi


JobOptions = dataclasses.make_dataclass("JobOptions", constants.option_fields(), frozen=True)
JobOptions.__doc__ = """Everything of a ``SubmitJob`` except the slots and metadata, with the protocol's defaults: the
fields are ``job_options`` of ``constants.json`` (PROTOCOL §7.2.1)."""
JobOptions.__module__ = __name__


@dataclass(frozen=True)
class SlotImages:
    """One slot: a batch ``[B, H, W, C]`` (numpy array or torch tensor) or a list of ``[H, W, C]`` images."""

    images: object
    format: str = "png"
    affix: str = ""
    subdir: bool = False


@dataclass(frozen=True)
class Accepted:
    job_id: str
    images: int
    segment: str


_WIRE_DTYPES = {"f32": "<f4", "u8": "u1", "u16": "<u2"}


def _wire_dtype(array: np.ndarray) -> str:
    """The sample type sent for ``array``: u8 and u16 as they are, every float as f32 (float32 is copied as is,
    other floats are cast during the copy into the segment)."""
    if array.dtype.kind == "f":
        return "f32"
    if array.dtype.kind == "u" and array.dtype.itemsize in (1, 2):
        return "u8" if array.dtype.itemsize == 1 else "u16"
    raise ValueError(f"images of dtype {array.dtype} are not supported (float32, uint8 or uint16)")


@dataclass
class _Placed:
    slot: int
    image: np.ndarray
    dtype: str
    offset: int
    length: int


@dataclass
class _Layout:
    placed: list[_Placed] = field(default_factory=list)
    total: int = 0

    def add(self, length: int) -> int:
        offset = self.total
        self.total += shm.align(length)
        return offset


class Client:
    """One connection to the daemon, with its own pool of warm segments. Not thread-safe: callers serialise."""

    def __init__(
        self,
        socket_path: str | None = None,
        client_name: str = DEFAULT_CLIENT_NAME,
        timeout: float | None = 30.0,
        checksum: bool = False,
    ):
        self.socket_path = socket_path or default_socket()
        self.client_name = client_name
        self.timeout = timeout
        self.checksum = checksum
        self.welcome: dict = {}
        self.pool: shm.SegmentPool | None = None
        self._conn = None
        # Packs each job's metadata into one buffer that grows to the largest blob and stays (Client._pack).
        self._packer = msgpack.Packer(autoreset=False, use_bin_type=True)

    @classmethod
    def connect(cls, socket_path: str | None = None, client_name: str = DEFAULT_CLIENT_NAME, **kwargs) -> Client:
        """Connects and performs the handshake."""
        client = cls(socket_path, client_name, **kwargs)
        client.reconnect()
        return client

    # -- connection -------------------------------------------------------------------------------------------

    def reconnect(self) -> None:
        """(Re)opens the connection and repeats the handshake. Warm segments are kept if the spool directory is
        the same."""
        self._drop_connection()
        _refuse_if(trust.socket_dir_problem(self.socket_path))
        try:
            if sys.platform == "win32":
                conn = _PipeTransport(self.socket_path, opener=_pipe_opener)
            else:
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.settimeout(self.timeout)
                conn.connect(self.socket_path)
        except OSError as e:
            raise DaemonUnreachable(
                f"cannot reach luna-daemon at {self.socket_path}: {e.strerror or e} "
                "(is it running? start it with `luna-daemon serve`)"
            ) from e
        self._conn = conn
        if isinstance(conn, socket.socket):
            try:
                _refuse_if(trust.peer_problem(conn, self.socket_path))
            except (UntrustedDaemon, OSError):
                self._drop_connection()
                raise
        hello = {
            "type": "hello",
            "protocol": PROTOCOL_NAME,
            "version": PROTOCOL_VERSION,
            "client": self.client_name,
            "pid": os.getpid(),
        }
        try:
            welcome = self._request(hello)
        except ClientError:
            self._drop_connection()
            raise
        if welcome.get("type") != "welcome":
            self._drop_connection()
            raise ProtocolError(f"expected a welcome reply to hello, got {welcome.get('type')!r}")
        if welcome.get("version") != PROTOCOL_VERSION:
            self._drop_connection()
            raise VersionMismatch(
                {
                    "code": VERSION_MISMATCH,
                    "message": f"the daemon answered with version {welcome.get('version')}",
                    "supported_versions": [welcome.get("version")],
                }
            )
        if welcome.get("segment_header_len") != shm.HEADER_LEN:
            self._drop_connection()
            raise ProtocolError(
                f"daemon's segment header is {welcome.get('segment_header_len')} bytes; this client writes "
                f"{shm.HEADER_LEN}-byte headers"
            )
        spool_dir = str(welcome.get("spool_dir", ""))
        problem = trust.spool_dir_problem(spool_dir)
        if problem is not None:
            self._drop_connection()
            raise UntrustedDaemon(problem)
        if self.pool is None or self.pool.spool_dir != spool_dir:
            if self.pool is not None:
                self.pool.close()
            self.pool = shm.SegmentPool(spool_dir, shm.segment_prefix(self.client_name))
        self.welcome = welcome

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None

    def _peer_gone(self) -> bool:
        """Whether the daemon closed the connection since the last reply (e.g. it was restarted)."""
        if self._conn is None:
            return True
        if isinstance(self._conn, _PipeTransport):
            return self._conn.peer_gone()
        if not isinstance(self._conn, socket.socket):
            return False
        try:
            readable, _, _ = select.select([self._conn], [], [], 0)
            if not readable:
                return False
            return self._conn.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def ensure_connected(self) -> None:
        """Reconnects if the daemon went away since the last request."""
        if self._peer_gone():
            self.reconnect()

    def close(self) -> None:
        """Closes the connection and detaches every segment (the daemon unlinks those it still owns when done)."""
        self._drop_connection()
        if self.pool is not None:
            self.pool.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- frames -----------------------------------------------------------------------------------------------

    def _recv_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self._conn.recv(min(n, 1 << 20))
            if not chunk:
                raise ConnectionLost("the daemon closed the connection in the middle of a reply")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _send(self, message: dict) -> None:
        """Sends one frame. A failure here means the daemon did not get the whole request."""
        if self._conn is None:
            raise DaemonUnreachable("not connected to luna-daemon")
        frame = encode_frame(message)
        try:
            self._conn.sendall(frame)
        except OSError as e:
            self._drop_connection()
            raise DaemonUnreachable(f"luna-daemon went away: {e.strerror or e}") from e

    def _receive(self) -> dict:
        try:
            prefix = self._recv_exact(4)
            (length,) = struct.unpack(">I", prefix)
            if length > MAX_FRAME_LEN:
                raise ProtocolError(f"the daemon announced a frame of {length} bytes (limit {MAX_FRAME_LEN})")
            reply = decode_message(self._recv_exact(length))
        except (OSError, ClientError) as e:
            self._drop_connection()
            if isinstance(e, ClientError):
                raise
            raise ConnectionLost(f"no reply from luna-daemon: {e}") from e
        if reply["type"] == "error":
            if reply.get("code") == VERSION_MISMATCH:
                raise VersionMismatch(reply)
            raise DaemonError(reply)
        return reply

    def _request(self, message: dict) -> dict:
        self._send(message)
        return self._receive()

    def request(self, message: dict) -> dict:
        """Sends any request (a dict with ``type``) and returns the reply; error replies raise."""
        self.ensure_connected()
        return self._request(message)

    # -- requests ---------------------------------------------------------------------------------------------

    def submit(self, options: JobOptions, slots: Sequence[SlotImages], metadata: dict | None = None) -> Accepted:
        """Copies every image of every slot (and large metadata) into one warm segment and submits one job.
        Returns once the daemon has accepted it; from then on the daemon owns the segment.

        The metadata is packed first, on this thread, into the client's own reusable buffer (no bytes object per
        job), so the segment is chosen knowing the blob's exact size and the buffer is copied into it once, after
        the pixels. A value MessagePack cannot carry raises here (TypeError, ValueError, ...), before anything is
        sent or any segment taken."""
        self.ensure_connected()
        layout = _Layout()
        for index, slot in enumerate(slots):
            for image in images_of(slot.images):
                dtype = _wire_dtype(image)
                length = image.size * np.dtype(_WIRE_DTYPES[dtype]).itemsize
                layout.placed.append(_Placed(index, image, dtype, layout.add(length), length))
        if not layout.placed:
            raise ValueError("the job has no images")
        job = {"type": "submit", **constants.wire_options(options)}
        packed = self._pack(metadata) if metadata is not None else None
        try:
            blob = packed if packed is not None and len(packed) > INLINE_METADATA_MAX else None
            segment = self.pool.acquire(layout.total + (len(blob) if blob is not None else 0))
            job["slots"] = [s for s in self._copy_images(segment, slots, layout) if s["images"]]
            if blob is not None:
                blob_offset = shm.HEADER_LEN + layout.total
                segment.write(blob_offset, blob)
                job["metadata_blob"] = {
                    "segment": segment.name,
                    "offset": blob_offset,
                    "length": len(blob),
                    "crc32": zlib.crc32(blob),
                }
            elif metadata is not None:
                job["metadata"] = metadata
        finally:
            if packed is not None:
                packed.release()  # the packer's buffer may be reset for the next job only once no view is left
        # A repeated submission with the same id is answered with the original job, never saved twice.
        job["submit_id"] = uuid.uuid4().hex
        self._send(job)
        try:
            reply = self._receive()
        except (ConnectionLost, ProtocolError) as e:
            reply = self._resubmit(job, segment, e)
        if reply["type"] != "accepted":
            raise ProtocolError(f"expected an accepted reply to submit, got {reply['type']!r}")
        return Accepted(job_id=str(reply["job_id"]), images=int(reply["images"]), segment=segment.name)

    def _pack(self, metadata: dict) -> memoryview:
        """``metadata`` as MessagePack in the client's packer buffer (reused from job to job: packing a 178 KB
        workflow allocates nothing once the buffer has grown). The view must be released before the next call."""
        self._packer.reset()
        try:
            self._packer.pack(metadata)
        except BaseException:
            self._packer.reset()
            raise
        return self._packer.getbuffer()

    def _copy_images(self, segment: shm.Segment, slots: Sequence[SlotImages], layout: _Layout) -> list[dict]:
        """Copies every placed image into ``segment``; returns the wire slots with their descriptors."""
        base = shm.HEADER_LEN
        wire_slots = [{"affix": s.affix, "format": s.format, "subdir": bool(s.subdir), "images": []} for s in slots]
        for placed in layout.placed:
            height, width, channels = placed.image.shape
            offset = base + placed.offset
            target = segment.array(offset, placed.image.shape, _WIRE_DTYPES[placed.dtype])
            np.copyto(target, placed.image, casting="same_kind")
            del target
            descriptor = {
                "segment": segment.name,
                "offset": offset,
                "length": placed.length,
                "width": width,
                "height": height,
                "channels": channels,
                "dtype": placed.dtype,
                "row_stride": width * channels * np.dtype(_WIRE_DTYPES[placed.dtype]).itemsize,
            }
            if self.checksum:
                descriptor["crc32"] = zlib.crc32(segment.memory(offset, placed.length))
            wire_slots[placed.slot]["images"].append(descriptor)
        return wire_slots

    def _resubmit(self, job: dict, segment, first_error: Exception) -> dict:
        """The answer to a submission was lost: ask again on a new connection with the same ``submit_id``. If
        the daemon had accepted it, it answers with the original job; otherwise the job does not exist."""
        try:
            self.reconnect()
            self._send(job)
            return self._receive()
        except DaemonError as e:
            # Refused on the second try (e.g. segment_busy: taken, never journaled): no job exists.
            self.pool.discard(segment)
            raise ConnectionLost(f"{first_error}; resubmitting: {e}", job_may_exist=False) from e
        except ClientError as e:
            # The daemon got the whole job but its answer is unknown: never reuse the segment.
            taken = not segment.closed and segment.state == shm.STATE_DAEMON
            self.pool.discard(segment)
            raise ConnectionLost(f"{first_error} (after sending the job)", job_may_exist=taken) from e

    def status(self, job_id: str) -> dict:
        """A job's status: ``finished``, ``segments_released`` and per-image ``images`` (see ``JobStatus``)."""
        reply = self.request({"type": "status", "job_id": job_id})
        return _expect(reply, "status")

    def wait(self, job_id: str, progress: Callable[[dict], None] | None = None) -> dict:
        """Polls a job until every image is final and its segments are released."""
        delay = 0.002
        while True:
            status = self.status(job_id)
            if progress is not None:
                progress(status)
            if status["finished"] and status["segments_released"]:
                return status
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def cancel(self, job_id: str) -> int:
        """Gives up on a job's images that are not saved yet; returns how many were cancelled."""
        return int(_expect(self.request({"type": "cancel", "job_id": job_id}), "cancelled")["images_cancelled"])

    def batch_status(self, batch: str) -> dict:
        """A batch group's summary (PROTOCOL §8.8): ``images``, ``written``, ``discarded``, ``failed``, ``bytes``,
        the time span and ``finished``, over every job submitted with ``batch`` (``JobOptions.batch``)."""
        return _expect(self.request({"type": "batch_status", "batch": batch}), "batch_status")

    def stats(self) -> dict:
        return _expect(self.request({"type": "stats"}), "stats")

    def stop(self) -> None:
        _expect(self.request({"type": "stop"}), "stopping")


def _refuse_if(problem: str | None) -> None:
    if problem is not None:
        raise UntrustedDaemon(problem)


def _expect(reply: dict, kind: str) -> dict:
    if reply["type"] != kind:
        raise ProtocolError(f"expected a {kind} reply, got {reply['type']!r}")
    return reply
