// The prologue of one output tile in the forward kernels: where the tile's sequence lives, its
// first query row, its K/V head, its mask, and the key blocks its split visits. One place
// decides these so that the kernels cannot drift apart.
#pragma once
#include "block_range.h"
#include "prefix_ranges.h"
#include "sequence.h"
#include "split.h"

namespace flare {

struct QueryTile {
  SequenceInfo seq;  // lengths and row offsets of the tile's sequence
  int m0;            // first query row of the tile within the sequence
  int head_k;        // K/V head of the tile's query head
  MaskSpec mask;     // visibility of the sequence's keys
  BlockRange range;  // key blocks of this split (end <= begin: none)
  bool prefix;       // some row sees keys through a prefix range: masked blocks use row_keys
};

// Query block m_block (rows of block_m) of query head `head` in sequence `batch`, split `split`
// of num_splits over the key blocks of size block_n that the block sees. Returns false, with
// only seq and m0 set, when the block starts past the sequence's query rows: nothing to do.
// Callers copy t.seq into a local (the kernels' code generation depends on it) and keep the
// steps in this order: sequence, bounds check, head, mask, key blocks.
FLARE_HD bool query_tile(const flare_mha_fwd_params& p, int batch, int head, int m_block,
                         int block_m, int block_n, int num_splits, int split, QueryTile& t) {
  t.seq = sequence_info(p, batch);
  t.m0 = m_block * block_m;
  if (t.m0 >= t.seq.seqlen_q) return false;
  t.head_k = head / (p.num_heads / p.num_heads_k);
  t.mask = sequence_mask(p, t.seq);
  const TileKeys keys = tile_key_blocks(p, batch, t.mask, t.m0, t.m0 + block_m, block_n);
  t.range = keys.range;
  t.prefix = keys.prefix;
  if (num_splits > 1) t.range = split_block_range(t.range, num_splits, split);
  return true;
}

}  // namespace flare
