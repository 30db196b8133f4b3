"""The shared-prefix attention on random keys and values, against transformers' own eager
attention over each row's concatenated keys (prompt, prefix, own tokens), in fp32 and in the
half-precision dtypes a GPU runs; and the in-place row buffers' bookkeeping."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import eager_attention_forward

from services.generator.kv_cache import (
    CACHE_KWARG,
    ExpansionCache,
    KVBlock,
    shared_prefix_attention,
)

HEADS, KV_HEADS, DIM = 4, 2, 8  # grouped-query attention: two query heads per KV head
SCALE = DIM**-0.5


class Layer(torch.nn.Module):
    """What an attention function reads of its module."""

    def __init__(self):
        super().__init__()
        self.layer_idx, self.num_key_value_groups, self.training = 0, HEADS // KV_HEADS, False


def block(lengths: list[int], dtype) -> KVBlock:
    width = max(lengths)
    valid = torch.zeros(len(lengths), width, dtype=torch.bool)
    for row, n in enumerate(lengths):
        valid[row, width - n :] = True
    shape = (len(lengths), KV_HEADS, width, DIM)
    return KVBlock([torch.randn(shape).to(dtype)], [torch.randn(shape).to(dtype)], valid)


def plain(query, pieces):
    """eager attention of one row over the concatenation of its (keys, values) pieces."""
    keys = torch.cat([k for k, _ in pieces], dim=1)[None].float()
    values = torch.cat([v for _, v in pieces], dim=1)[None].float()
    out, _ = eager_attention_forward(Layer(), query[None].float(), keys, values, None, SCALE)
    return out[0]  # (queries, heads, dim)


def own(keys, row, length):
    return keys[row, :, keys.shape[2] - length :]


@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 3e-2), (torch.float16, 4e-3)]
)
def test_rows_attend_as_over_their_concatenated_keys(dtype, tolerance):
    torch.manual_seed(0)
    # two prompt blocks (encoded apart), left-padded; three prefixes, the first with no tokens
    first, second = block([5, 3], dtype), block([4], dtype)
    prompts = [(first, 1), (second, 0), (first, 0)]
    cache = ExpansionCache(prompts, max_rows=6, new_tokens=3, device=torch.device("cpu"))
    lengths, width = [0, 2, 1], 2
    cache.feed(lengths, width)
    fed_k = torch.randn(3, KV_HEADS, width, DIM).to(dtype)
    fed_v = torch.randn(3, KV_HEADS, width, DIM).to(dtype)
    query = torch.randn(3, HEADS, width, DIM).to(dtype)
    k, v = cache.update(fed_k, fed_v, 0)
    out, _ = shared_prefix_attention(Layer(), query, k, v, None, SCALE, **{CACHE_KWARG: cache})
    assert out.dtype == dtype and out.shape == (3, width, HEADS, DIM)
    for row in (1, 2):  # the last query of each prefix with tokens sees prompt + whole prefix
        b, r = prompts[row]
        pieces = [
            (own(b.keys[0], r, int(b.valid[r].sum())), own(b.values[0], r, int(b.valid[r].sum()))),
            (own(fed_k, row, lengths[row]), own(fed_v, row, lengths[row])),
        ]
        expected = plain(query[row, :, -1:], pieces)
        torch.testing.assert_close(out[row, -1:].float(), expected, atol=tolerance, rtol=0)
    cache.fed()
    history: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(3)]
    prefix_of = [0, 1, 2]
    for parents in ([0, 1, 1, 2, 2, 2], [5, 1, 3, 3]):
        cache.step(parents)
        history = [list(history[p]) for p in parents]
        prefix_of = [prefix_of[p] for p in parents]
        new_k = torch.randn(len(parents), KV_HEADS, 1, DIM).to(dtype)
        new_v = torch.randn(len(parents), KV_HEADS, 1, DIM).to(dtype)
        query = torch.randn(len(parents), HEADS, 1, DIM).to(dtype)
        k, v = cache.update(new_k, new_v, 0)
        out, _ = shared_prefix_attention(Layer(), query, k, v, None, SCALE, **{CACHE_KWARG: cache})
        cache.stepped()
        for row, prefix in enumerate(prefix_of):
            history[row].append((new_k[row], new_v[row]))
            b, r = prompts[prefix]
            n = int(b.valid[r].sum())
            pieces = [(own(b.keys[0], r, n), own(b.values[0], r, n))]
            if lengths[prefix]:
                pieces.append(
                    (own(fed_k, prefix, lengths[prefix]), own(fed_v, prefix, lengths[prefix]))
                )
            pieces += history[row]
            expected = plain(query[row], pieces)
            torch.testing.assert_close(out[row].float(), expected, atol=tolerance, rtol=0)


def test_row_buffers_hold_only_new_tokens_and_follow_their_parents():
    prompt = block([4, 2], torch.float32)
    cache = ExpansionCache(
        [(prompt, 0), (prompt, 1)], max_rows=4, new_tokens=3, device=torch.device("cpu")
    )
    written = []
    for step, parents in enumerate(([0, 0, 1, 1], [3, 1, 0, 0])):
        cache.step(parents)
        keys = torch.full((len(parents), KV_HEADS, 1, DIM), 0.0)
        for row in range(len(parents)):
            keys[row] = 10 * step + row
        written.append(keys[:, 0, 0, 0].tolist())
        k, _ = cache.update(keys, keys.clone(), 0)
        cache.stepped()
    # row r of the second step continues row parents[r] of the first: its first new token is
    # that row's, its second its own
    assert k.shape == (4, KV_HEADS, 2, DIM)
    assert k[:, 0, :, 0].tolist() == [[3, 10], [1, 11], [0, 12], [0, 13]]
    # the prompt's block is read in place, never copied into the rows
    assert cache.nbytes == 2 * 4 * 3 * KV_HEADS * DIM * 4 + 4 * 3 * KV_HEADS * DIM * 4
