//! Parses arbitrary bytes as a PROXY protocol header with
//! `shardmq::transport::proxy::parse`. Checks: no panic; a header takes at
//! least one byte and no more than the input; it parses the same from its
//! own bytes alone (it does not depend on what follows), and every strict
//! prefix of it asks for more; by `HEADER_MAX` bytes the parser has
//! decided, so a reader's buffer stays bounded.
//!
//! Run from the crate root: `cargo fuzz run --fuzz-dir tests/fuzz proxy_header`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardmq::transport::proxy::{parse, HEADER_MAX};

fuzz_target!(|data: &[u8]| {
    let result = parse(data);
    if data.len() >= HEADER_MAX {
        assert!(!matches!(result, Ok(None)), "undecided at {} bytes", data.len());
    }
    if let Ok(Some(parsed)) = result {
        assert!(parsed.consumed > 0 && parsed.consumed <= data.len());
        let own = data.get(..parsed.consumed).expect("consumed within the input");
        assert_eq!(parse(own), Ok(Some(parsed)));
        for n in 0..parsed.consumed {
            let prefix = data.get(..n).expect("prefix within the input");
            assert_eq!(parse(prefix), Ok(None), "prefix of {n} bytes");
        }
    }
});
