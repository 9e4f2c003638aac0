"""Records of an offline wandb run file (run-<id>.wandb), decoded with wandb's own protobuf schema.

wandb >= 0.2x writes these files from its Go core and ships no Python reader any more, so the
framing (a LevelDB-style log: a 7-byte file header, 32 KiB blocks, records split into chunks with a
7-byte header each) is undone here and every record is parsed by wandb's ``Record`` message.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7  # crc32 (4), length (2), chunk type (1)
FULL, LAST = 1, 4


def read_records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    pos, pending, records = 7, b"", []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if left < HEADER or (kind == 0 and length == 0):  # block padding
            pos += left
            continue
        pending += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records
