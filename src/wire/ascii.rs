//! Byte-class scans for the hot path: 16-byte blocks the compiler
//! vectorizes, then eight bytes at a time (SWAR: plain `u64` arithmetic),
//! so no SIMD target feature and no `unsafe`.
//!
//! Every entry's text is checked for control bytes when it arrives and for
//! bytes to escape when it is stored; a byte-at-a-time loop over a 64-byte
//! line was a visible share of the server's time per write. The startup
//! scan asks one more question of whole blocks of the file.
//!
//! Each test is exact in the only sense used: whether *any* byte matches.
//! Borrows and carries between lanes start only at a lane that matches, so
//! they can add false lanes above a true one but never make one up.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// High bits of the lanes of `word` below `n` (`n` ≤ 0x80), in the "any" sense.
const fn below(word: u64, n: u8) -> u64 {
    word.wrapping_sub(ONES * n as u64) & !word & HIGHS
}

/// High bits of the lanes of `word` equal to `byte`, in the "any" sense.
const fn equal(word: u64, byte: u8) -> u64 {
    below(word ^ (ONES * byte as u64), 1)
}

/// Whether `test` flags any word of `bytes`, or `byte` any byte of it.
/// Whole 16-byte blocks are tested a byte at a time in a loop the compiler
/// turns into vector compares (a quarter faster than words on a 64-byte
/// line); the rest as words. A ragged tail is tested as the last eight
/// bytes (overlap is harmless when asking "any"); a slice shorter than a
/// word is padded with `filler`, which `test` must not flag.
#[inline(always)]
fn any_word(
    bytes: &[u8],
    filler: u8,
    test: impl Fn(u64) -> u64,
    byte: impl Fn(u8) -> bool,
) -> bool {
    let word = |chunk: &[u8]| u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
    if bytes.len() < 8 {
        let mut padded = [filler; 8];
        for (lane, &b) in padded.iter_mut().zip(bytes) {
            *lane = b;
        }
        return test(u64::from_le_bytes(padded)) != 0;
    }
    let mut blocks = bytes.chunks_exact(16);
    for block in &mut blocks {
        // No early exit inside a block, so that it vectorizes.
        if block.iter().fold(false, |any, &b| any | byte(b)) {
            return true;
        }
    }
    let rest = blocks.remainder();
    if rest.is_empty() {
        return false;
    }
    let mut flagged = test(word(&bytes[bytes.len() - 8..]));
    for chunk in rest.chunks_exact(8) {
        flagged |= test(word(chunk));
    }
    flagged != 0
}

/// Whether `bytes` may hold a control byte (below 0x20, or DEL 0x7f).
/// Tab counts: callers that allow it look closer when this says yes.
pub fn has_control(bytes: &[u8]) -> bool {
    any_word(
        bytes,
        b' ',
        |w| below(w, 0x20) | equal(w, 0x7f),
        |b| b < 0x20 || b == 0x7f,
    )
}

/// Whether `bytes` holds a byte the diary file escapes: a control byte
/// below 0x20 (tab, newline, carriage return among them) or a backslash.
pub(crate) fn needs_escape(bytes: &[u8]) -> bool {
    any_word(
        bytes,
        b' ',
        |w| below(w, 0x20) | equal(w, b'\\'),
        |b| b < 0x20 || b == b'\\',
    )
}

/// Whether `block` holds a byte that makes a stored line need a closer
/// look than finding its tabs: a control byte other than tab and newline,
/// or a backslash (an escape to check). For the startup scan's blocks of
/// many lines: a whole 4 KiB at a time in a fold the compiler vectorizes,
/// stopping at the first piece that has one.
pub(crate) fn has_special(block: &[u8]) -> bool {
    block.chunks(4096).any(|chunk| {
        chunk.iter().fold(0u8, |seen, &b| {
            seen | u8::from((b < 0x20 && b != b'\t' && b != b'\n') || b == b'\\')
        }) != 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte value at every position of every length up to 40 (short
    /// words, whole blocks, blocks and a ragged tail), in a field of bytes
    /// that match nothing, against the plain definition.
    #[test]
    fn agrees_with_a_byte_loop() {
        for len in 1..=40 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    let control = byte < 0x20 || byte == 0x7f;
                    let escape = byte < 0x20 || byte == b'\\';
                    let special = (byte < 0x20 && byte != b'\t' && byte != b'\n') || byte == b'\\';
                    assert_eq!(has_control(&bytes), control, "{byte:#x} at {at} of {len}");
                    assert_eq!(needs_escape(&bytes), escape, "{byte:#x} at {at} of {len}");
                    assert_eq!(has_special(&bytes), special, "{byte:#x} at {at} of {len}");
                }
            }
        }
    }

    /// Lanes that carry or borrow (0xff, 0x00, high bytes) next to clean
    /// ones must not hide a match or invent one.
    #[test]
    fn neighbours_do_not_interfere() {
        let clean = "中文 ok ~ é".as_bytes();
        assert!(!has_control(clean));
        assert!(!needs_escape(clean));
        for byte in [0x00u8, 0x1f, 0x7f, b'\\', 0x80, 0xff] {
            for at in 0..16 {
                let mut bytes = [0xffu8; 16];
                bytes[at] = byte;
                let want_control = byte < 0x20 || byte == 0x7f;
                let want_escape = byte < 0x20 || byte == b'\\';
                assert_eq!(has_control(&bytes), want_control, "{byte:#x} at {at}");
                assert_eq!(needs_escape(&bytes), want_escape, "{byte:#x} at {at}");
            }
        }
        assert!(!has_control(&[]));
        assert!(!needs_escape(&[]));
    }
}
