"""Best-fit-decreasing bins of rows (TRL's packing algorithm), shared by the packed data set and the
padding-free collator (:mod:`derta.train.packing`, :mod:`derta.train.collator`)."""

from __future__ import annotations

import bisect
from collections import defaultdict, deque


def bfd_bins(lengths: list[int], capacity: int) -> list[list[int]]:
    """Row indices grouped into bins of at most ``capacity`` tokens, best fit decreasing.

    TRL's algorithm (``trl.pack_dataset(..., strategy="bfd")``): rows longest first (ties in index
    order); each row goes into the open bin with the least space that still fits it (the oldest
    such bin), else into a new bin. A row longer than ``capacity`` gets a bin of its own.
    """
    spaces: list[int] = []  # the distinct free spaces of open bins, sorted
    open_bins: dict[int, deque[int]] = defaultdict(deque)  # free space -> bins with it, oldest first
    bins: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        n = lengths[i]
        k = bisect.bisect_left(spaces, n)
        if k < len(spaces):
            space = spaces[k]
            b = open_bins[space].popleft()
            if not open_bins[space]:
                spaces.pop(k)
        else:
            space, b = capacity, len(bins)
            bins.append([])
        bins[b].append(i)
        space -= n
        if space > 0:
            if not open_bins[space]:
                bisect.insort(spaces, space)
            open_bins[space].append(b)
    return bins
