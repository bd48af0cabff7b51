"""Block bookkeeping for parsers whose upstream sends bare deltas (no block boundaries)."""

from __future__ import annotations

from mypy_extensions import mypyc_attr

from ..canonical import BlockStart, BlockStop, SignatureDelta, StreamEvent, TextPart, ThinkingPart
from ..thinking import mint_signature

__all__ = ["DeltaBlocks"]


@mypyc_attr(allow_interpreted_subclasses=True)   # plugins' parsers build on it (setup.py)
class DeltaBlocks:
    """Opens a text or thinking block when the kind of delta changes and closes the previous
    one; a thinking block closes with a minted signature (see p5proxy.thinking)."""

    __slots__ = ("_next", "_open", "_thinking")

    def __init__(self) -> None:
        self._next = 0                               # next block index
        self._open: tuple[str, int] | None = None    # (kind, block index) of the open block
        self._thinking: list[str] = []               # reasoning text, for the signature

    def _ensure(self, kind: str, out: list[StreamEvent]) -> int:
        if self._open is not None and self._open[0] == kind:
            return self._open[1]
        self._close(out)
        index = self._next
        self._next += 1
        self._open = (kind, index)
        out.append(BlockStart(index, TextPart("") if kind == "text" else ThinkingPart("", "")))
        return index

    def _close(self, out: list[StreamEvent]) -> None:
        if self._open is None:
            return
        kind, index = self._open
        if kind == "thinking":
            out.append(SignatureDelta(index, mint_signature("".join(self._thinking))))
            self._thinking = []
        out.append(BlockStop(index))
        self._open = None
