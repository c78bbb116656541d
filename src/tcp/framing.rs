//! TCP bytes in and out of one connection: reading a byte stream into lines
//! (framing) and queueing output until the socket takes it.
//!
//! A request is a line ending in `\n` (`\r\n` accepted). A line is handed on
//! only once its newline has arrived, so a client that vanishes mid-line
//! stores nothing. A line longer than the limit is reported once and its
//! bytes are dropped up to the next newline, never buffered.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::ops::Range;

/// How much is read from a socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// A drained buffer bigger than this is released rather than kept for the
/// connection's next burst, so that many quiet connections stay small.
const RETAINED: usize = 64 * 1024;

/// One complete request line, or the news that a line was too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineFrame {
    /// Byte range of the line in the framer's buffer, without `\r\n`.
    Line(Range<usize>),
    /// A line over the limit was dropped (or is being dropped) up to its newline.
    TooLong,
}

/// Splits a byte stream into lines of at most `max_line` bytes.
#[derive(Debug)]
pub struct LineFramer {
    /// Allocated (and zeroed) only once the client sends something, then
    /// read into directly: `buf[..end]` holds data, the rest is room.
    buf: Vec<u8>,
    end: usize,
    /// Start of the first unconsumed byte.
    start: usize,
    /// Bytes before this (from `start`) are known to hold no newline.
    scanned: usize,
    /// Inside a too-long line: drop bytes until its newline.
    discarding: bool,
    max_line: usize,
    left_room: bool,
}

impl LineFramer {
    pub fn new(max_line: usize) -> LineFramer {
        LineFramer {
            buf: Vec::new(),
            end: 0,
            start: 0,
            scanned: 0,
            discarding: false,
            max_line,
            left_room: false,
        }
    }

    /// Reads once from `src` into the buffer. `Ok(0)` is end of stream.
    ///
    /// A connection that has never sent anything is read through a scratch
    /// buffer on the stack, so an idle connection holds no buffer at all.
    pub fn read_from(&mut self, src: &mut impl Read) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.scanned = 0;
            if self.buf.len() > RETAINED {
                self.buf = Vec::new();
            }
        } else if self.start > self.buf.len() / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned -= self.start;
            self.start = 0;
        }
        if self.buf.is_empty() {
            let mut scratch = [0u8; READ_CHUNK];
            let n = src.read(&mut scratch)?;
            if n > 0 {
                self.buf = vec![0; READ_CHUNK];
                self.buf[..n].copy_from_slice(&scratch[..n]);
                self.end = n;
            }
            self.left_room = n < READ_CHUNK;
            return Ok(n);
        }
        if self.buf.len() - self.end < READ_CHUNK / 4 {
            let grown = (self.buf.len() * 2).max(self.end + READ_CHUNK);
            self.buf.resize(grown, 0);
        }
        let n = src.read(&mut self.buf[self.end..])?;
        self.end += n;
        self.left_room = self.end < self.buf.len();
        Ok(n)
    }

    /// Whether the last read took less than it was offered (the source had
    /// no more at that moment).
    pub(crate) fn read_left_room(&self) -> bool {
        self.left_room
    }

    /// The next complete line (or too-long report), without consuming it.
    pub fn peek(&mut self) -> Option<LineFrame> {
        loop {
            let pending = &self.buf[self.scanned..self.end];
            match memchr::memchr(b'\n', pending) {
                Some(i) => {
                    let newline = self.scanned + i;
                    if self.discarding {
                        self.discarding = false;
                        self.start = newline + 1;
                        self.scanned = self.start;
                        continue;
                    }
                    let mut end = newline;
                    if end > self.start && self.buf[end - 1] == b'\r' {
                        end -= 1;
                    }
                    if end - self.start > self.max_line {
                        // Complete but too long: drop it through its newline.
                        self.scanned = newline;
                        self.discarding = true;
                        return Some(LineFrame::TooLong);
                    }
                    self.scanned = newline;
                    return Some(LineFrame::Line(self.start..end));
                }
                None => {
                    self.scanned = self.end;
                    if self.discarding {
                        self.start = self.end;
                        return None;
                    }
                    if self.end - self.start > self.max_line + 1 {
                        self.start = self.end;
                        self.scanned = self.start;
                        self.discarding = true;
                        return Some(LineFrame::TooLong);
                    }
                    return None;
                }
            }
        }
    }

    /// Consumes the frame [`LineFramer::peek`] just returned.
    pub fn consume(&mut self, frame: &LineFrame) {
        if let LineFrame::Line(_) = frame {
            // peek left `scanned` on the line's newline.
            debug_assert_eq!(self.buf[self.scanned], b'\n');
            self.start = self.scanned + 1;
            self.scanned = self.start;
        }
    }

    pub fn line(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Bytes of an unfinished line held in memory.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }
}

/// Bytes waiting to be written to a socket, some of them held back until
/// the batch they wait for is settled (an ack is sent only once its entry
/// is durable, and nothing after it in the stream overtakes it).
///
/// Positions handed out ([`OutBuf::position`]) count every byte ever
/// queued, so they stay valid while sent bytes are dropped from the front.
#[derive(Debug, Default)]
pub struct OutBuf {
    pub buf: Vec<u8>,
    sent: usize,
    /// Position of `buf[0]` in the stream.
    base: u64,
    /// (batch, position): from the position on, bytes wait for the batch.
    holds: VecDeque<(u64, u64)>,
}

impl OutBuf {
    /// Bytes queued, held ones included.
    pub fn queued(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Where byte `index` of `buf` is in the stream.
    pub(crate) fn position(&self, index: usize) -> u64 {
        self.base + index as u64
    }

    /// Where stream position `at` is in `buf`, if still queued.
    pub(crate) fn index_of(&self, at: u64) -> Option<usize> {
        let i = usize::try_from(at.checked_sub(self.base)?).ok()?;
        (i >= self.sent && i < self.buf.len()).then_some(i)
    }

    /// Holds the bytes from `buf[index]` on until `batch` is settled;
    /// whether that added a hold.
    pub fn hold(&mut self, batch: u64, index: usize) -> bool {
        let at = self.position(index);
        // Holds come in stream order; a later one for an earlier batch
        // changes nothing the earlier hold does not already keep back.
        let new = self.holds.back().is_none_or(|&(b, _)| b < batch);
        if new {
            self.holds.push_back((batch, at));
        }
        new
    }

    /// Lets go of the holds of batches up to `settled`; whether any are left.
    pub fn release(&mut self, settled: u64) -> bool {
        while self.holds.front().is_some_and(|&(b, _)| b <= settled) {
            self.holds.pop_front();
        }
        !self.holds.is_empty()
    }

    /// Bytes that may be sent now.
    pub(crate) fn sendable(&self) -> usize {
        self.limit() - self.sent
    }

    fn limit(&self) -> usize {
        match self.holds.front() {
            Some(&(_, at)) => (at - self.base) as usize,
            None => self.buf.len(),
        }
    }

    /// Writes what may be sent until done or the socket would block.
    pub fn flush_to(&mut self, dst: &mut impl Write) -> io::Result<()> {
        let limit = self.limit();
        while self.sent < limit {
            match dst.write(&self.buf[self.sent..limit]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.buf.len() {
            self.base += self.sent as u64;
            self.buf.clear();
            self.sent = 0;
            if self.buf.capacity() > RETAINED {
                self.buf = Vec::new();
            }
        } else if self.sent > 64 * 1024 && self.sent > self.buf.len() / 2 {
            self.base += self.sent as u64;
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framer: &mut LineFramer) -> Vec<Result<Vec<u8>, ()>> {
        let mut got = Vec::new();
        while let Some(frame) = framer.peek() {
            got.push(match &frame {
                LineFrame::Line(r) => Ok(framer.line(r.clone()).to_vec()),
                LineFrame::TooLong => Err(()),
            });
            framer.consume(&frame);
        }
        got
    }

    #[test]
    fn held_bytes_wait_for_their_batch_and_positions_survive_sending() {
        let mut out = OutBuf::default();
        out.buf.extend_from_slice(b"id a\n");
        let ack = out.buf.len();
        out.buf.extend_from_slice(b"ok 1 T\n");
        out.hold(7, ack);
        out.buf.extend_from_slice(b"help\n");
        let at = out.position(ack);
        let mut wire = Vec::new();
        out.flush_to(&mut wire).unwrap();
        assert_eq!(wire, b"id a\n", "the ack and what follows wait");
        assert_eq!(out.sendable(), 0);
        let i = out.index_of(at).unwrap();
        out.buf.splice(i..i + 7, b"err io x\n".iter().copied());
        assert!(out.release(6), "batch 7 is not settled by 6");
        assert!(!out.release(7));
        out.flush_to(&mut wire).unwrap();
        assert_eq!(wire, b"id a\nerr io x\nhelp\n");
        assert_eq!(out.queued(), 0);
        assert_eq!(
            out.position(0),
            wire.len() as u64,
            "positions count what was sent"
        );
        assert_eq!(out.index_of(at), None);
    }

    #[test]
    fn lines_split_across_reads() {
        let mut f = LineFramer::new(100);
        f.read_from(&mut &b"hel"[..]).unwrap();
        assert!(frames(&mut f).is_empty());
        f.read_from(&mut &b"lo\r\nwor"[..]).unwrap();
        assert_eq!(frames(&mut f), vec![Ok(b"hello".to_vec())]);
        f.read_from(&mut &b"ld\n\n"[..]).unwrap();
        assert_eq!(frames(&mut f), vec![Ok(b"world".to_vec()), Ok(vec![])]);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn too_long_lines_are_dropped_not_buffered() {
        let mut f = LineFramer::new(4);
        f.read_from(&mut &b"12345678"[..]).unwrap();
        assert_eq!(frames(&mut f), vec![Err(())]);
        f.read_from(&mut &b"9999"[..]).unwrap();
        assert!(frames(&mut f).is_empty());
        assert_eq!(f.buffered(), 0);
        f.read_from(&mut &b"99\nok\n"[..]).unwrap();
        assert_eq!(frames(&mut f), vec![Ok(b"ok".to_vec())]);
        f.read_from(&mut &b"toolong\nfine\n"[..]).unwrap();
        assert_eq!(frames(&mut f), vec![Err(()), Ok(b"fine".to_vec())]);
    }
}
