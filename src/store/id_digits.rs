//! The decimal digits of the ids the store gives out. Ids come one after
//! another, so the next one's digits are the last one's plus one: a byte
//! or two to change in place, where formatting the number anew was 7% of
//! the request path's time per write (`diary-bench pipeline`).

/// Digits of the last id asked for, right-aligned in a buffer that holds
/// any `u64`.
#[derive(Debug)]
pub(crate) struct IdDigits {
    id: u64,
    buf: [u8; 20],
    start: usize,
}

impl Default for IdDigits {
    fn default() -> IdDigits {
        IdDigits {
            id: 0,
            buf: [b'0'; 20],
            start: 19,
        }
    }
}

impl IdDigits {
    /// `id` in decimal.
    pub(crate) fn of(&mut self, id: u64) -> &str {
        if self.id.checked_add(1) != Some(id) || !self.increment() {
            let mut digits = itoa::Buffer::new();
            let digits = digits.format(id).as_bytes();
            self.start = self.buf.len() - digits.len();
            self.buf[self.start..].copy_from_slice(digits);
        }
        self.id = id;
        let digits = &self.buf[self.start..];
        debug_assert!(digits.iter().all(u8::is_ascii_digit));
        // SAFETY: `buf[start..]` holds only ASCII digits: itoa's, or those
        // `increment` wrote. (Checking them again took longer than
        // formatting the number.)
        unsafe { std::str::from_utf8_unchecked(digits) }
    }

    /// Adds one to the digits; false when they are full (then formatted).
    fn increment(&mut self) -> bool {
        for i in (self.start..self.buf.len()).rev() {
            if self.buf[i] < b'9' {
                self.buf[i] += 1;
                return true;
            }
            self.buf[i] = b'0';
        }
        if self.start == 0 {
            return false;
        }
        self.start -= 1;
        self.buf[self.start] = b'1';
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_the_ids_in_decimal_through_carries_and_jumps() {
        let mut digits = IdDigits::default();
        for id in (1..=1_200)
            .chain(9_990..10_010)
            .chain([5, 99_999, 100_000, 100_001])
        {
            assert_eq!(digits.of(id), id.to_string());
        }
        for id in [u64::MAX - 1, u64::MAX, 1, 2, 10_000_000_000_000_000_000 - 1] {
            assert_eq!(digits.of(id), id.to_string());
        }
        assert_eq!(
            digits.of(10_000_000_000_000_000_000),
            "10000000000000000000"
        );
    }
}
