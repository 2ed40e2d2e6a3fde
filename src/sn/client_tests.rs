//! The client machine on a virtual clock.
