"""The size-capped log file: rotation keeps at most backups + 1 files of about max_bytes each."""
from __future__ import annotations

import threading

from cluster.logfile import RotatingFile


def test_a_log_past_its_size_is_rotated_and_the_oldest_dropped(tmp_path):
    path = tmp_path / "logs" / "S_0.log"
    log = RotatingFile(str(path), max_bytes=1000, backups=2)
    for i in range(100):
        log.write(f"line {i:04d} " + "x" * 40 + "\n")
    log.close()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["S_0.log", "S_0.log.1", "S_0.log.2"]
    assert all(p.stat().st_size <= 1000 + 60 for p in path.parent.iterdir())
    assert "line 0099" in path.read_text() + (path.parent / "S_0.log.1").read_text()
    newest_backup, oldest_backup = (path.parent / "S_0.log.1").read_text(), (path.parent / "S_0.log.2").read_text()
    assert newest_backup.split()[1] > oldest_backup.split()[1]  # .1 is newer than .2
    assert "line 0000" not in "".join(p.read_text() for p in path.parent.iterdir())  # the oldest went


def test_writes_from_threads_are_whole_lines(tmp_path):
    path = tmp_path / "r.log"
    log = RotatingFile(str(path), max_bytes=10_000_000)

    def write(k: int) -> None:
        for i in range(500):
            log.write(f"thread {k} line {i}\n")
    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2000 and all(line.startswith("thread ") and line.count("line") == 1 for line in lines)
