"""Spill files between two locations through real Redis servers: whole, checked, bounded, never hanging."""
from __future__ import annotations

import os
import threading
import time

import pytest
from integration_helpers import free_port

from cluster.exceptions import ShuffleError
from cluster.layout import JobLayout
from cluster.node.redis_server import RedisServer
from cluster.node.redis_transport import RedisReceiver, RedisTransport, job_namespace

PASSWORD = "transport-test-password-0123456789"
NS = job_namespace("t", "job", "run1")


@pytest.fixture
def redis_a(tmp_path):
    srv = RedisServer(str(tmp_path / "redis_a"), "127.0.0.1", free_port())
    srv.start(PASSWORD)
    yield srv
    srv.stop()


@pytest.fixture
def layouts(tmp_path):
    return JobLayout(str(tmp_path / "a" / "data"), str(tmp_path / "a" / "aux"), "job"), \
        JobLayout(str(tmp_path / "b" / "data"), str(tmp_path / "b" / "aux"), "job")


def spill(layout: JobLayout, server: str, name: str, size: int) -> tuple[str, bytes]:
    folder = layout.spill_dir(server)
    os.makedirs(folder, exist_ok=True)
    data = os.urandom(size)
    path = os.path.join(folder, name)
    with open(path, "wb") as fh:
        fh.write(data)
    return path, data


def sender(layout, redis_a, limit=10, chunk_bytes=32 * 1024 ** 2, timeout=20):
    return RedisTransport(layout=layout, client=redis_a.client(PASSWORD, timeout=timeout + 10), namespace=NS,
                          server_id="S_0", local_servers=["S_0", "S_9"], remote_servers=["S_1"],
                          max_files_in_redis=limit, timeout=timeout, chunk_bytes=chunk_bytes)


def receiver(layout, redis_a, timeout=20):
    return RedisReceiver(layout=layout, server_id="S_1", namespace=NS,
                         sources={"a": redis_a.client(PASSWORD, timeout=timeout + 10)})


def file_keys(redis_a) -> list[bytes]:
    return [k for k in redis_a.client(PASSWORD).keys(f"{NS}:file:*") if k.count(b":") == 6]


def test_files_arrive_whole_local_ones_are_renamed_and_redis_is_left_clean(redis_a, layouts):
    a, b = layouts
    rx = receiver(b, redis_a)
    rx.start()
    tx = sender(a, redis_a)
    sent = {}
    for i in range(5):
        path, data = spill(a, "S_0", f"S_0-{i:06d}.spill", 50_000 * (i + 1))
        tx.send(path, "S_1")
        sent[os.path.basename(path)] = data
    local_path, local_data = spill(a, "S_0", "S_0-local.spill", 1000)
    tx.send(local_path, "S_9")
    tx.close()  # returns once every file was acked: received whole
    rx.stop()
    got = {f: open(os.path.join(b.map_dir("S_1"), f), "rb").read() for f in os.listdir(b.map_dir("S_1"))}
    assert got == sent
    assert open(os.path.join(a.map_dir("S_9"), "S_0-local.spill"), "rb").read() == local_data
    assert rx.files == 5 and not file_keys(redis_a) and not os.listdir(a.spill_dir("S_0"))


def test_never_more_files_in_redis_than_the_limit(redis_a, layouts):
    a, b = layouts
    tx = sender(a, redis_a, limit=2)
    most = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            most[0] = max(most[0], len(file_keys(redis_a)))
            time.sleep(0.002)

    def send_all() -> None:
        for i in range(6):
            tx.send(spill(a, "S_0", f"S_0-{i:06d}.spill", 20_000)[0], "S_1")
        tx.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    sending = threading.Thread(target=send_all)
    sending.start()
    time.sleep(0.5)
    assert sending.is_alive(), "with no receiver the sender must wait for room"
    assert len(file_keys(redis_a)) == 2
    rx = receiver(b, redis_a)
    rx.start()
    sending.join(timeout=20)
    rx.stop()
    stop.set()
    watcher.join()
    assert not sending.is_alive() and most[0] <= 2
    assert len(os.listdir(b.map_dir("S_1"))) == 6


def test_big_files_go_in_chunks(redis_a, layouts):
    a, b = layouts
    tx = sender(a, redis_a, chunk_bytes=100_000)
    path, data = spill(a, "S_0", "S_0-big.spill", 1_050_000)
    tx.send(path, "S_1")
    assert len(redis_a.client(PASSWORD).keys(f"{NS}:file:S_0-big:*")) == 11
    rx = receiver(b, redis_a)
    rx.start()
    tx.close()
    rx.stop()
    assert open(os.path.join(b.map_dir("S_1"), "S_0-big.spill"), "rb").read() == data


def test_a_damaged_file_is_refused(redis_a, layouts):
    a, b = layouts
    tx = sender(a, redis_a, chunk_bytes=10_000)
    tx.send(spill(a, "S_0", "S_0-x.spill", 30_000)[0], "S_1")
    redis_a.client(PASSWORD).setrange(f"{NS}:file:S_0-x:1", 5, b"\x00\x01\x02")
    rx = receiver(b, redis_a)
    rx.start()
    time.sleep(1.5)
    with pytest.raises(ShuffleError, match="arrived damaged"):
        rx.stop()
    assert not os.path.exists(os.path.join(b.map_dir("S_1"), "S_0-x.spill"))


def test_a_redis_that_dies_mid_shuffle_fails_the_sender_at_once(redis_a, layouts):
    a, _ = layouts
    tx = sender(a, redis_a, limit=1, timeout=60)
    tx.send(spill(a, "S_0", "S_0-1.spill", 1000)[0], "S_1")
    outcome = {}

    def second() -> None:
        try:
            tx.send(spill(a, "S_0", "S_0-2.spill", 1000)[0], "S_1")
        except ShuffleError as exc:
            outcome["error"] = exc

    blocked = threading.Thread(target=second)
    blocked.start()
    time.sleep(0.3)
    assert blocked.is_alive(), "the second file waits for room"
    redis_a.stop()
    started = time.monotonic()
    blocked.join(timeout=15)
    assert not blocked.is_alive() and time.monotonic() - started < 10
    assert "through Redis failed" in str(outcome.get("error"))


def test_a_receiver_that_died_midway_is_finished_by_the_next_and_every_key_expires(redis_a, layouts):
    """A file id taken (BLMOVE) by a receiver that died before writing the file stays in its processing
    list: the server's next receiver takes it first, so the sender's acks all come."""
    a, b = layouts
    tx = sender(a, redis_a)
    path, data = spill(a, "S_0", "S_0~1-000001.spill", 40_000)
    tx.send(path, "S_1")
    client = redis_a.client(PASSWORD)
    taken = client.blmove(f"{NS}:inbox:S_1", f"{NS}:processing:S_1", 1, "LEFT", "RIGHT")  # then it "died"
    assert taken == b"S_0~1-000001"
    client.expire(f"{NS}:processing:S_1", 60)  # as the receiver does after its BLMOVE
    assert all(client.ttl(k) > 0 for k in client.keys(f"{NS}:*"))
    rx = receiver(b, redis_a)
    rx.start()
    tx.close()
    rx.stop()
    assert open(os.path.join(b.map_dir("S_1"), "S_0~1-000001.spill"), "rb").read() == data
    assert client.llen(f"{NS}:processing:S_1") == 0 and not file_keys(redis_a)
