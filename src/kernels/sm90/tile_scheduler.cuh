// Tile schedulers of the Hopper kernels: which output tiles (query block, head, batch, split) a
// CTA computes, in which order.
//
// Tile ids enumerate the tiles with query blocks innermost, so that the CTAs in flight share
// their heads' K/V in L2, and the latest (heaviest under a causal mask) query block of a head
// first. Both schedulers walk ids the same way: `initial_work()`, then `next_work(tile)` until
// `is_valid` fails.
//  - StaticTileScheduler: one tile per CTA (SingleTileScheduler: tile blockIdx.x), or per
//    cluster, whose CTAs take consecutive query blocks; the grid covers every tile.
//  - DynamicTileScheduler: persistent CTAs (at most one per SM). Tile blockIdx.x first, then
//    tickets gridDim.x + atomicAdd(counter, 1) until a ticket reaches num_tiles, so a CTA that
//    finishes early takes the next tile. The counter is one word of the caller's workspace,
//    zeroed on the stream before the launch: every launch (several streams, graph replays) has
//    its own.
// In the warp-specialised kernel only the producer walks the scheduler; the dynamic one
// publishes each tile to the consumers with its Q buffer (PublishedTile).
#pragma once
#include <cstdint>

#include "common/block_range.h"
#include "kernels/fwd_launch.h"
#include "kernels/sm90/wgmma_common.cuh"

namespace flare {
namespace sm90 {

// One output tile: query block m_block of (head, batch), key split `split`.
struct Sm90Tile {
  int m_block, head, batch, split;
};

// What the producer publishes with a Q buffer so that the consumers need not decode the tile
// (three integer divisions) nor compute its key blocks again: the tile (m_block -1: no more
// tiles), its key-block range, split included, and whether its rows see keys through prefix
// ranges (TileKeys::prefix).
struct alignas(16) Sm90PublishedTile {
  Sm90Tile at;
  BlockRange range;
  int prefix;
  int pad;
};

// A tile id's (query block, head, batch, split), in the order described above.
__device__ __forceinline__ Sm90Tile sm90_tile(int tile, int m_blocks, int num_heads,
                                              int num_splits) {
  const int rest = tile / m_blocks;
  return Sm90Tile{m_blocks - 1 - tile % m_blocks, rest % num_heads,
                  rest / num_heads / num_splits, rest / num_heads % num_splits};
}

// The tile of tile id `tile` for a CTA of cluster rank `rank`, where ClusterM CTAs per cluster
// take consecutive query blocks of one (head, batch, split): tile ids then enumerate groups of
// ClusterM query blocks (m_units = ceil(m_blocks / ClusterM) per head) in sm90_tile's order,
// and rank r takes block ClusterM * group + r (past m_blocks for the last group of an odd
// count: a tile wholly past the sequence). ClusterM = 1: sm90_tile.
template <int ClusterM>
__device__ __forceinline__ Sm90Tile sm90_cta_tile(int tile, int m_units, int num_heads,
                                                  int num_splits, int rank) {
  Sm90Tile at = sm90_tile(tile, m_units, num_heads, num_splits);
  at.m_block = at.m_block * ClusterM + rank;
  return at;
}

// One tile per CTA (CtasPerTile 1), or per cluster of CtasPerTile CTAs (tile ids as
// sm90_cta_tile enumerates them): the grid covers every tile, CtasPerTile CTAs a tile.
template <int CtasPerTile>
struct StaticTileScheduler {
  static constexpr bool kDynamic = false;
  struct SharedStorage {};

  int num_tiles;

  // The dynamic scheduler's signature (the warp-specialised kernel builds either).
  __device__ __forceinline__ StaticTileScheduler(const FwdLaunch&, int num_tiles_,
                                                 SharedStorage&, int /*threads*/, int /*bar*/)
      : num_tiles(num_tiles_) {}
  __device__ __forceinline__ int initial_work() const { return int(blockIdx.x) / CtasPerTile; }
  __device__ __forceinline__ bool is_valid(int tile) const { return tile < num_tiles; }
  // Past the last tile when the grid covers every tile. (A grid stride rather than a constant:
  // the loop the kernels write around it then compiles to fewer instructions.)
  __device__ __forceinline__ int next_work(int tile) {
    return tile + int(gridDim.x) / CtasPerTile;
  }

  // The tile of a CTA of a 3-D grid (m_blocks, heads, batch x splits), in the same order: the
  // all-threads kernel's launch, which so needs no tile-id decode (its d256 instances have no
  // registers to spare for one).
  static __device__ __forceinline__ Sm90Tile grid_tile(int num_splits) {
    return Sm90Tile{int(gridDim.x - 1 - blockIdx.x), int(blockIdx.y),
                    int(blockIdx.z / unsigned(num_splits)), int(blockIdx.z % unsigned(num_splits))};
  }
};
using SingleTileScheduler = StaticTileScheduler<1>;

// Persistent CTAs taking tickets from the launch's counter (launch.tile_counter, zero at launch
// start). next_work is called by the `threads` threads of one group together (the producer
// threads): thread 0 takes the ticket and passes it on through shared memory and named barrier
// `bar`. Two words: thread 0 writes word f % 2 at fetch f, and reaches fetch f + 2 only after
// every thread of the group has passed barrier f + 1, so after it read word f.
struct DynamicTileScheduler {
  static constexpr bool kDynamic = true;
  struct SharedStorage {
    int ticket[2];
  };

  unsigned int* counter;
  int num_tiles;
  SharedStorage& shared;
  int threads, bar;
  int fetches = 0;  // tickets fetched so far: word fetches % 2

  __device__ __forceinline__ DynamicTileScheduler(const FwdLaunch& launch, int num_tiles_,
                                                  SharedStorage& shared_, int threads_, int bar_)
      : counter(launch.tile_counter), num_tiles(num_tiles_), shared(shared_), threads(threads_),
        bar(bar_) {}
  __device__ __forceinline__ int initial_work() const { return blockIdx.x; }
  __device__ __forceinline__ bool is_valid(int tile) const { return tile < num_tiles; }
  // The next ticket, num_tiles once they are all taken.
  __device__ __forceinline__ int next_work(int /*tile*/) {
    if (threadIdx.x == 0) {
      const unsigned int ticket = gridDim.x + atomicAdd(counter, 1u);
      shared.ticket[fetches & 1] = ticket < unsigned(num_tiles) ? int(ticket) : num_tiles;
    }
    __syncwarp();
    named_barrier_sync(bar, threads);
    // Every lane reads the same word; redux.sync puts it in a uniform register, so the
    // compiler knows the tile (and what derives from it) is warp-uniform.
    return __reduce_max_sync(0xffffffffu, shared.ticket[fetches++ & 1]);
  }
};

}  // namespace sm90
}  // namespace flare
