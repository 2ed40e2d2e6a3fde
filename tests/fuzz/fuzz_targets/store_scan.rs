//! Scans arbitrary bytes as a store file with `shardmq::mqtt::store::scan`,
//! then replays what it found. Checks: no panic on any input (a store is
//! read before anything else, from a disk that may be damaged); the good
//! part and the torn tail add up to the file; the good part alone scans to
//! the same records with no tail; every record re-encodes to a frame that
//! scans back to itself.
//!
//! Run from the crate root: `cargo fuzz run --fuzz-dir tests/fuzz store_scan`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardmq::mqtt::store::{self, state::State};

fuzz_target!(|data: &[u8]| {
    // Half the inputs get a valid header, so the records are reached.
    let mut file = data.to_vec();
    if data.first().is_some_and(|b| b & 1 == 0) {
        file = store::header().to_vec();
        file.extend_from_slice(data.get(1..).unwrap_or_default());
    }
    let Ok(scan) = store::scan(&file) else {
        return;
    };
    let good = usize::try_from(scan.good_len).expect("fits");
    assert_eq!(good as u64 + scan.torn_bytes, file.len() as u64);
    let again = store::scan(file.get(..good).expect("within")).expect("the good part scans");
    assert_eq!(again.records, scan.records);
    assert_eq!(again.torn_bytes, 0);
    let mut encoded = store::header().to_vec();
    for record in &scan.records {
        store::encode(&mut encoded, record);
    }
    assert_eq!(store::scan(&encoded).expect("re-encoded").records, scan.records);
    let mut state = State::default();
    for record in scan.records {
        state.apply(record);
    }
    let _ = state.summary();
});
