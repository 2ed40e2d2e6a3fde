//! The relay's framing and validation on arbitrary backend bytes: the
//! first byte picks where the stream is cut into reads and the command
//! size limit; the rest is the stream. Any panic is a bug. Checked too:
//! the frames do not depend on where the stream was cut; every object is
//! balanced and within the limit; a valid command's unit is one topic level.
//!
//! Run from the crate root: `cargo fuzz run --fuzz-dir tests/fuzz relay`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardmq::relay::command::{self, check_unit};
use shardmq::relay::frame::{Frame, Splitter};
use shardmq::relay::registry::Registry;

#[derive(Debug, PartialEq)]
enum Got {
    Object(Vec<u8>),
    Junk(usize),
    TooLarge,
}

fn frames(stream: &[u8], max: usize, cut: usize) -> Vec<Got> {
    let mut splitter = Splitter::new(max);
    let mut got = Vec::new();
    let mut push = |f: Frame<'_>| {
        got.push(match f {
            Frame::Object(o) => Got::Object(o.to_vec()),
            Frame::Junk { len } => Got::Junk(len),
            Frame::TooLarge => Got::TooLarge,
        })
    };
    if cut == 0 {
        splitter.feed(stream, &mut push);
    } else {
        for chunk in stream.chunks(cut) {
            splitter.feed(chunk, &mut push);
        }
    }
    got
}

fuzz_target!(|data: &[u8]| {
    let Some((&knob, stream)) = data.split_first() else {
        return;
    };
    let max = 16 + usize::from(knob & 0x3f) * 8;
    let cut = usize::from(knob >> 6) * 3;
    let whole = frames(stream, max, 0);
    assert_eq!(whole, frames(stream, max, cut.max(1)));
    for frame in &whole {
        let Got::Object(bytes) = frame else { continue };
        assert!(bytes.len() <= max);
        assert_eq!(bytes.first(), Some(&b'{'));
        if let Ok(cmd) = command::validate(bytes, 64) {
            assert!(check_unit(&cmd.unit, 64).is_ok());
            let topic = command::topic("/service/ms500/{unit}/socket", &cmd.unit);
            assert_eq!(topic.matches('/').count(), 4);
        }
        let _ = command::reply(&command::validate(bytes, 64).map(|_| String::new()));
    }
    let mut registry = Registry::new(std::time::Duration::from_secs(1), 4);
    let now = std::time::Instant::now();
    let topic = String::from_utf8_lossy(stream.get(..stream.len().min(40)).unwrap_or_default());
    let _ = registry.heartbeat(now, &topic, stream);
    let _ = registry.heartbeat(now, "/device/ms500/x/online", stream);
    let _ = registry.snapshot(now);
});
