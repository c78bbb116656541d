//! Chaos: writers that retry with their tags across server crashes, and a
//! check that every line is stored exactly once with the id it was
//! acknowledged with.
//!
//! - kill -9 loop: the real `diaryd` is killed and restarted on the same
//!   port while UDP and TCP writers write.
//! - power cut: the server writes through a fault-injecting layer that
//!   keeps what was not flushed aside, as LazyFS does. On the cut, the
//!   flush in flight fails (so nothing of it is acknowledged), and the file
//!   is left as a disk would hold it: what was flushed, then either nothing
//!   or the unflushed batch torn by a hole of NUL bytes. A new server must
//!   start on it by itself.
//!
//! - editor saves: while the writers write, an operator saves older
//!   copies of the diary over it, as an editor, `sed -i` and a sync tool
//!   restoring a copy do; what the copies lack is appended back.
//!
//! Short by default (CI). Longer: DIARY_CHAOS_ROUNDS=110 cargo test --test chaos

mod common;

use common::writers::{Acked, check_exactly_once, retrying_writer};
use common::*;
use diary::event_loop::{Limits, Server};
use diary::store::disk::Disk;
use diary::store::{FsyncPolicy, Store};
use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn rounds(default: usize) -> usize {
    std::env::var("DIARY_CHAOS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default)
}

fn start_writers(addr: SocketAddr, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<Acked>> {
    ["u1", "u2", "t1", "t2"]
        .into_iter()
        .map(|who| {
            let stop = stop.clone();
            std::thread::spawn(move || retrying_writer(addr, who, who.starts_with('t'), stop))
        })
        .collect()
}

#[test]
fn kill_9_loop_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let mut daemon = Daemon::start(&file, &[]);
    let addr = daemon.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(addr, &stop);
    let kills = rounds(5);
    for round in 0..kills {
        std::thread::sleep(Duration::from_millis(60 + (round as u64 * 37) % 120));
        drop(daemon); // kill -9
        daemon = Daemon::try_start_at(&file, &addr.to_string(), &[]).expect("restarts");
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let acked: Vec<Acked> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    drop(daemon);
    let total = check_exactly_once(&file_entries(&file), &acked);
    println!("{kills} kills, {total} writes acknowledged, each stored exactly once");
    assert!(total > 0);
}

/// An operator at work on the diary while writers write: an editor that
/// reads the file, pauses, and saves its copy (with a comment edited); a
/// real `sed -i`; a sync tool that puts back the copy it took a moment
/// ago. Every acknowledged write is in the file once, under its id.
#[test]
fn editor_saves_restores_and_sed_while_writers_write_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let daemon = Daemon::start(&file, &[]);
    let mut notes = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    writeln!(notes, "# operator notes").unwrap();
    drop(notes);
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(daemon.addr, &stop);
    let save_over = |contents: &[u8]| {
        let copy = dir.path().join(".diary.log.swp");
        std::fs::write(&copy, contents).unwrap();
        std::fs::rename(&copy, &file).unwrap();
    };
    let actions = rounds(6);
    for round in 0..actions {
        let pause = Duration::from_millis(20 + (round as u64 * 29) % 60);
        match round % 3 {
            0 => {
                let copy = std::fs::read_to_string(&file).unwrap();
                std::thread::sleep(pause);
                save_over(
                    copy.replace("# operator notes", "# operator notes+")
                        .as_bytes(),
                );
            }
            1 => {
                let status = std::process::Command::new("sed")
                    .args(["-i", "s/^# operator notes.*/&!/"])
                    .arg(&file)
                    .status()
                    .expect("sed runs");
                assert!(status.success());
            }
            _ => {
                let taken = std::fs::read(&file).unwrap();
                std::thread::sleep(pause);
                save_over(&taken);
            }
        }
        std::thread::sleep(Duration::from_millis(80));
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let acked: Vec<Acked> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    drop(daemon);
    let total = check_exactly_once(&file_entries(&file), &acked);
    println!("{actions} saves over the diary, {total} writes acknowledged, each stored once");
    assert!(total > 0);
}

/// What the simulated disk has flushed, and whether the power is off.
#[derive(Default)]
struct Power {
    /// File length at the last successful flush.
    synced: u64,
    /// The next flush cuts the power instead.
    cut_at_next_sync: bool,
    off: bool,
}

/// A [`Disk`] that fails everything once the power is off. The file keeps
/// what was written (the page cache); the test then makes it what the disk
/// would hold.
struct FlakyDisk {
    file: File,
    power: Arc<Mutex<Power>>,
}

impl FlakyDisk {
    fn check(&self) -> io::Result<()> {
        if self.power.lock().unwrap().off {
            return Err(io::Error::other("the power is off"));
        }
        Ok(())
    }
}

impl Disk for FlakyDisk {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.check()?;
        self.file.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        flaky_sync(&self.file, &self.power)
    }

    fn sync_handle(&self) -> io::Result<diary::store::disk::SyncFn> {
        let (file, power) = (self.file.try_clone()?, self.power.clone());
        Ok(Box::new(move || flaky_sync(&file, &power)))
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.check()?;
        self.file.set_len(len)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check()?;
        self.file.read_exact_at(buf, offset)
    }
}

/// A flush, unless the power is off or goes off now; it records what it
/// made durable.
fn flaky_sync(file: &File, power: &Mutex<Power>) -> io::Result<()> {
    let mut power = power.lock().unwrap();
    if power.off {
        return Err(io::Error::other("the power is off"));
    }
    if power.cut_at_next_sync {
        power.off = true;
        return Err(io::Error::other("the power went off during the flush"));
    }
    // The length first: what is appended during the flush is not covered.
    let len = file.metadata()?.len();
    file.sync_data()?;
    power.synced = len;
    Ok(())
}

/// After the cut: the file as the disk holds it. Without `tear`, what was
/// not flushed is gone; with it, the unflushed batch is there with its
/// middle third lost to a hole of NUL bytes (the file had grown).
fn as_the_disk_holds_it(path: &Path, synced: u64, tear: bool) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let unsynced = &bytes[synced as usize..];
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(synced).unwrap();
    if tear && unsynced.len() >= 3 {
        let mut torn = unsynced.to_vec();
        let third = torn.len() / 3;
        torn[third..2 * third].fill(0);
        file.write_all_at(&torn, synced).unwrap();
    }
    unsynced.len()
}

#[test]
fn power_cuts_lose_no_acknowledged_write_and_the_server_restarts_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("diary.log");
    let cuts = rounds(6);
    let stop = Arc::new(AtomicBool::new(false));
    let mut addr: Option<SocketAddr> = None;
    let mut writers = None;
    let mut torn_bytes = 0;
    for cut in 0..cuts {
        let power = Arc::new(Mutex::new(Power::default()));
        let disk_power = power.clone();
        let (store, _) = Store::open_on(&path, FsyncPolicy::Always, move |file| {
            Box::new(FlakyDisk {
                file,
                power: disk_power,
            })
        })
        .expect("starts by itself on what the last cut left");
        power.lock().unwrap().synced = std::fs::metadata(&path).unwrap().len();
        let listen = addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let mut server = Server::bind(listen, store, Limits::default()).unwrap();
        addr = Some(server.local_addr());
        let handle = server.stop_handle();
        let thread = std::thread::spawn(move || server.run().unwrap());
        let writers = writers.get_or_insert_with(|| start_writers(addr.unwrap(), &stop));
        assert!(!writers.is_empty());

        std::thread::sleep(Duration::from_millis(80 + (cut as u64 * 53) % 150));
        power.lock().unwrap().cut_at_next_sync = true;
        wait_for("the power cut", Duration::from_secs(10), || {
            power.lock().unwrap().off
        });
        handle.stop();
        thread.join().unwrap();
        let synced = power.lock().unwrap().synced;
        torn_bytes += as_the_disk_holds_it(&path, synced, cut % 2 == 1);
    }
    // The last start recovers the last cut; the writers finish on it.
    let (store, recovery) = Store::open(&path, FsyncPolicy::Always).unwrap();
    println!("last recovery: {:?}", recovery.cut);
    let mut server = Server::bind(addr.unwrap(), store, Limits::default()).unwrap();
    let handle = server.stop_handle();
    let thread = std::thread::spawn(move || server.run().unwrap());
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let acked: Vec<Acked> = writers
        .unwrap()
        .into_iter()
        .map(|w| w.join().unwrap())
        .collect();
    handle.stop();
    thread.join().unwrap();
    let total = check_exactly_once(&file_entries(&path), &acked);
    println!(
        "{cuts} power cuts ({torn_bytes} unflushed bytes dropped or torn), {total} writes acknowledged, each stored exactly once"
    );
}
