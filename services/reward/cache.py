"""An LRU cache of image embeddings, bounded in bytes, keyed by the image's SHA-256."""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

_KEY_OVERHEAD = 64 + 100  # the hex key and the dict entry, roughly


class EmbeddingCache:
    """Thread-safe. An embedding larger than the whole budget is simply not kept."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def _size(embedding: torch.Tensor) -> int:
        return embedding.element_size() * embedding.nelement() + _KEY_OVERHEAD

    def get(self, key: str) -> torch.Tensor | None:
        with self._lock:
            embedding = self._items.get(key)
            if embedding is not None:
                self._items.move_to_end(key)
            return embedding

    def put(self, key: str, embedding: torch.Tensor) -> None:
        size = self._size(embedding)
        with self._lock:
            if key in self._items:
                self._bytes -= self._size(self._items.pop(key))
            if size > self.max_bytes:
                return
            self._items[key] = embedding
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= self._size(evicted)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
