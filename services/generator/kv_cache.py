"""The expansion's KV cache: each prompt's keys and values held once, however many beam rows
read them, and the attention that reads them ("cascade" attention of serving engines).

Owns the memory layout of one expansion:
- `KVBlock`: keys and values of rows encoded together, left-padded, with a mask of the
  positions that hold tokens. The batch's prompts are one block (the encoding's own cache,
  never copied); the prefixes' sentence tokens, fed once at the start of an expansion, are
  another.
- `ExpansionCache`: what the model's forward takes as its cache (`update`). Each beam row's
  new tokens go into preallocated buffers, written in place; when beams change parents only
  these small buffers are reordered. Prompt and prefix blocks are read, never copied.
- `shared_prefix_attention`, registered with transformers' `AttentionInterface` as
  `csr_shared_prefix`: a row attends to its prompt's block row, its prefix's block row and its
  own tokens. A block part is computed once per block row for all the rows that read it (their
  queries stacked, so a prompt's keys are read once, not once per row), and the parts are
  combined by their log-sum-exp, which is exactly softmax attention over the concatenated keys.
  Scores, softmax and the combination are computed in fp32 whatever the model's dtype.

It works for models whose attention layers call `cache.update(...)` and then the configured
attention function (Llama-style LLaVA, Qwen2-VL with grouped KV heads and M-RoPE), on any
device; `shared_prefix_attention_on(model)` switches a model's decoder layers to it for the
length of a block, leaving its vision tower and prompt encoding on their own implementation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface

ATTENTION = "csr_shared_prefix"
CACHE_KWARG = "shared_prefix_cache"  # the forward keyword that carries the ExpansionCache
_SCORE_BYTES = 256 * 2**20  # largest fp32 score tensor one attention part builds at once
_MASKED = -1e30  # the score of a key a query may not see (finite: an all-masked row is no NaN)


@dataclass(eq=False)
class KVBlock:
    """Keys and values of `rows` sequences, left-padded to one length, held once."""

    keys: list[torch.Tensor]  # per layer: (rows, kv_heads, length, head_dim)
    values: list[torch.Tensor]
    valid: torch.Tensor  # (rows, length) bool: the positions that hold a token

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in zip(self.keys, self.values))


@dataclass(eq=False)
class _Reader:
    """How the rows of one forward read one block: queries of the rows that read the same block
    row are stacked into `width` slots of that block row (block rows lo .. lo + span)."""

    block: KVBlock
    lo: int
    span: int
    width: int
    gather: torch.Tensor  # (span * width,): the query row in each slot (spare slots: row 0)
    slots: torch.Tensor  # (rows,): each row's slot; span * width for a row that reads another block
    complete: bool  # every row reads this block


def _reader(block: KVBlock, owners: Sequence[int | None], device: torch.device) -> _Reader | None:
    """owners[r]: the block row that row r reads, or None (it reads another block)."""
    rows = [(r, o) for r, o in enumerate(owners) if o is not None]
    if not rows:
        return None
    lo = min(o for _, o in rows)
    span = max(o for _, o in rows) - lo + 1
    members: list[list[int]] = [[] for _ in range(span)]
    for r, o in rows:
        members[o - lo].append(r)
    width = max(len(m) for m in members)
    gather = [0] * (span * width)
    slots = [span * width] * len(owners)
    for s, own in enumerate(members):
        for j, r in enumerate(own):
            gather[s * width + j] = r
            slots[r] = s * width + j
    return _Reader(
        block,
        lo,
        span,
        width,
        torch.tensor(gather, dtype=torch.long, device=device),
        torch.tensor(slots, dtype=torch.long, device=device),
        len(rows) == len(owners),
    )


class ExpansionCache:
    """The cache of one expansion. `feed` prepares the forward of the prefixes' own tokens (rows
    are prefixes), `step` each one-token forward of the beam rows (row r continues parents[r]).

    prompts[i] = (block, block row) of prefix i's prompt."""

    def __init__(
        self,
        prompts: Sequence[tuple[KVBlock, int]],
        max_rows: int,
        new_tokens: int,
        device: torch.device,
    ):
        self.prompts, self.max_rows, self.new_tokens = list(prompts), max_rows, new_tokens
        self.device = device
        self.prefix_block: KVBlock | None = None
        self.readers: list[_Reader] = []
        self.own_allowed: torch.Tensor | None = None  # (rows, 1, queries, keys) or None: all
        self._row_prefix = list(range(len(self.prompts)))  # the prefix each row grows
        self._row_keys: list[torch.Tensor] = []  # per layer: (max_rows, kv_heads, new, dim)
        self._row_values: list[torch.Tensor] = []
        self._scratch: torch.Tensor | None = None
        self._filled = 0  # new tokens already in the row buffers
        self._rows = len(self.prompts)
        self._feeding = False
        self._prefix_keys: dict[int, torch.Tensor] = {}
        self._prefix_values: dict[int, torch.Tensor] = {}

    # -- transformers' side ---------------------------------------------------------------------
    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        """Keep this forward's keys and values; return the row's own part for the attention."""
        if self._feeding:  # the prefixes' tokens: this forward's tensors become the block
            self._prefix_keys[layer_idx] = key_states.contiguous()
            self._prefix_values[layer_idx] = value_states.contiguous()
            return self._prefix_keys[layer_idx], self._prefix_values[layer_idx]
        if not self._row_keys:
            self._allocate(key_states)
        keys, values, column = self._row_keys[layer_idx], self._row_values[layer_idx], self._filled
        keys[: self._rows, :, column : column + 1] = key_states
        values[: self._rows, :, column : column + 1] = value_states
        return keys[: self._rows, :, : column + 1], values[: self._rows, :, : column + 1]

    def _allocate(self, like: torch.Tensor) -> None:
        layers = len(self._prefix_keys) or _layers_of(self.prompts)
        shape = (self.max_rows, like.shape[1], self.new_tokens, like.shape[3])
        self._row_keys = [like.new_empty(shape) for _ in range(layers)]
        self._row_values = [like.new_empty(shape) for _ in range(layers)]
        self._scratch = like.new_empty(shape)

    # -- the engine's side ----------------------------------------------------------------------
    def feed(self, lengths: Sequence[int], width: int) -> None:
        """Before the forward of the prefixes' own tokens: prefix i has lengths[i] tokens,
        left-padded to `width`."""
        self._feeding = True
        valid = torch.zeros(len(lengths), width, dtype=torch.bool)
        for row, n in enumerate(lengths):
            valid[row, width - n :] = True
        valid = valid.to(self.device)
        causal = torch.ones(width, width, dtype=torch.bool, device=self.device).tril()
        self.own_allowed = (valid[:, None, :] & causal)[:, None]  # (rows, 1, width, width)
        self._prefix_valid = valid
        self.readers = self._prompt_readers()

    def fed(self) -> None:
        """After the feed forward: the prefixes' tokens become a block the beam rows read."""
        layers = sorted(self._prefix_keys)
        self.prefix_block = KVBlock(
            [self._prefix_keys[i] for i in layers],
            [self._prefix_values[i] for i in layers],
            self._prefix_valid,
        )
        self._prefix_keys, self._prefix_values = {}, {}
        self._feeding = False

    def step(self, parents: Sequence[int]) -> None:
        """Before a one-token forward: row r continues row parents[r] of the last forward."""
        self.own_allowed = None
        first = self._filled == 0 and not self._row_keys
        if first or list(parents) != list(range(self._rows)):
            if len(parents) > self.max_rows:
                raise ValueError(
                    f"{len(parents)} beam rows, more than the {self.max_rows} reserved"
                )
            if self._filled:
                self._reorder(parents)
            self._row_prefix = [self._row_prefix[p] for p in parents]
            self._rows = len(parents)
            self.readers = self._prompt_readers()
            if self.prefix_block is not None:
                prefix_reader = _reader(self.prefix_block, self._row_prefix, self.device)
                self.readers.append(prefix_reader)  # type: ignore[arg-type]

    def stepped(self) -> None:
        self._filled += 1

    def _reorder(self, parents: Sequence[int]) -> None:
        index = torch.tensor(list(parents), dtype=torch.long, device=self.device)
        rows, filled = len(parents), self._filled
        for buffers in (self._row_keys, self._row_values):
            for layer, buffer in enumerate(buffers):
                assert self._scratch is not None
                torch.index_select(
                    buffer[: self._rows, :, :filled],
                    0,
                    index,
                    out=self._scratch[:rows, :, :filled],
                )
                buffers[layer], self._scratch = self._scratch, buffer

    def _prompt_readers(self) -> list[_Reader]:
        blocks: dict[int, KVBlock] = {}
        for block, _ in self.prompts:
            blocks.setdefault(id(block), block)
        readers = []
        for key, block in blocks.items():
            owners = [
                row if id(self.prompts[prefix][0]) == key else None
                for prefix, row in ((p, self.prompts[p][1]) for p in self._row_prefix)
            ]
            reader = _reader(block, owners, self.device)
            if reader is not None:
                readers.append(reader)
        return readers

    @property
    def nbytes(self) -> int:
        """Bytes of the buffers this expansion allocated (the prompt blocks are the engine's)."""
        held = sum(t.nbytes for t in (*self._row_keys, *self._row_values))
        held += self._scratch.nbytes if self._scratch is not None else 0
        return held + (self.prefix_block.nbytes if self.prefix_block is not None else 0)


def _layers_of(prompts: Sequence[tuple[KVBlock, int]]) -> int:
    return len(prompts[0][0].keys)


# -- the attention --------------------------------------------------------------------------------
def shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of rows over their blocks' parts and their own keys (`key`, `value`, from
    ExpansionCache.update). query: (rows, heads, queries, dim); returns (rows, queries, heads,
    dim) as transformers' attention functions do."""
    cache = kwargs.get(CACHE_KWARG)
    if not isinstance(cache, ExpansionCache):
        raise RuntimeError(
            f"the {ATTENTION!r} attention runs only inside an expansion: pass the "
            f"ExpansionCache as {CACHE_KWARG}=... to the forward"
        )
    _check_supported(kwargs)
    rows, heads, queries, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling
    layer = module.layer_idx  # type: ignore[attr-defined]
    parts = [_read_block(query, reader, layer, kv_heads, scale) for reader in cache.readers]
    own_query = query.reshape(rows, kv_heads, groups * queries, dim)
    allowed = cache.own_allowed
    if allowed is not None and groups > 1:  # the same mask for each query head of a KV head
        allowed = (
            allowed[:, :, None]
            .expand(-1, -1, groups, -1, -1)
            .reshape(rows, 1, groups * queries, -1)
        )
    out, lse = _attend(own_query, key, value, allowed, scale)
    parts.append((out.view(rows, heads, queries, dim), lse.view(rows, heads, queries)))
    return _combine(parts, query.dtype).transpose(1, 2).contiguous(), None


def _check_supported(kwargs: dict[str, Any]) -> None:
    for unsupported in ("sliding_window", "softcap"):
        if kwargs.get(unsupported) is not None:
            raise ValueError(
                f"the engine's shared-prefix attention has no {unsupported} "
                f"({kwargs[unsupported]}): serve a model without it"
            )


def _read_block(
    query: torch.Tensor, reader: _Reader, layer: int, kv_heads: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The part of the attention over one block: (rows, heads, queries, dim) outputs and
    (rows, heads, queries) log-sum-exps, -inf for rows that read another block."""
    heads, queries, dim = query.shape[1:]
    groups, span, width = heads // kv_heads, reader.span, reader.width
    keys = reader.block.keys[layer].narrow(0, reader.lo, span)
    values = reader.block.values[layer].narrow(0, reader.lo, span)
    allowed = reader.block.valid.narrow(0, reader.lo, span)[:, None, None, :]
    stacked = query.index_select(0, reader.gather).view(span, width, kv_heads, groups, queries, dim)
    stacked = stacked.permute(0, 2, 1, 3, 4, 5).reshape(span, kv_heads, -1, dim)
    out, lse = _attend(stacked, keys, values, allowed, scale)
    out = out.view(span, kv_heads, width, groups, queries, dim).permute(0, 2, 1, 3, 4, 5)
    out = out.reshape(span * width, heads, queries, dim)
    lse = lse.view(span, kv_heads, width, groups, queries).permute(0, 2, 1, 3, 4)
    lse = lse.reshape(span * width, heads, queries)
    if not reader.complete:  # rows of other blocks read an empty slot: no weight
        out = torch.cat([out, out.new_zeros(1, heads, queries, dim)])
        lse = torch.cat([lse, lse.new_full((1, heads, queries), float("-inf"))])
    return out.index_select(0, reader.slots), lse.index_select(0, reader.slots)


def _attend(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    allowed: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of query (batch, kv_heads, m, dim) over keys (batch, kv_heads, n, dim)
    where `allowed` (broadcast to (batch, 1, m, n)); returns the outputs in the values' dtype
    and the fp32 log-sum-exp of the scores (about -1e30 where nothing is allowed, so that the
    part gets no weight). Queries are taken in chunks so that no score tensor exceeds
    _SCORE_BYTES."""
    batch, kv_heads, m, _ = query.shape
    n = keys.shape[-2]
    chunk = max(1, _SCORE_BYTES // max(1, batch * kv_heads * n * 4))
    transposed = keys.transpose(-1, -2)
    outs, lses = [], []
    for start in range(0, m, chunk):
        scores = torch.matmul(query[:, :, start : start + chunk], transposed).float().mul_(scale)
        if allowed is not None:
            mask = allowed if allowed.shape[2] == 1 else allowed[:, :, start : start + chunk]
            scores.masked_fill_(~mask, _MASKED)
        weights = torch.softmax(scores, dim=-1)
        # the largest weight is exp(0) / sum exp(scores - max): lse = max - log(largest weight)
        lses.append(scores.amax(dim=-1).sub_(weights.amax(dim=-1).log_()))
        outs.append(torch.matmul(weights.to(values.dtype), values))
    if len(outs) == 1:
        return outs[0], lses[0]
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def _combine(parts: list[tuple[torch.Tensor, torch.Tensor]], dtype: torch.dtype) -> torch.Tensor:
    """softmax over the union of the parts' keys, from each part's softmax and log-sum-exp."""
    lses = torch.stack([lse for _, lse in parts])
    weights = torch.softmax(lses, dim=0)  # each part's share: exp(lse) / sum of exp(lse)
    combined = parts[0][0].float() * weights[0][..., None]
    for (out, _), weight in zip(parts[1:], weights[1:]):
        combined += out.float() * weight[..., None]
    return combined.to(dtype)


def register() -> None:
    """Make `csr_shared_prefix` an attention implementation transformers knows (idempotent)."""
    AttentionInterface.register(ATTENTION, shared_prefix_attention)


def _attention_configs(model: torch.nn.Module) -> list[Any]:
    """The configs the model's decoder attention layers read their implementation from."""
    configs: dict[int, Any] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if hasattr(module, "layer_idx") and hasattr(config, "_attn_implementation"):
            configs.setdefault(id(config), config)
    if not configs:
        raise ValueError(
            f"{type(model).__name__} has no attention layers with a layer_idx and a config: the "
            "engine supports models whose attention goes through transformers' AttentionInterface"
        )
    return list(configs.values())


@contextlib.contextmanager
def shared_prefix_attention_on(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, the model's decoder layers attend with shared_prefix_attention."""
    register()
    configs = _attention_configs(model)
    before = [config._attn_implementation for config in configs]
    try:
        for config in configs:
            config._attn_implementation = ATTENTION
        yield
    finally:
        for config, implementation in zip(configs, before):
            config._attn_implementation = implementation
