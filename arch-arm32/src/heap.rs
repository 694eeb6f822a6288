//! The heap: `xenpal_arm::heap`, the buddy allocator over `.bss` that both
//! Arm arch crates use.

pub use xenpal_arm::heap::{HEAP_SIZE, grow, init};
