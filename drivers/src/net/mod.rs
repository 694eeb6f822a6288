//! netfront: the network frontend (`io/netif.h`). Being written.
