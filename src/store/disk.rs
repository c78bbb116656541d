//! The store's handle on its file: append, flush, cut back, read. A trait,
//! so that a test can put a fault-injecting layer between the store and
//! the disk that simulates a power cut (it keeps what was not flushed aside
//! and drops or tears it on command, as LazyFS does). The real one is a
//! plain [`File`] opened for appending.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

/// A flush of the file that another thread can run (the syncer's).
pub type SyncFn = Box<dyn FnMut() -> io::Result<()> + Send>;

pub trait Disk: Send {
    /// Appends all of `bytes` at the end of the file.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// `fdatasync`: what was appended is on the disk once this returns.
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Fills `buf` from `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Whether what is appended lands in the file at the diary's path, so
    /// that the store can check the path still names what it wrote. Only a
    /// sink that keeps nothing (a benchmark's) says no.
    fn is_the_file(&self) -> bool {
        true
    }
    /// `fdatasync` of the same file, to run on another thread while this
    /// one goes on appending.
    fn sync_handle(&self) -> io::Result<SyncFn>;
}

impl Disk for File {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }

    fn sync_handle(&self) -> io::Result<SyncFn> {
        let file = self.try_clone()?;
        Ok(Box::new(move || file.sync_data()))
    }
}
