"""Spill files between machines through the sending location's Redis.

Sender (RedisTransport.send): take a slot token (BLPOP on a list holding
`simultaneous_files_in_redis` tokens, so no more files than that sit in one Redis),
write the file in chunks below Redis's value limit plus a meta hash (size, checksum,
chunk count) and push its id onto the receiver's inbox, all in one transaction. The
receiver (RedisReceiver) moves ids from its inbox to its own processing list (BLMOVE),
checks length and checksum, writes the file into its map dir through a temporary name,
then deletes the keys, gives the slot back, acks and forgets the id, in one transaction:
a receiver that dies midway finds the id in its processing list when it starts again. A
sender's `close()` waits for every ack, with a timeout, so a server's map phase ends only
when every file it sent has arrived whole.

A receiver pulls for the whole run, from its start until its sort phase: a sender whose map
runs again (a new attempt, after its server died) sends again, whenever that is.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import cast

import redis

from cluster import defaults
from cluster.engine.transport import LocalTransport
from cluster.exceptions import JobAborted, ShuffleError
from cluster.layout import SPILL_SUFFIX, JobLayout

log = logging.getLogger(__name__)
CHUNK_BYTES = 32 * 1024 ** 2
TTL = defaults.RUN_KEYS_TTL_SECONDS  # every key here is renewed while the run uses it


def job_namespace(cluster_name: str, job_name: str, run_id: str) -> str:
    """The prefix of every key of one run of one job."""
    return f"cluster:{cluster_name}:job:{job_name}:{run_id}"


def _blpop(client: redis.Redis, key: str, timeout: float, cancelled: threading.Event | None) -> bytes | None:
    """BLPOP one key for up to `timeout` seconds, in short waits so a cancelled run stops at once."""
    deadline = time.monotonic() + timeout
    while True:
        if cancelled is not None and cancelled.is_set():
            raise JobAborted("the run was aborted")
        wait = min(1.0, deadline - time.monotonic())
        if wait <= 0:
            return None
        got = client.blpop([key], timeout=max(wait, 0.01))
        if got is not None:
            return cast(bytes, got[1])  # the clients are made without decode_responses: replies are bytes


def _checksum(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class RedisTransport:
    """Sends one server's spill files: renamed for servers of its location, through its Redis otherwise."""

    def __init__(self, *, layout: JobLayout, client: redis.Redis, namespace: str, server_id: str,
                 local_servers: Iterable[str], remote_servers: Iterable[str], max_files_in_redis: int,
                 timeout: float = 600.0, chunk_bytes: int = CHUNK_BYTES, cancelled: threading.Event | None = None):
        self.cancelled = cancelled
        self.local = LocalTransport(layout)
        self.client = client
        self.ns = namespace
        self.server_id = server_id
        self.local_servers = set(local_servers)
        self.remote_servers = sorted(remote_servers)
        self.timeout = timeout
        self.chunk_bytes = chunk_bytes
        self._seq = 0
        self._outstanding: set[str] = set()
        self._init_slots(max_files_in_redis)

    def _init_slots(self, n: int) -> None:
        # the first sender of the run fills the token list, atomically, once
        if self.client.set(f"{self.ns}:slots:init", 1, nx=True, ex=TTL):
            pipe = self.client.pipeline(transaction=True)
            pipe.rpush(f"{self.ns}:slots", *(["token"] * max(1, n)))
            pipe.expire(f"{self.ns}:slots", TTL)
            pipe.execute()

    def send(self, path: str, dest_server: str) -> int:
        if dest_server in self.local_servers:
            return self.local.send(path, dest_server)
        with open(path, "rb") as fh:
            data = fh.read()
        self._seq += 1
        # the file's own name, which carries its map attempt: an earlier attempt's ids (and their acks,
        # still in the list) are never this attempt's
        file_id = os.path.basename(path).removesuffix(SPILL_SUFFIX) or f"{self.server_id}-{self._seq:06d}"
        key = f"{self.ns}:file:{file_id}"
        try:
            if _blpop(self.client, f"{self.ns}:slots", self.timeout, self.cancelled) is None:
                raise ShuffleError(f"server {self.server_id}: no room in Redis for {self.timeout:.0f}s (the "
                                   f"receiving servers are not taking files); is {dest_server} running?")
            chunks = [data[i:i + self.chunk_bytes] for i in range(0, len(data), self.chunk_bytes)] or [b""]
            # all or nothing (MULTI): a sender that dies here leaves no half-announced file
            pipe = self.client.pipeline(transaction=True)
            for i, chunk in enumerate(chunks):
                pipe.set(f"{key}:{i}", chunk, ex=TTL)
            pipe.hset(key, mapping={"name": os.path.basename(path), "size": len(data),
                                    "checksum": _checksum(data), "chunks": len(chunks),
                                    "sender": self.server_id})
            pipe.expire(key, TTL)
            pipe.rpush(f"{self.ns}:inbox:{dest_server}", file_id)
            pipe.expire(f"{self.ns}:inbox:{dest_server}", TTL)
            pipe.expire(f"{self.ns}:slots", TTL)
            pipe.execute()
        except redis.RedisError as exc:
            raise ShuffleError(f"server {self.server_id}: sending {path} to {dest_server} through Redis "
                               f"failed: {exc}") from exc
        self._outstanding.add(file_id)
        os.unlink(path)
        return len(data)

    def close(self) -> None:
        """Wait until every file sent was received (acked)."""
        try:
            while self._outstanding:
                got = _blpop(self.client, f"{self.ns}:acks:{self.server_id}", self.timeout, self.cancelled)
                if got is None:
                    raise ShuffleError(f"server {self.server_id}: {len(self._outstanding)} spill file(s) were not "
                                       f"received within {self.timeout:.0f}s: {sorted(self._outstanding)[:5]}")
                self._outstanding.discard(got.decode())
        except redis.RedisError as exc:
            raise ShuffleError(f"server {self.server_id}: waiting for spill files to be received failed: "
                               f"{exc}") from exc


class RedisReceiver:
    """Pulls the spill files addressed to one server from the Redis of every other location, until told
    to stop (`stop`: the run's sort phase begins, or the run is dropped)."""

    def __init__(self, *, layout: JobLayout, server_id: str, namespace: str,
                 sources: dict[str, redis.Redis], cancelled: threading.Event | None = None):
        """sources: location -> its Redis client."""
        self.cancelled = cancelled
        self.layout = layout
        self.server_id = server_id
        self.ns = namespace
        self.sources = sources
        self.files = 0
        self.bytes = 0
        self.errors: list[BaseException] = []
        self.reported = False  # whether its server told the master of its first error
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _pull(self, location: str, client: redis.Redis) -> None:
        inbox = f"{self.ns}:inbox:{self.server_id}"
        processing = f"{self.ns}:processing:{self.server_id}"
        folder = self.layout.map_dir(self.server_id)
        os.makedirs(folder, exist_ok=True)
        try:
            # what an earlier receiver of this server took but did not finish
            for raw in cast("list[bytes]", client.lrange(processing, 0, -1)):
                self._receive(client, raw.decode(), folder, processing)
            while not self._stop.is_set() and not (self.cancelled is not None and self.cancelled.is_set()):
                got = cast("bytes | None", client.blmove(inbox, processing, 1, "LEFT", "RIGHT"))
                if got is not None:
                    client.expire(processing, TTL)
                    self._receive(client, got.decode(), folder, processing)
        except redis.RedisError as exc:
            raise ShuffleError(f"server {self.server_id}: reading spill files from the Redis of {location} "
                               f"failed: {exc}") from exc

    def _receive(self, client: redis.Redis, file_id: str, folder: str, processing: str) -> None:
        key = f"{self.ns}:file:{file_id}"
        raw = cast("dict[bytes, bytes]", client.hgetall(key))  # no decode_responses: bytes
        meta = {k.decode(): v.decode() for k, v in raw.items()}
        if not meta:  # received already (the transaction below ran); only the id was left
            client.lrem(processing, 1, file_id)
            return
        n = int(meta["chunks"])
        data = b"".join(cast("bytes | None", client.get(f"{key}:{i}")) or b"" for i in range(n))
        if len(data) != int(meta["size"]) or _checksum(data) != meta["checksum"]:
            raise ShuffleError(f"server {self.server_id}: spill file {meta['name']} from {meta['sender']} arrived "
                               f"damaged ({len(data)} of {meta['size']} bytes, checksum "
                               f"{'ok' if _checksum(data) == meta['checksum'] else 'wrong'})")
        dest = os.path.join(folder, meta["name"])
        with open(dest + ".tmp", "wb") as fh:
            fh.write(data)
        os.replace(dest + ".tmp", dest)
        pipe = client.pipeline(transaction=True)
        pipe.delete(key, *(f"{key}:{i}" for i in range(n)))
        pipe.rpush(f"{self.ns}:slots", "token")
        pipe.expire(f"{self.ns}:slots", TTL)
        pipe.rpush(f"{self.ns}:acks:{meta['sender']}", file_id)
        pipe.expire(f"{self.ns}:acks:{meta['sender']}", TTL)
        pipe.lrem(processing, 1, file_id)
        pipe.execute()
        with self._lock:
            self.files += 1
            self.bytes += len(data)

    def start(self) -> None:
        """Pull from every location at once, in threads, until `stop`."""
        for location, client in self.sources.items():
            def target(location=location, client=client) -> None:
                try:
                    self._pull(location, client)
                except BaseException as exc:  # noqa: B036 - handed to whoever stops the receiver
                    self.errors.append(exc)
            t = threading.Thread(target=target, daemon=True, name=f"receive-{location}")
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop pulling (within a second) and wait for the threads; raise the first error one met."""
        self._stop.set()
        for t in self._threads:
            t.join()
        if self.errors:
            raise self.errors[0]
