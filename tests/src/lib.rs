//! Cross-crate tests of xenpal (in `tests/`); this library is the future home
//! of helpers they share. For now it is empty.
