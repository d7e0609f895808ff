"""Choosing a view's channels: names checked against the source, one sampling rate."""
from __future__ import annotations

from ..errors import InvalidRangeError, MixedRateError, UnknownChannelError
from ..mef3.metadata import SessionInfo
from ..validation import as_index

__all__ = ["check_selection", "row_name"]


def check_selection(info: SessionInfo, wanted: tuple[str, ...]) -> float:
    """Check a channel selection and return its sampling rate.

    Parameters
    ----------
    info : SessionInfo
        The source's channels.
    wanted : tuple of str
        Non-empty channel names in the wanted order.

    Raises
    ------
    UnknownChannelError
        A name is not a channel of the source.
    InvalidRangeError
        A name is repeated.
    MixedRateError
        The names have different sampling rates.
    """
    unknown = [n for n in wanted if n not in info.names]
    if unknown:
        raise UnknownChannelError(
            f"names contains {unknown[:10]!r}, not channels of this session; choose from "
            f"{list(info.names)!r}.")
    dupes = sorted({n for n in wanted if wanted.count(n) > 1})
    if dupes:
        raise InvalidRangeError(f"names lists {dupes!r} more than once; give each channel "
                                f"once.")
    rates = {n: info.channel(n).fs for n in wanted}
    if len(set(rates.values())) > 1:
        by_rate: dict[float, list[str]] = {}
        for n, fs in rates.items():
            by_rate.setdefault(fs, []).append(n)
        detail = "; ".join(f"{fs:g} Hz: {chs}" for fs, chs in sorted(by_rate.items()))
        raise MixedRateError(f"names mixes sampling rates ({detail}); a view serves one rate: "
                             f"select channels of one rate, and open the file on a second "
                             f"connection to follow another rate at the same time.")
    return rates[wanted[0]]


def row_name(info: SessionInfo, names: tuple[str, ...], row: object) -> str:
    """The active channel ``row`` names: an index into ``names`` or one of them."""
    if isinstance(row, str):
        row = str(row)
        if row not in names:
            where = ("is not an active channel" if row in info.names
                     else "is not a channel of this session")
            raise UnknownChannelError(f"_row={row!r} {where}; active channels: "
                                      f"{list(names)!r}.")
        return row
    index = as_index("_row", row)
    if index >= len(names):
        raise UnknownChannelError(f"_row={index} is out of range: there are {len(names)} "
                                  f"active channels (0..{len(names) - 1}).")
    return names[index]
