//! Binary COPY data: the input (after its first byte) is a COPY stream, decoded whole and
//! again pushed in pieces of (first byte + 1) bytes. Both must hand out the same rows, then
//! agree on the outcome (an error, the trailer, or waiting for more); every row yields as many
//! values as it declares.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replication::postgres::copy::CopyDecoder;
use replication::postgres::pgoutput::{DecodeError, Value};

type Rows = Vec<Vec<Option<Vec<u8>>>>;

fn decode(stream: &[u8], piece: usize) -> (Rows, Option<DecodeError>, bool) {
    let mut decoder = CopyDecoder::new();
    let mut rows = Rows::new();
    for chunk in stream.chunks(piece) {
        decoder.push(chunk);
        let result = decoder.rows(|row| {
            let values: Vec<_> = row
                .values()
                .map(|v| match v {
                    Value::Binary(b) => Some(b.to_vec()),
                    Value::Null => None,
                    other => panic!("copy value {other:?}"),
                })
                .collect();
            assert_eq!(values.len(), row.len());
            rows.push(values);
            Ok::<_, DecodeError>(())
        });
        if let Err(e) = result {
            return (rows, Some(e), decoder.finished());
        }
    }
    (rows, None, decoder.finished())
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let whole = decode(stream, stream.len().max(1));
    let pieces = decode(stream, usize::from(piece) + 1);
    assert_eq!(whole, pieces, "pieces of {}", usize::from(piece) + 1);
});
