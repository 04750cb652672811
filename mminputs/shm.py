"""Shared-memory segments between processes of one host that cannot outlive their use.

A segment is an anonymous memory file (`memfd_create`): it has no name in /dev/shm at any moment, and
the kernel frees it when the last descriptor and mapping close, also when a rank is SIGKILLed. Peers
open it through `/proc/<pid>/fd/<fd>` while the creator still holds the descriptor; the creator closes
it once every peer has mapped (a group barrier), after which only the mappings keep the memory alive.
Peers map privately (copy-on-write), so a consumer writing into its tensors never changes a peer's.
Unlike named POSIX segments this needs no cleanup of stale names, and it is not bounded by the size of
/dev/shm (Docker's default is 64 MiB), only by the pod's memory limit.
"""

from __future__ import annotations

import mmap
import os
import secrets
import socket
from dataclasses import dataclass

import torch

ALIGN = 64


@dataclass(frozen=True)
class SegmentHandle:
    """What a peer needs to map a segment: small and cheap to pickle."""

    host: str
    pid: int
    fd: int
    nbytes: int


def host_identity() -> str:
    """Names this host and PID namespace; ranks that differ here cannot share a segment."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return f"{socket.gethostname()}:no-proc"
    return f"{socket.gethostname()}:{boot}:{pidns}"


def memfd_supported() -> bool:
    return hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


class OwnedSegment:
    """A segment this process created and fills; `close()` drops the creator's descriptor."""

    def __init__(self, nbytes: int, name: str = "mminputs") -> None:
        if nbytes <= 0:
            raise ValueError(f"segment size must be positive, got {nbytes}")
        self.nbytes = nbytes
        self._fd: int | None = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(self._fd, nbytes)
            self._writer: mmap.mmap | None = mmap.mmap(self._fd, nbytes, access=mmap.ACCESS_WRITE)
        except BaseException:
            os.close(self._fd)
            raise
        self.handle = SegmentHandle(host_identity(), os.getpid(), self._fd, nbytes)

    def writable(
        self, offset: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """A tensor over the segment that writes into the shared memory."""
        assert self._writer is not None, "segment already sealed"
        return _tensor(self._writer, offset, shape, dtype)

    def seal(self) -> mmap.mmap:
        """Drop the shared writer mapping and give the creator its own private one, like its peers'."""
        assert self._fd is not None
        self._writer = None  # freed once the tensors `writable` returned are gone
        return mmap.mmap(self._fd, self.nbytes, flags=mmap.MAP_PRIVATE)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._writer = None

    def __del__(self) -> None:  # a safety net; the strategies close explicitly
        try:
            self.close()
        except OSError:
            pass


def create_memfd(name: str = "mminputs") -> int:
    """An empty anonymous memory file; the caller sizes it (ftruncate) and closes it."""
    return os.memfd_create(name, os.MFD_CLOEXEC)


def open_peer_fd(handle: SegmentHandle, *, writable: bool = False) -> int:
    """A descriptor of a peer's segment (its creator must still hold its own); the caller closes it."""
    if handle.host != host_identity():
        raise RuntimeError(f"segment of pid {handle.pid} is on another host ({handle.host})")
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
    return os.open(f"/proc/{handle.pid}/fd/{handle.fd}", flags)


def map_peer_segment(handle: SegmentHandle) -> mmap.mmap:
    """Map a peer's segment privately; the descriptor is closed at once, the mapping keeps the memory."""
    fd = open_peer_fd(handle)
    try:
        if os.fstat(fd).st_size != handle.nbytes:
            raise RuntimeError(
                f"segment of pid {handle.pid} fd {handle.fd} is not the expected size {handle.nbytes}"
            )
        return mmap.mmap(fd, handle.nbytes, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)


def tensor_view(
    buffer: mmap.mmap, offset: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A tensor over `buffer` without copying; the tensor keeps the mapping alive."""
    return _tensor(buffer, offset, shape, dtype)


def aligned(nbytes: int) -> int:
    return (nbytes + ALIGN - 1) // ALIGN * ALIGN


def probe_token() -> bytes:
    return secrets.token_bytes(16)


def _tensor(buffer: mmap.mmap, offset: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    count = 1
    for dim in shape:
        count *= dim
    if count == 0:
        return torch.empty(shape, dtype=dtype)  # frombuffer refuses an empty view
    return torch.frombuffer(buffer, dtype=dtype, count=count, offset=offset).view(shape)
