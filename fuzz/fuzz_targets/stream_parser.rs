//! Arbitrary bytes, in arbitrary chunkings, through the XMPP stream parser.
//!
//! Input layout: the first byte picks small or default limits, the next
//! bytes give chunk sizes (until a 0 byte), the rest is the stream. Crashes
//! found here go into crates/xmpp-proto/tests/corpus/ to be replayed by
//! `cargo test` (the whole input is also replayed as plain stream bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_xmpp_proto::{Frame, Limits, StreamParser};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let split = rest.iter().position(|&b| b == 0).unwrap_or(0).min(16);
    let (sizes, stream) = rest.split_at(split);
    let limits = if mode & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_stanza_bytes: 512,
            max_depth: 4,
            max_attributes: 4,
            max_token_bytes: 64,
        }
    };
    let mut p = StreamParser::new(limits);
    let mut i = 0;
    let mut k = 0;
    let mut restarted = false;
    while i < stream.len() {
        let n = sizes
            .get(k % sizes.len().max(1))
            .map_or(stream.len(), |&s| s as usize)
            .max(1);
        k += 1;
        let end = (i + n).min(stream.len());
        p.feed(&stream[i..end]);
        i = end;
        loop {
            match p.next() {
                Ok(Some(Frame::Stanza(e))) => {
                    let xml = e.to_xml();
                    assert!(xml.len() <= 16 * (limits.max_stanza_bytes + 64));
                    // A restart after the first stanza, as after STARTTLS.
                    if mode & 2 != 0 && !restarted {
                        restarted = true;
                        p.reset();
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    let _ = e.to_xml();
                    return;
                }
            }
            assert!(p.buffered() <= stream.len());
        }
    }
});
