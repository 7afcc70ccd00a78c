//! pgoutput messages: each input is one whole message (an XLogData payload), decoded outside
//! and inside a Stream Start/Stop block (where data messages carry an xid). Decoding must end
//! in a message or an error; a decoded tuple yields exactly as many values as it declares.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replication::postgres::pgoutput::{Decoder, Message, OldTuple, Tuple};

fn check(tuple: &Tuple<'_>) {
    assert_eq!(
        tuple.values().count(),
        tuple.len(),
        "a validated tuple lost values"
    );
}

fn walk(message: &Message<'_>) {
    match message {
        Message::Insert { new, .. } => check(new),
        Message::Update { old, new, .. } => {
            if let Some(OldTuple::Key(t) | OldTuple::Full(t)) = old {
                check(t);
            }
            check(new);
        }
        Message::Delete {
            old: OldTuple::Key(t) | OldTuple::Full(t),
            ..
        } => check(t),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Decoder::new().decode(data) {
        walk(&message);
    }
    let mut streaming = Decoder::new();
    streaming
        .decode(&[b'S', 0, 0, 0, 7, 1])
        .expect("stream start");
    if let Ok(message) = streaming.decode(data) {
        walk(&message);
    }
});
