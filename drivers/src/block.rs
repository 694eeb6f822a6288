//! The block-device trait drivers implement. Being written.
