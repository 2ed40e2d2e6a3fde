//! Loss accounting of the voice scenario, per direction.
//!
//! Upstream (device -> gateway -> backend) the device counts what it sent
//! and the backend tracks the sequence numbers it received. Downstream
//! (backend -> gateway -> device) the backend echoes each frame it got,
//! so what the device should get back is what the backend received
//! (once per distinct frame), and the device tracks the sequence numbers
//! of the echoes. Both sides hand their counts back per device at the
//! end; a device's WebSocket may land on any bench thread, so the two
//! halves are joined here by device index.

use std::collections::HashMap;
use std::ops::Range;

use serde::Serialize;

use crate::stats::SeqTracker;

/// One device's own counts.
#[derive(Debug)]
pub struct DeviceTally {
    pub device: u32,
    /// Frames sent upstream, the whole run.
    pub sent: u64,
    /// Sequence numbers of the frames sent in the measured window.
    pub window: Range<u64>,
    /// Echoes received.
    pub down: SeqTracker,
}

/// What the backend saw of one device on one WebSocket.
#[derive(Debug)]
pub struct BackendTally {
    pub device: u32,
    pub up: SeqTracker,
}

/// One direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Flow {
    /// Of the frames sent in the measured window: how many should have
    /// arrived, how many did, how many did not.
    pub window_expected: u64,
    pub window_received: u64,
    pub window_lost: u64,
    /// The same over the whole run (ramp, warm-up and drain included).
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Arrived after a later frame of the same device.
    pub reordered: u64,
}

impl Flow {
    fn add(&mut self, expected: u64, received: u64, window_expected: u64, window_received: u64) {
        self.expected += expected;
        self.received += received;
        self.lost += expected.saturating_sub(received);
        self.window_expected += window_expected;
        self.window_received += window_received;
        self.window_lost += window_expected.saturating_sub(window_received);
    }
}

/// Joins the devices' and the backend's counts: (upstream, downstream).
pub fn flows(devices: &[DeviceTally], backend: &[BackendTally]) -> (Flow, Flow) {
    let mut at_backend: HashMap<u32, SeqTracker> = HashMap::new();
    for b in backend {
        at_backend.entry(b.device).or_default().merge(&b.up);
    }
    let nothing = SeqTracker::default();
    let (mut up, mut down) = (Flow::default(), Flow::default());
    for d in devices {
        let got = at_backend.get(&d.device).unwrap_or(&nothing);
        let window = d.window.clone();
        let len = window.end.saturating_sub(window.start);
        let got_in_window = got.count_in(window.clone());
        up.add(d.sent, got.distinct, len, got_in_window);
        up.duplicated += got.duplicated;
        up.reordered += got.reordered;

        down.add(
            got.distinct,
            d.down.distinct,
            got_in_window,
            d.down.count_in(window),
        );
        down.duplicated += d.down.duplicated;
        down.reordered += d.down.reordered;
    }
    (up, down)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(seqs: impl IntoIterator<Item = u64>) -> SeqTracker {
        let mut t = SeqTracker::default();
        for seq in seqs {
            t.record(seq);
        }
        t
    }

    fn device(device: u32, sent: u64, window: Range<u64>, down: SeqTracker) -> DeviceTally {
        DeviceTally {
            device,
            sent,
            window,
            down,
        }
    }

    #[test]
    fn nothing_lost() {
        let devices = [device(3, 10, 2..8, tracker(0..10))];
        let backend = [BackendTally {
            device: 3,
            up: tracker(0..10),
        }];
        let (up, down) = flows(&devices, &backend);
        let clean = Flow {
            window_expected: 6,
            window_received: 6,
            expected: 10,
            received: 10,
            ..Flow::default()
        };
        assert_eq!(up, clean);
        assert_eq!(down, clean);
    }

    #[test]
    fn loss_is_charged_to_the_direction_and_phase_it_happened_in() {
        let devices = [
            // Frames 1 and 9 lost on the way up (9 in the window), then
            // echo 5 lost on the way down.
            device(0, 10, 4..10, tracker([0, 2, 3, 4, 6, 7, 8])),
            // Nothing reached the backend: nothing can come back.
            device(1, 5, 0..5, tracker([])),
        ];
        let backend = [BackendTally {
            device: 0,
            up: tracker([0, 2, 3, 4, 6, 5, 7, 8]),
        }];
        let (up, down) = flows(&devices, &backend);
        assert_eq!((up.expected, up.received, up.lost), (15, 8, 7));
        assert_eq!(
            (up.window_expected, up.window_received, up.window_lost),
            (11, 5, 6)
        );
        assert_eq!(up.reordered, 1);
        assert_eq!((down.expected, down.received, down.lost), (8, 7, 1));
        assert_eq!((down.window_expected, down.window_lost), (5, 1));
    }

    #[test]
    fn a_device_on_two_websockets_is_merged() {
        let devices = [device(9, 6, 0..6, tracker([0, 1, 2, 3, 4, 5, 5]))];
        let backend = [
            BackendTally {
                device: 9,
                up: tracker([0, 1, 2, 3]),
            },
            BackendTally {
                device: 9,
                up: tracker([3, 4, 5]),
            },
        ];
        let (up, down) = flows(&devices, &backend);
        assert_eq!((up.received, up.lost, up.duplicated), (6, 0, 1));
        assert_eq!((down.expected, down.lost, down.duplicated), (6, 0, 1));
        assert_eq!(up.window_lost + down.window_lost, 0);
    }
}
