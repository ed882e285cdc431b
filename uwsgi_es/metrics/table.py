"""Named numbers in shared memory, one slot per process: every process adds to its own slot only,
and anyone reads the sum of all slots.

Why this shape: uWSGI's workers and mules are separate processes that die and respawn; counts kept
in a process die with it, and ``prometheus_client``'s multiprocess mode needs a file directory and
cleans up after nobody. A slot here belongs to a worker *id* (or mule id), not to a pid, so a
respawned worker takes its predecessor's slot over and goes on counting from its numbers: a killed
worker loses nothing it counted. One writer per slot means no cross-process lock; the threads of
one process take a process-local lock.

A slot is ``slot_bytes`` long, made of 128-byte entries. Entry 0 is the header (entries in use,
numbers that did not fit); each other entry is an 8-byte float (the value) then a 2-byte length
and the key's UTF-8 bytes. A writer fills an entry before it counts it in use, so a reader never
sees a half-written key; values are aligned 8-byte floats, written whole.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator

ENTRY_BYTES = 128
KEY_BYTES = ENTRY_BYTES - 10
SLOT_BYTES = 64 * 1024  # 511 numbers per process
_LENGTH = struct.Struct("<H")


class SlotTable:
    """The numbers of slot ``slot`` in ``area`` (writable), and the sums over its ``slots`` slots."""

    def __init__(self, area: memoryview, slot: int, slots: int, slot_bytes: int = SLOT_BYTES) -> None:
        if slot_bytes % ENTRY_BYTES or slot_bytes < 2 * ENTRY_BYTES:
            raise ValueError(f"a slot is a multiple of {ENTRY_BYTES} bytes, at least two entries")
        if not 0 <= slot < slots or slots * slot_bytes > len(area):
            raise ValueError(f"slot {slot} of {slots} does not fit in {len(area)} bytes")
        self.area = area.cast("B")
        self.values = self.area.cast("d")
        self.slot, self.slots, self.slot_bytes = slot, slots, slot_bytes
        self.capacity = slot_bytes // ENTRY_BYTES - 1
        self.base = slot * slot_bytes
        self.lock = threading.Lock()
        # Keys already in the slot: a respawned process goes on from its predecessor's numbers.
        self.index = dict(self._entries(slot))

    def add(self, key: str, amount: float = 1.0) -> None:
        with self.lock:
            at = self.index.get(key)
            if at is None:
                at = self._append(key)
            self.values[at] += amount

    def where(self, key: str) -> int:
        """The index of ``key``'s value in ``values`` (entered on first use), for callers that add
        to the same numbers on every request: ``with table.lock: table.values[at] += 1``."""
        with self.lock:
            at = self.index.get(key)
            return self._append(key) if at is None else at

    def room(self) -> int:
        """Entries still free in this slot."""
        return self.capacity - min(int(self.values[self.base // 8]), self.capacity)

    def totals(self) -> dict[str, float]:
        """Every key's value summed over all slots (what the whole instance counted)."""
        summed: dict[str, float] = {}
        for slot in range(self.slots):
            for key, value_at in self._entries(slot):
                summed[key] = summed.get(key, 0.0) + self.values[value_at]
        return summed

    def dropped(self) -> float:
        """Numbers every slot could not keep (its slot was full), summed."""
        return sum(self.values[slot * self.slot_bytes // 8 + 1] for slot in range(self.slots))

    def _append(self, key: str) -> int:
        """A new entry for ``key`` in this slot (its value's index); when the slot is full, the
        header's overflow number, which the exposition reports as dropped."""
        header = self.base // 8
        used = int(self.values[header])
        encoded = key.encode()[:KEY_BYTES]
        if used >= self.capacity:
            return header + 1
        offset = self.base + (used + 1) * ENTRY_BYTES
        self.values[offset // 8] = 0.0
        _LENGTH.pack_into(self.area, offset + 8, len(encoded))
        self.area[offset + 10 : offset + 10 + len(encoded)] = encoded
        self.values[header] = used + 1  # published: readers see the entry from now on
        self.index[key] = offset // 8
        return offset // 8

    def _entries(self, slot: int) -> Iterator[tuple[str, int]]:
        """(key, index of its value) of each entry in use in ``slot``."""
        base = slot * self.slot_bytes
        used = min(int(self.values[base // 8]), self.capacity)
        for number in range(1, used + 1):
            offset = base + number * ENTRY_BYTES
            (length,) = _LENGTH.unpack_from(self.area, offset + 8)
            key = bytes(self.area[offset + 10 : offset + 10 + min(length, KEY_BYTES)])
            yield key.decode(errors="replace"), offset // 8
