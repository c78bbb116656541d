//! Cursors over committed entry lines: oldest first ([`Lines`]), newest
//! first ([`LinesRev`]), or only the lines holding some bytes
//! ([`Lines::next_holding`], a SIMD substring search over the file's bytes,
//! as grep does). Readers pull lines from the store; the store calls
//! nothing of theirs. Each reads the file a span of about `chunk` bytes at
//! a time (at least one entry) with one `pread`.
//!
//! It may import `store` only.

use crate::store::Store;
use std::io;

/// Entries `first..end` (ids, end exclusive), oldest first. Each line is
/// handed out with its newline.
pub(crate) struct Lines<'s> {
    store: &'s Store,
    /// The next entry to hand out (or, searching, to look at).
    next: u64,
    end: u64,
    chunk: u64,
    buf: Vec<u8>,
    /// The span in `buf`: entries `lo..hi`, starting at file offset `base`.
    lo: u64,
    hi: u64,
    base: u64,
    /// Searching: where in `buf` to look on from.
    search_from: usize,
}

impl Store {
    /// A cursor over committed entries `first..end`, oldest first.
    pub(crate) fn lines(&self, first: u64, end: u64, chunk: usize) -> Lines<'_> {
        let end = end.min(self.len() + 1);
        Lines {
            store: self,
            next: first.min(end),
            end,
            chunk: chunk as u64,
            buf: Vec::new(),
            lo: first,
            hi: first,
            base: 0,
            search_from: 0,
        }
    }

    /// A cursor over committed entries `first..end`, newest first.
    pub(crate) fn lines_rev(&self, first: u64, end: u64) -> LinesRev<'_> {
        let end = end.min(self.len() + 1);
        LinesRev {
            store: self,
            first,
            next: end,
            buf: Vec::new(),
            lo: end,
            base: 0,
        }
    }
}

impl Lines<'_> {
    /// The entry the cursor would look at next: where a reader that
    /// stopped resumes.
    pub(crate) fn position(&self) -> u64 {
        self.next
    }

    /// Reads the span from `self.next` on into `buf`.
    fn load(&mut self) -> io::Result<()> {
        let (store, lo) = (self.store, self.next);
        let mut hi = lo + 1;
        while hi < self.end && store.span_len(lo, hi + 1) <= self.chunk {
            hi += 1;
        }
        self.buf.clear();
        store.read_span(lo, hi, &mut self.buf)?;
        (self.lo, self.hi, self.base) = (lo, hi, store.offset_of(lo));
        self.search_from = 0;
        Ok(())
    }

    /// The next entry and its line.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<(u64, &[u8])>> {
        if self.next >= self.end {
            return Ok(None);
        }
        if self.next >= self.hi || self.next < self.lo {
            self.load()?;
        }
        let id = self.next;
        self.next += 1;
        let line = self.store.line_in(&self.buf, self.base, id)?;
        Ok(Some((id, line)))
    }

    /// The next entry whose line holds `needle` (anywhere in the line: the
    /// reader still checks its own rule). An entry without it is never
    /// handed out, nor decoded.
    pub(crate) fn next_holding(
        &mut self,
        needle: &memchr::memmem::Finder,
    ) -> io::Result<Option<(u64, &[u8])>> {
        loop {
            if self.next >= self.end {
                return Ok(None);
            }
            if self.next >= self.hi || self.next < self.lo {
                self.load()?;
            }
            let Some(found) = needle.find(&self.buf[self.search_from..]) else {
                // Nothing more in this span.
                self.next = self.hi;
                continue;
            };
            let at = self.base + (self.search_from + found) as u64;
            // The entry whose line holds the match: matches come in file
            // order, so it only moves forward (8 bytes read per line passed).
            let starts = &self.store.index.offsets;
            let mut id = self.next;
            while id + 1 < self.hi && starts[id as usize] <= at {
                id += 1;
            }
            self.next = id + 1;
            // Further matches in the same line are not looked at.
            self.search_from = (self.store.offset_of(id + 1) - self.base) as usize;
            let line = self.store.line_in(&self.buf, self.base, id)?;
            return Ok(Some((id, line)));
        }
    }
}

/// Entries `first..end`, newest first. Each line is handed out without
/// its newline.
pub(crate) struct LinesRev<'s> {
    store: &'s Store,
    first: u64,
    /// One past the next entry to hand out.
    next: u64,
    buf: Vec<u8>,
    /// The span in `buf` begins with entry `lo`, at file offset `base`.
    lo: u64,
    base: u64,
}

impl LinesRev<'_> {
    pub(crate) fn next_line(&mut self) -> io::Result<Option<(u64, &[u8])>> {
        const CHUNK: u64 = 64 * 1024;
        if self.next <= self.first {
            return Ok(None);
        }
        if self.next <= self.lo {
            // Whole entries back from `next` until the span is full (at least one).
            let (store, hi) = (self.store, self.next);
            let mut lo = hi - 1;
            while lo > self.first && store.span_len(lo - 1, hi) <= CHUNK {
                lo -= 1;
            }
            self.buf.clear();
            store.read_span(lo, hi, &mut self.buf)?;
            (self.lo, self.base) = (lo, store.offset_of(lo));
        }
        self.next -= 1;
        let id = self.next;
        let line = self.store.line_in(&self.buf, self.base, id)?;
        Ok(Some((id, &line[..line.len() - 1])))
    }
}
