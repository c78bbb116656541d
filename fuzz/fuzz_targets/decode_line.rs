//! Fuzzes the store's line decoder: it may refuse a line but never panic,
//! and a line it accepts encodes back to exactly the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = diary::wire::entry::decode_line(data) {
        let mut again = Vec::new();
        let id = line.id.to_string();
        diary::wire::entry::encode_line_digits(&id, line.timestamp, &line.text(), line.attrs, &mut again);
        assert_eq!(&again[..again.len() - 1], data);
    }
});
