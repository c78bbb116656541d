//! `diary` with no command: a chat-like session. Shows recent history, then
//! a prompt; every line typed is written; `p`, `h`, `e` work as in the
//! seed; Ctrl-D leaves. Line editing (CJK width included) is rustyline's.
//! A second, following TCP connection shows what other terminals write,
//! printed above the line being edited.
//!
//! One line is one entry, always: lines pasted together (bracketed or not)
//! are stored one by one, in order. A line typed while the server cannot be
//! reached goes to the outbox ([`crate::outbox`]) and is sent, with its
//! tag, as soon as the server answers again, or by the next session.

use crate::display::{self, Display};
use crate::outbox::{self, Outbox};
use diary::client::{self, Client, ClientError, FollowEvent, Reply, parse_entry};
use diary::protocol::{self, Command};
use rustyline::ExternalPrinter;
use rustyline::error::ReadlineError;
use std::collections::HashSet;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Entries shown when the session starts.
const RECENT: u32 = 20;

/// Lines that leave the session rather than being stored: what people
/// type to leave other programs.
const EXIT_WORDS: [&str; 4] = ["exit", "quit", "q", ":q"];

/// `$XDG_STATE_HOME/diary/history` (or `~/.local/state/diary/history`):
/// the lines typed, for the up arrow in the next session.
fn history_path() -> Option<std::path::PathBuf> {
    outbox::default_path().map(|outbox| outbox.with_file_name("history"))
}

/// Saves the history, owner-only: it holds what was typed, entries included.
fn save_history(editor: &mut rustyline::DefaultEditor, path: &std::path::Path) {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
    }
    // Owner-only before anything is written to it.
    let _ = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .and_then(|f| f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600)));
    if let Err(e) = editor.save_history(path) {
        eprintln!("diary: cannot save the history {}: {e}", path.display());
    }
}

const HELP: &str = "\
Type a line and press Enter to store it. Each line is one entry: lines you
paste are stored one by one, in order. While the server cannot be reached,
lines are queued and sent as soon as it answers again.
  p        all past entries, oldest first
  h        this help
  e        leave (Ctrl-D, exit, quit, q and :q too; Ctrl-C drops the line)
  /past [N] [since ID|DATE] [until ID|DATE] [tag T] [-i] [grep WORDS | regex RE]
  /write TEXT                               store a line that starts with /
  /edit                                     write one entry, paragraphs and all, in $EDITOR
  /stats                                    server figures
Entries other terminals write appear as they are stored.";

/// This session's own writes, so the live view does not show them twice.
#[derive(Default)]
struct OwnWrites {
    /// A request is on its way; an entry arriving now may be its own.
    in_flight: bool,
    ids: HashSet<u64>,
}

struct Shared {
    own: Mutex<OwnWrites>,
    settled: Condvar,
    /// The live view cannot reach the server: queue at once, do not wait.
    unreachable: AtomicBool,
    outbox: Mutex<Option<Outbox>>,
    /// How entries and times are shown, by the session and the live view.
    display: Mutex<Display>,
}

impl Shared {
    fn new(display: Display) -> Shared {
        Shared {
            own: Mutex::default(),
            settled: Condvar::new(),
            unreachable: AtomicBool::new(false),
            outbox: Mutex::new(None),
            display: Mutex::new(display),
        }
    }

    fn show(&self) -> std::sync::MutexGuard<'_, Display> {
        self.display.lock().expect("never poisoned")
    }

    /// Whether entry `id` is one this session wrote (asked once per entry).
    fn is_own(&self, id: u64) -> bool {
        let own = self.own.lock().expect("never poisoned");
        let (mut own, _) = self
            .settled
            .wait_timeout_while(own, Duration::from_secs(2), |o| o.in_flight)
            .expect("never poisoned");
        own.ids.remove(&id)
    }

    /// Sends one request with the live view told about it.
    fn request(&self, client: &mut Client, line: &str) -> Result<Reply, ClientError> {
        self.own_request(|| client.request(line))
    }

    fn own_request(
        &self,
        send: impl FnOnce() -> Result<Reply, ClientError>,
    ) -> Result<Reply, ClientError> {
        self.own.lock().expect("never poisoned").in_flight = true;
        let reply = send();
        let mut own = self.own.lock().expect("never poisoned");
        if let Ok(Reply::Stored { id, .. }) = &reply {
            own.ids.insert(*id);
        }
        own.in_flight = false;
        self.settled.notify_all();
        reply
    }

    /// Writes `text`, or queues it when the server cannot be reached (or
    /// earlier lines are still queued: order is kept).
    fn write(&self, client: &mut Client, text: &str) {
        let tag = client.new_tag();
        let mut outbox = self.outbox.lock().expect("never poisoned");
        let queue_first = self.unreachable.load(Ordering::SeqCst)
            || outbox.as_ref().is_some_and(|o| !o.is_empty());
        if !queue_first {
            match self.own_request(|| client.write_tagged(&tag, text)) {
                Err(ClientError::NoAnswer { .. } | ClientError::Io(..)) => {}
                Ok(reply) => return print_reply(reply, self),
                Err(e) => return eprintln!("diary: {e}"),
            }
        }
        let unreachable = !queue_first || self.unreachable.load(Ordering::SeqCst);
        match outbox.as_mut().map(|o| o.push(&tag, text)) {
            Some(Ok(())) if unreachable => {
                println!("  queued (server unreachable); it is sent when the server answers")
            }
            Some(Ok(())) => println!("  queued behind earlier lines, in order"),
            Some(Err(e)) => eprintln!("diary: not stored, and cannot queue it: {e}"),
            None => eprintln!("diary: not stored: the server cannot be reached (no outbox)"),
        }
        drop(outbox);
        if queue_first && !self.unreachable.load(Ordering::SeqCst) {
            self.deliver(client, &mut |line| println!("{line}"));
        }
    }

    /// Sends what the outbox holds, printing each answer.
    fn deliver(&self, client: &mut Client, print: &mut dyn FnMut(String)) {
        let mut guard = self.outbox.lock().expect("never poisoned");
        let Some(outbox) = guard.as_mut().filter(|o| !o.is_empty()) else {
            return;
        };
        print(format!("  sending {} queued entries", outbox.len()));
        let result = outbox.deliver(client, |queued, reply| {
            if let Reply::Stored { id, .. } = reply {
                self.own.lock().expect("never poisoned").ids.insert(*id);
            }
            print(format!(
                "  {}: {}",
                queued.text,
                describe(reply, &mut self.show())
            ));
        });
        if let Err(e) = result {
            print(format!("  ({e}; {} still queued)", outbox.len()));
        }
    }
}

/// One reply, in a few words.
fn describe(reply: &Reply, display: &mut Display) -> String {
    match reply {
        Reply::Stored { id, time } => format!("stored #{id} at {}", display.time(time)),
        Reply::Refused { code, message } => format!(
            "not stored ({}): {}",
            display::printable(code),
            display::printable(message)
        ),
        other => format!("{other:?}"),
    }
}

/// Runs the session until `e`, Ctrl-D or Ctrl-C.
pub fn run(client: &mut Client, display: Display) -> Result<(), Box<dyn std::error::Error>> {
    let shared = Arc::new(Shared::new(display));
    let (recent, newest) = show_past(client, &format!("/past {RECENT}"), &shared)?;
    if recent == RECENT as usize {
        println!("(the last {RECENT} entries; p shows them all)");
    }
    let how = if client.is_encrypted() {
        " (encrypted)"
    } else {
        ""
    };
    println!(
        "Writing to {}{how}. h for help, e to leave.",
        client.server()
    );
    let mut editor = rustyline::DefaultEditor::new()?;
    let server = client.options().server.clone();
    match outbox::default_path().map(|path| Outbox::open(path, &server)) {
        Some(Ok(outbox)) => *shared.outbox.lock().expect("never poisoned") = Some(outbox),
        Some(Err(e)) => eprintln!("diary: cannot read the outbox: {e}; lines are not queued"),
        None => eprintln!("diary: no HOME or XDG_STATE_HOME: lines are not queued"),
    }
    // What an earlier session could not send goes first.
    shared.deliver(client, &mut |line| println!("{line}"));
    let printer: Box<dyn FnMut(String) + Send> = match editor.create_external_printer() {
        Ok(mut p) if std::io::stdin().is_terminal() => Box::new(move |line| {
            let _ = p.print(format!("{line}\n"));
        }),
        _ => Box::new(|line| println!("{line}")),
    };
    start_live_view(client, newest, shared.clone(), printer);
    let history = history_path();
    if let Some(path) = &history {
        // None yet is fine; one that cannot be read is said once.
        if let Err(e) = editor.load_history(path)
            && path.exists()
        {
            eprintln!("diary: cannot read the history {}: {e}", path.display());
        }
    }
    let mut told_ctrl_c = false;
    loop {
        let line = match editor.readline("diary> ") {
            Ok(line) => line,
            Err(ReadlineError::Eof) => break,
            // Ctrl-C drops the line being typed, as in a shell.
            Err(ReadlineError::Interrupted) => {
                if !std::mem::replace(&mut told_ctrl_c, true) {
                    println!("(line dropped; Ctrl-D or e leaves)");
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if line.trim().is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line.as_str());
        if let Some(path) = &history {
            save_history(&mut editor, path);
        }
        if EXIT_WORDS.contains(&line.trim()) {
            println!(
                "(left; to store the word itself, type /write {})",
                line.trim()
            );
            let _ = shared.request(client, "e");
            return Ok(());
        }
        // A bracketed paste arrives as one buffer: still one entry a line.
        for line in line.split('\n').filter(|l| !l.trim().is_empty()) {
            if !answer(client, &shared, line) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Answers one line of the session; false to leave.
fn answer(client: &mut Client, shared: &Shared, line: &str) -> bool {
    let result = match line {
        "e" | "/quit" => {
            let _ = shared.request(client, "e");
            return false;
        }
        "h" => {
            println!("{HELP}");
            Ok(())
        }
        "p" => show_past(client, "/past", shared).map(|_| ()),
        "/edit" => {
            // A paragraph: the whole buffer is one entry.
            match crate::editor::edit("") {
                Ok(Some(text))
                    if text.contains('\n') && client.options().proto == client::Proto::Tcp =>
                {
                    println!(
                        "  (not stored: several lines need --proto udp; a TCP request is one line)"
                    )
                }
                Ok(Some(text)) => shared.write(client, &text),
                Ok(None) => println!("  (nothing written)"),
                Err(e) => eprintln!("diary: {}", display::printable(&e.to_string())),
            }
            Ok(())
        }
        line => match protocol::parse(line.as_bytes(), usize::MAX).command {
            Ok(Command::Write(text)) => {
                shared.write(client, text);
                Ok(())
            }
            _ => shared
                .request(client, line)
                .map(|reply| print_reply(reply, shared)),
        },
    };
    if let Err(e) = result {
        eprintln!("diary: {e}");
    }
    true
}

/// Starts the live view: entries after `after` written by others, as they come.
fn start_live_view(
    client: &Client,
    after: u64,
    shared: Arc<Shared>,
    printer: Box<dyn FnMut(String) + Send>,
) {
    let options = client.options().clone();
    std::thread::spawn(move || {
        // Its own client, to send the outbox when the server is back.
        let mut sender = Client::new(options.clone()).ok();
        // Both callbacks print; they never run at the same time.
        let printer = std::cell::RefCell::new(printer);
        let print = |line: String| (printer.borrow_mut())(line);
        loop {
            let result = client::follow(
                &options,
                Some(diary::client::dates::Point::AfterId(after)),
                |entry| {
                    if !shared.is_own(entry.id) {
                        let shown = shared.show().entry(entry);
                        print(shown);
                    }
                    true
                },
                |event| match event {
                    FollowEvent::Reconnecting(why) => {
                        // Said once, not at every try.
                        if !shared.unreachable.swap(true, Ordering::SeqCst) {
                            print(format!(
                                "(server unreachable: {why}; lines you type are queued)"
                            ));
                        }
                    }
                    FollowEvent::Following(_) => {
                        if shared.unreachable.swap(false, Ordering::SeqCst) {
                            print("(reconnected)".to_string());
                            if let Some(sender) = sender.as_mut() {
                                shared.deliver(sender, &mut |line| print(line));
                            }
                        }
                    }
                    FollowEvent::Resuming(_) => {}
                },
            );
            match result {
                Ok(()) => return,
                // The live view has not reached the server yet (it went
                // away, or only UDP gets through): the session goes on, and
                // so do the tries. Only a live view that was connected says
                // the server is unreachable; writes find out for themselves.
                Err(ClientError::Io(..) | ClientError::NoAnswer { .. }) => {
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => {
                    return print(format!("(no live view of other terminals: {e})"));
                }
            }
        }
    });
}

/// Prints the entries a `/past` request returns; returns how many, and the
/// newest id shown (0 if none).
fn show_past(
    client: &mut Client,
    request: &str,
    shared: &Shared,
) -> Result<(usize, u64), ClientError> {
    match client.request(request)? {
        Reply::Lines(lines) => {
            let (mut shown, mut newest) = (0, 0);
            let mut display = shared.show();
            display.fit_ids(display::newest_id(lines.iter()).unwrap_or(0));
            for line in &lines {
                match parse_entry(line) {
                    Some(entry) => {
                        println!("{}", display.entry(&entry));
                        shown += 1;
                        newest = entry.id;
                    }
                    None => println!("{line}"),
                }
            }
            if lines.is_empty() {
                println!("(no entries yet)");
            }
            Ok((shown, newest))
        }
        other => {
            print_reply(other, shared);
            Ok((0, 0))
        }
    }
}

fn print_reply(reply: Reply, shared: &Shared) {
    let mut display = shared.show();
    match reply {
        Reply::Stored { id, time } => {
            println!("  stored #{id} at {}", display.time(&time))
        }
        Reply::Lines(lines) => {
            display.fit_ids(display::newest_id(lines.iter()).unwrap_or(0));
            for line in lines {
                match parse_entry(&line) {
                    Some(entry) => println!("{}", display.entry(&entry)),
                    None => println!("{line}"),
                }
            }
        }
        Reply::Bye => println!("bye"),
        Reply::Cookie(cookie) => println!("cookie {cookie}"),
        Reply::Refused { code, message } => println!("  not stored ({code}): {message}"),
    }
}
