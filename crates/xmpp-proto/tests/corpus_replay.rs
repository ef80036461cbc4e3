//! Replays every file in `tests/corpus/` (seed inputs and fuzz findings)
//! through the parser, whole and in several chunkings: it must never panic
//! and must always make progress.

use std::path::Path;

use switchboard_xmpp_proto::{Frame, Limits, StreamParser};

fn run(data: &[u8], chunk: usize, limits: Limits) {
    let mut p = StreamParser::new(limits);
    for c in data.chunks(chunk.max(1)) {
        p.feed(c);
        // next() must terminate: each Ok(Some) consumes input.
        for _ in 0..=data.len() + 2 {
            match p.next() {
                Ok(Some(Frame::Stanza(e))) => {
                    let _ = e.to_xml();
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}

#[test]
fn corpus_replays_without_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let small = Limits {
            max_stanza_bytes: 256,
            max_depth: 4,
            max_attributes: 4,
            max_token_bytes: 64,
        };
        for limits in [Limits::default(), small] {
            for chunk in [data.len(), 1, 2, 7, 61] {
                run(&data, chunk, limits);
            }
        }
        n += 1;
    }
    assert!(n >= 5, "corpus in {} has only {n} files", dir.display());
}
