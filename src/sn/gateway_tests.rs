//! The gateway with a real broker machine on a virtual clock.
