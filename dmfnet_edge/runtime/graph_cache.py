"""Captured CUDA graphs by input shape, least recently used first out (torch-free).

A CUDA graph replays one input shape on static buffers; a runner that takes many shapes (a dynamic engine profile,
the gpu backend on images of several sizes) would otherwise keep one graph, and its buffers, per shape it ever
saw. Both GPU runners keep at most `capacity` and release the one used longest ago.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Graph = TypeVar("Graph")
DEFAULT_CAPACITY = 8


class GraphCache(Generic[Graph]):
    def __init__(self, release: Callable[[Graph], None], capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"a graph cache holds at least one graph, not {capacity}")
        self._graphs: OrderedDict[Hashable, Graph] = OrderedDict()
        self._release, self.capacity = release, capacity

    def get(self, key: Hashable, make: Callable[[], Graph]) -> Graph:
        """The graph for `key`, made (and the least recently used one released) when it is not cached."""
        if key in self._graphs:
            self._graphs.move_to_end(key)
            return self._graphs[key]
        graph = make()
        self._graphs[key] = graph
        while len(self._graphs) > self.capacity:
            _, oldest = self._graphs.popitem(last=False)
            self._release(oldest)
        return graph

    def peek(self, key: Hashable) -> Graph | None:
        return self._graphs.get(key)

    def clear(self) -> None:
        """Release every graph (each once, even if releasing one raises)."""
        graphs, self._graphs = list(self._graphs.values()), OrderedDict()
        errors = []
        for graph in graphs:
            try:
                self._release(graph)
            except Exception as exc:  # release the rest, then report the first failure
                errors.append(exc)
        if errors:
            raise errors[0]

    def __len__(self) -> int:
        return len(self._graphs)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._graphs
