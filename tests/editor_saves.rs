//! An editor's save, a sync tool's restore or `sed -i` replaces the diary
//! file with a copy made from it a moment ago. Whatever the copy lacks that
//! diaryd acknowledged since is appended back to it, with the same ids,
//! times and text; hand edits in the copy are kept; ids are never given out
//! twice, and a retry is never told its entry is one it is not.

mod common;

use common::writers::{check_exactly_once, retrying_writer};
use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// One tagged request over TCP (`tcp`) or UDP; the reply's ack line.
fn tagged(addr: SocketAddr, tcp: bool, tag: &str, text: &str) -> String {
    let request = format!("/id {tag} {text}");
    let reply = if tcp {
        let mut c = Tcp::connect(addr);
        c.send(&request);
        let echo = c.line();
        format!("{echo}{}", c.line())
    } else {
        String::from_utf8(udp_raw(addr, request.as_bytes())).unwrap()
    };
    let mut lines = reply.lines();
    assert_eq!(lines.next(), Some(format!("id {tag}").as_str()), "{reply}");
    lines.next().unwrap().to_string()
}

/// What an editor does on save: writes its copy beside, renames it over.
fn save_over(file: &Path, contents: &[u8]) {
    let copy = file.with_extension("swp");
    std::fs::write(&copy, contents).unwrap();
    std::fs::rename(&copy, file).unwrap();
}

fn texts(file: &Path) -> Vec<(u64, String)> {
    file_entries(file)
}

/// The sequence, as typed with `nc`: three entries, an editor
/// reads the file, two more are acknowledged, the editor saves its older
/// copy. Both are appended back under their ids, the next write gets id 6,
/// and a retry of #4 is told #4 with its own time.
fn an_older_copy_gets_the_acknowledged_entries_back(tcp: bool) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let daemon = Daemon::start(&file, &[]);
    let addr = daemon.addr;
    for i in 1..=3 {
        let ack = tagged(addr, tcp, &format!("before-{i}"), &format!("entry {i}"));
        assert!(ack.starts_with(&format!("ok {i} ")), "{ack}");
    }
    let read_by_the_editor = std::fs::read(&file).unwrap();
    let fourth = tagged(addr, tcp, "between-1", "acked after the read");
    let fifth = tagged(addr, tcp, "between-2", "acked after the read too");
    assert!(fourth.starts_with("ok 4 ") && fifth.starts_with("ok 5 "));
    save_over(&file, &read_by_the_editor);
    std::thread::sleep(Duration::from_millis(1500));
    let after = tagged(addr, tcp, "after-1", "written after the save");
    assert!(after.starts_with("ok 6 "), "{after}");
    assert_eq!(
        tagged(addr, tcp, "between-1", "acked after the read"),
        fourth,
        "the retry is told its own entry"
    );
    let expected: Vec<(u64, String)> = [
        "entry 1",
        "entry 2",
        "entry 3",
        "acked after the read",
        "acked after the read too",
        "written after the save",
    ]
    .iter()
    .enumerate()
    .map(|(i, t)| (i as u64 + 1, t.to_string()))
    .collect();
    assert_eq!(texts(&file), expected);
    // The restored lines are the very lines acknowledged: times and tags too.
    let stored = std::fs::read_to_string(&file).unwrap();
    let fourth_time = fourth.split(' ').nth(2).unwrap();
    assert!(
        stored.contains(&format!(
            "4\t{fourth_time}\tacked after the read\treq=between-1"
        )),
        "{stored}"
    );
    let log = daemon.terminate();
    assert!(
        log.contains("without entries 4 to 5 that diaryd had acknowledged")
            && log.contains("appended back"),
        "{log}"
    );
}

#[test]
fn an_older_copy_saved_over_the_diary_gets_its_entries_back_over_tcp() {
    an_older_copy_gets_the_acknowledged_entries_back(true);
}

#[test]
fn an_older_copy_saved_over_the_diary_gets_its_entries_back_over_udp() {
    an_older_copy_gets_the_acknowledged_entries_back(false);
}

/// A sync tool puts back yesterday's copy (which also holds a hand edit
/// made yesterday) while a client keeps writing: nothing acknowledged is
/// lost, the edit stays, and writes go on at the next id.
#[test]
fn a_sync_tool_restoring_an_older_copy_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let daemon = Daemon::start(&file, &[]);
    let mut c = Tcp::connect(daemon.addr);
    for i in 1..=5 {
        assert_eq!(c.write(&format!("day one {i}")), i);
    }
    let yesterday = std::fs::read_to_string(&file)
        .unwrap()
        .replace("day one 2", "day one 2, edited by hand");
    for i in 6..=10 {
        assert_eq!(c.write(&format!("day two {i}")), i);
    }
    save_over(&file, yesterday.as_bytes());
    // The next write may find the file changed under it: sent again, stored.
    let mut eleventh = None;
    for _ in 0..3 {
        c.send("/id day-two-11 day two 11");
        assert_eq!(c.line().trim_end(), "id day-two-11");
        let reply = c.line();
        if reply.starts_with("ok ") {
            eleventh = Some(reply);
            break;
        }
        assert!(reply.starts_with("err io "), "{reply}");
    }
    assert!(eleventh.unwrap().starts_with("ok 11 "));
    let entries = texts(&file);
    assert_eq!(entries.len(), 11);
    assert_eq!(entries[1].1, "day one 2, edited by hand");
    for (i, (id, text)) in entries.iter().enumerate() {
        assert_eq!(*id, i as u64 + 1);
        if i >= 5 {
            assert_eq!(text, &format!("day two {}", i + 1));
        }
    }
}

/// A hand edit of an old entry saved while a writer writes: the edit is
/// kept, and every acknowledged write is in the file once, with its id.
#[test]
fn a_hand_edit_of_an_old_entry_is_kept_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let daemon = Daemon::start(&file, &["--fsync", "never"]);
    let addr = daemon.addr;
    let mut c = Tcp::connect(addr);
    c.write("the old entry with teh typo");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || retrying_writer(addr, "w", true, stop))
    };
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        let copy = std::fs::read_to_string(&file)
            .unwrap()
            .replace("teh typo", "the typo");
        std::thread::sleep(Duration::from_millis(50));
        save_over(&file, copy.as_bytes());
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked = writer.join().unwrap();
    let entries = texts(&file);
    assert_eq!(entries[0].1, "the old entry with the typo");
    let acked = check_exactly_once(&entries[1..], &[acked]);
    assert!(acked > 10, "the writer wrote: {acked}");
}

/// `sed -i` over a large diary (it reads it all, then renames its copy
/// over) while ten writers write: every acknowledged write ends in the
/// file once, under its id, and sed's edit is kept.
#[test]
fn sed_i_over_a_large_diary_while_ten_writers_write_loses_nothing() {
    if !have_tool("sed") {
        skip("no sed on PATH");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let daemon = Daemon::start(&file, &["--fsync", "never"]);
    let addr = daemon.addr;
    let mut bulk = String::new();
    for i in 0..50_000 {
        bulk.push_str(&format!("a large diary, line {i}\n"));
    }
    bulk.insert_str(0, "the line sed edits\n");
    let mut c = Tcp::connect(addr);
    let mut sender = c.writer.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        use std::io::Write;
        sender.write_all(bulk.as_bytes()).unwrap();
    });
    for _ in 0..50_001 {
        assert!(c.line().starts_with("ok "));
    }
    sending.join().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..10)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || retrying_writer(addr, &format!("w{w}"), true, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    for round in 0..3 {
        let status = std::process::Command::new("sed")
            .arg("-i")
            .arg(format!(
                "s/^\\(1\t.*\\)the line sed edits/\\1the line sed edits {round}/"
            ))
            .arg(&file)
            .status()
            .unwrap();
        assert!(status.success());
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let entries = texts(&file);
    assert_eq!(entries[0].1, "the line sed edits 2 1 0");
    for (i, (id, _)) in entries.iter().enumerate() {
        assert_eq!(*id, i as u64 + 1, "ids are dense");
    }
    let acked = check_exactly_once(&entries[50_001..], &acked);
    assert!(acked > 50, "the writers wrote: {acked}");
}

/// A copy with a line added by hand under an id diaryd has since given to
/// another entry: both cannot keep it. Writes are refused, naming the
/// conflict; diaryd's own file is kept whole beside; put back, it is the
/// diary again.
#[test]
fn a_copy_with_lines_added_under_taken_ids_is_a_conflict_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let daemon = Daemon::start(&file, &[]);
    let mut c = Tcp::connect(daemon.addr);
    for i in 1..=3 {
        c.write(&format!("entry {i}"));
    }
    let mut copy = std::fs::read_to_string(&file).unwrap();
    copy.push_str("4\t2020-01-01T00:00:00.000+00:00\ttyped into the editor\n");
    let fourth = tagged(daemon.addr, true, "four", "acked as four");
    assert!(fourth.starts_with("ok 4 "), "{fourth}");
    save_over(&file, copy.as_bytes());
    c.send("after the save");
    let reply = c.line();
    assert!(
        reply.starts_with("err io ") && reply.contains("entries from 4 on"),
        "{reply}"
    );
    let kept: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("diary.log.conflict-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(reply.contains(&*kept[0].to_string_lossy()), "{reply}");
    assert_eq!(texts(&kept[0])[3], (4, "acked as four".to_string()));
    // The copy at the path is left as the person saved it.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), copy);
    // Still refused a second later, without a second copy kept; a retry
    // of #4 is not told "ok 4" while #4 at the path is another entry.
    std::thread::sleep(Duration::from_millis(1200));
    c.send("still refused");
    assert!(c.line().starts_with("err io "));
    let retry = tagged(daemon.addr, true, "four", "acked as four");
    assert!(
        retry.starts_with("err io this write was stored as #4"),
        "{retry}"
    );
    // Put back, it is the diary again.
    std::fs::rename(&kept[0], &file).unwrap();
    assert_eq!(c.write("five"), 5);
    assert_eq!(tagged(daemon.addr, true, "four", "acked as four"), fourth);
    let conflict_files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("conflict")
        })
        .count();
    assert_eq!(conflict_files, 0);
}

/// `sed -i` reading the diary while diaryd appends copies part of the
/// last line: its copy ends torn. The torn end is cut and kept in
/// `FILE.torn` as at start, the entries it lacks are appended back, and
/// writes go on; they are not refused until someone comes.
#[test]
fn a_copy_read_mid_append_has_its_torn_end_cut_and_the_entries_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let daemon = Daemon::start(&file, &[]);
    let mut c = Tcp::connect(daemon.addr);
    for i in 1..=4 {
        assert_eq!(c.write(&format!("entry {i}")), i);
    }
    let mut torn = std::fs::read(&file).unwrap();
    torn.truncate(torn.len() - 6);
    assert_eq!(c.write("entry 5"), 5);
    save_over(&file, &torn);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(c.write("entry 6"), 6);
    let expected: Vec<(u64, String)> = (1..=6).map(|i| (i, format!("entry {i}"))).collect();
    assert_eq!(texts(&file), expected);
    let kept = std::fs::read_to_string(dir.path().join("diary.log.torn")).unwrap();
    assert!(kept.starts_with("4\t"), "{kept:?}");
}
