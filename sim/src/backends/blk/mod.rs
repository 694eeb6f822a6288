//! blkback over image files or memory. Being written.
