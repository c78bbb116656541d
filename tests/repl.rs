//! The interactive client in a pseudo-terminal, as a person uses it:
//! typing, pasting several lines at once (plain and bracketed), coming back
//! after the server's idle timeout, and the server going away and coming
//! back while lines are typed.

mod common;

use common::*;
use expectrl::{Expect, Session};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

type Repl = expectrl::session::OsSession;

/// `diary` in a terminal of its own, with its outbox under `state`.
fn repl(server: SocketAddr, state: &Path, args: &[&str]) -> Repl {
    let mut command = diary_command(server, args);
    command.env("XDG_STATE_HOME", state).env("TERM", "xterm");
    let mut session = Session::spawn(command).expect("a pty");
    session.set_expect_timeout(Some(Duration::from_secs(15)));
    session.expect("diary> ").expect("the prompt");
    session
}

fn texts(path: &Path) -> Vec<String> {
    file_entries(path).into_iter().map(|(_, t)| t).collect()
}

#[test]
fn typed_and_pasted_lines_are_each_one_entry() {
    let server = TestServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut p = repl(server.addr, state.path(), &[]);
    p.send("typed by hand\r").unwrap();
    p.expect("stored #1").unwrap();
    // Five lines pasted in one write to the terminal.
    p.send("line one\rline two\rline three\rline four\rline five\r")
        .unwrap();
    p.expect("stored #6").unwrap();
    // A bracketed paste: still one entry a line.
    p.send("\x1b[200~粘贴一\n粘贴二\n粘贴三\x1b[201~\r")
        .unwrap();
    p.expect("stored #9").unwrap();
    p.send("h\r").unwrap();
    p.expect("Each line is one entry").unwrap();
    p.send("e\r").unwrap();
    p.expect(expectrl::Eof).unwrap();
    assert_eq!(
        texts(&server.path),
        [
            "typed by hand",
            "line one",
            "line two",
            "line three",
            "line four",
            "line five",
            "粘贴一",
            "粘贴二",
            "粘贴三"
        ]
    );
}

#[test]
fn a_line_typed_after_the_idle_timeout_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let daemon = Daemon::start(&file, &["--idle-timeout", "1"]);
    let mut p = repl(daemon.addr, dir.path(), &["--proto", "tcp"]);
    p.send("before the wait\r").unwrap();
    p.expect("stored #1").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    p.send("after the wait\r").unwrap();
    p.expect("stored #2").unwrap();
    // As a person does: Ctrl-D at the prompt (a Ctrl-D typed while the
    // terminal is between two prompts is the line discipline's, not ours).
    p.expect("diary> ").unwrap();
    p.send("\x04").unwrap();
    p.expect(expectrl::Eof).unwrap();
    assert_eq!(texts(&file), ["before the wait", "after the wait"]);
}

#[test]
fn lines_typed_while_the_server_is_down_are_queued_then_sent_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&file, &[]);
    let addr = daemon.addr;
    let mut p = repl(addr, state.path(), &[]);
    p.send("before\r").unwrap();
    p.expect("stored #1").unwrap();

    // The session's live view (a follower) is connected: it is what tells
    // the session the server went away.
    wait_for("the live view", Duration::from_secs(10), || {
        figure(&stats(addr), "followers") == 1
    });
    drop(daemon); // kill -9
    p.expect("server unreachable").unwrap();
    p.send("while down 1\r").unwrap();
    p.expect("  queued (server unreachable)").unwrap();
    p.send("while down 2\r").unwrap();
    p.expect("  queued (server unreachable)").unwrap();
    let outbox = state.path().join("diary/outbox");
    assert_eq!(std::fs::read_to_string(&outbox).unwrap().lines().count(), 2);

    let daemon = Daemon::try_start_at(&file, &addr.to_string(), &[]).unwrap();
    p.expect("(reconnected)").unwrap();
    p.expect("stored #3").unwrap();
    p.send("after\r").unwrap();
    p.expect("stored #4").unwrap();
    assert_eq!(
        texts(&file),
        ["before", "while down 1", "while down 2", "after"]
    );

    // Queued and then the session closed: the next session sends it first.
    drop(daemon);
    p.expect("server unreachable").unwrap();
    p.send("typed, then the session closed\r").unwrap();
    p.expect("  queued (server unreachable)").unwrap();
    // As a person does: Ctrl-D at the prompt (a Ctrl-D typed while the
    // terminal is between two prompts is the line discipline's, not ours).
    p.expect("diary> ").unwrap();
    p.send("\x04").unwrap();
    p.expect(expectrl::Eof).unwrap();
    let daemon = Daemon::try_start_at(&file, &addr.to_string(), &[]).unwrap();
    let mut p = repl(daemon.addr, state.path(), &[]);
    let _ = &mut p;
    assert_eq!(
        texts(&file),
        [
            "before",
            "while down 1",
            "while down 2",
            "after",
            "typed, then the session closed"
        ]
    );
    assert_eq!(std::fs::read_to_string(&outbox).unwrap(), "");
}

#[test]
fn ctrl_c_drops_the_line_exit_words_leave_and_history_is_kept() {
    let server = TestServer::start();
    let state = tempfile::tempdir().unwrap();
    let mut p = repl(server.addr, state.path(), &[]);
    p.send("half a thought").unwrap();
    p.send("\x03").unwrap();
    p.expect("line dropped").unwrap();
    p.send("a whole thought\r").unwrap();
    p.expect("stored #1").unwrap();
    p.send("exit\r").unwrap();
    p.expect("/write exit").unwrap();
    p.expect(expectrl::Eof).unwrap();
    assert_eq!(texts(&server.path), ["a whole thought"]);

    // The history survives the session, owner-only, without the dropped line.
    let history = state.path().join("diary/history");
    let mode = std::fs::metadata(&history).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let kept = std::fs::read_to_string(&history).unwrap();
    assert!(
        kept.contains("a whole thought") && !kept.contains("half"),
        "{kept}"
    );

    // The next session recalls it with the up arrow; the other words leave too.
    for word in ["quit", "q", ":q"] {
        let mut p = repl(server.addr, state.path(), &[]);
        if word == "quit" {
            p.send("\x1b[A\x1b[A").unwrap();
            p.expect("a whole thought").unwrap();
            p.send("\r").unwrap();
            p.expect("stored #2").unwrap();
        }
        p.send(format!("{word}\r")).unwrap();
        p.expect(format!("/write {word}")).unwrap();
        p.expect(expectrl::Eof).unwrap();
    }
    assert_eq!(texts(&server.path), ["a whole thought", "a whole thought"]);
}
