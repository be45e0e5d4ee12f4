"""A log's tail is read from its end: `tuneops logs --tail` and the dashboard's log section
cost what the tail does, however long the log has grown."""

from __future__ import annotations

import io
from pathlib import Path

from reconciler.backends.local.backend import last_lines


def test_the_last_lines_of_a_long_log_and_the_handle_left_at_its_end(tmp_path: Path):
    log = tmp_path / "job.log"
    log.write_bytes(b"".join(f"step {i}\n".encode() for i in range(300_000)))
    with log.open("rb") as handle:
        assert last_lines(handle, 3) == [b"step 299997\n", b"step 299998\n", b"step 299999\n"]
        assert handle.tell() == log.stat().st_size
        with log.open("ab") as writer:
            writer.write(b"step 300000\n")
        assert handle.readline() == b"step 300000\n"  # a follow goes on from the end


def test_short_logs_a_line_without_its_newline_and_a_tail_of_nothing():
    assert last_lines(io.BytesIO(b"a\nb"), 5) == [b"a\n", b"b"]
    assert last_lines(io.BytesIO(b""), 5) == []
    assert last_lines(io.BytesIO(b"x\n" * 10), 0) == []
    assert last_lines(io.BytesIO(b"1\n2\n3\n"), 2, block=1) == [b"2\n", b"3\n"]


def test_a_line_longer_than_the_cap_is_cut_not_read_whole():
    huge = b"x" * (3 * 1024 * 1024)
    (line,) = last_lines(io.BytesIO(b"start\n" + huge), 1, max_bytes=1024 * 1024)
    assert 1024 * 1024 <= len(line) < len(huge)
