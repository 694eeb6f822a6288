//! blkfront: the block frontend (`io/blkif.h`). Being written.
