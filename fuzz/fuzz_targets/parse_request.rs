//! Fuzzes the request path: TCP line framing, then the request parser.
//! Neither may panic, and whatever the parser accepts as an entry must be
//! text the store can hold.
#![no_main]

use diary::protocol::{self, Command};
use diary::tcp::framing::{LineFrame, LineFramer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_request(data);
    let mut framer = LineFramer::new(256);
    // Feed the input in uneven pieces, as a socket would.
    for chunk in data.chunks(7) {
        framer.read_from(&mut &chunk[..]).unwrap();
        while let Some(frame) = framer.peek() {
            if let LineFrame::Line(range) = &frame {
                let line = framer.line(range.clone()).to_vec();
                assert!(line.len() <= 256 && !line.contains(&b'\n'));
                check_request(&line);
            }
            framer.consume(&frame);
        }
        assert!(framer.buffered() <= 256 + 1 + 7);
    }
});

fn check_request(raw: &[u8]) {
    let request = protocol::parse(raw, 100);
    if let Ok(Command::Write(text)) = request.command {
        assert!(!text.is_empty() && text.len() <= 100);
        assert!(!text.bytes().any(|b| b == 0 || b == b'\r'));
        let mut line = Vec::new();
        diary::wire::entry::encode_line(1, "2026-11-25T06:00:00.000+00:00", text, &mut line);
        let decoded = diary::wire::entry::decode_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(decoded.text(), text);
    }
}
