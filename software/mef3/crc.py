"""MEF3's CRC (Koopman polynomial, reflected, start 0xFFFFFFFF, no final xor), and a CRC
patched for a few changed bytes without visiting the rest of the message."""
from __future__ import annotations

from functools import lru_cache

__all__ = ["crc_patched", "crc_update"]


def _make_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0xEB31D82E if c & 1 else 0)
        table.append(c)
    return tuple(table)


_TABLE = _make_table()


def crc_update(data: bytes, crc: int = 0xFFFFFFFF) -> int:
    """MEF3's ``CRC_update``: the CRC of ``data`` continued from ``crc``."""
    table = _TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


@lru_cache(maxsize=16)
def _zeros_columns(n: int) -> tuple[int, ...]:
    """Where each bit of a CRC state goes after ``n`` zero bytes (the map is linear)."""
    return tuple(crc_update(bytes(n), 1 << bit) for bit in range(32))


def crc_patched(crc: int, old: bytes, new: bytes, tail: int) -> int:
    """The CRC of a message after ``old`` bytes followed by ``tail`` bytes became ``new``.

    A CRC is affine in the message, so only the changed bytes are visited (plus a
    cached 32-column map for the unchanged tail), not the whole 15 KiB body.
    """
    delta = bytes(a ^ b for a, b in zip(old, new))
    state = crc_update(delta, 0)
    out = 0
    for bit, column in enumerate(_zeros_columns(tail)):
        if state >> bit & 1:
            out ^= column
    return crc ^ out
