"""Verify an exported audit log (JSON lines) offline: the same check as docs/audit.md's script."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

GENESIS = "0" * 64


@dataclass(frozen=True)
class FileVerification:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None


def entry_hash(e: dict) -> str:
    body = [e["prev_hash"], e["seq"], e["at"].removesuffix("Z"), e["actor"], e["action"], e["target"], e["detail"]]
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def verify_lines(lines: Iterable[str], partial: bool = False) -> FileVerification:
    """A whole export must start at entry 1 and chain without gaps; a partial one (a node's or
    partner's entries) is checked entry by entry, and chained wherever entries are consecutive."""
    prev_hash, prev_seq, count = GENESIS, 0, 0
    for line in lines:
        if not line.strip():
            continue
        e = json.loads(line)
        count += 1
        seq = e["seq"]
        if entry_hash(e) != e["hash"]:
            return FileVerification(False, count, seq, "entry content does not match its hash")
        if seq <= prev_seq:
            return FileVerification(False, count, seq, "entries out of order")
        if seq != prev_seq + 1 and not partial:
            return FileVerification(False, count, seq, f"entry {prev_seq + 1} is missing")
        if seq == prev_seq + 1 and e["prev_hash"] != prev_hash:
            return FileVerification(False, count, seq, "chain broken: prev_hash does not match")
        prev_hash, prev_seq = e["hash"], seq
    return FileVerification(True, count)
