//! MySQL binary JSON values (a JSON column's bytes in a row image) rendered as JSON text. The
//! text, when there is one, must be JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replication::mysql::json;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = json::text(data) {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
            panic!("{text:?} is not JSON: {e}");
        }
    }
});
