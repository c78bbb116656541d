//! `diary` with no command: a chat-like session. Shows recent history, then
//! a prompt; every line typed is written; `p`, `h`, `e` work as in the
//! seed; Ctrl-D leaves. Line editing (CJK width included) is rustyline's.
//! A second, following TCP connection shows what other terminals write,
//! printed above the line being edited.

use crate::client::{self, Client, ClientError, FollowEvent, Reply, format_entry, parse_entry};
use rustyline::ExternalPrinter;
use rustyline::error::ReadlineError;
use std::collections::HashSet;
use std::io::IsTerminal;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Entries shown when the session starts.
const RECENT: u32 = 20;

const HELP: &str = "\
Type a line and press Enter to store it.
  p        all past entries, oldest first
  h        this help
  e        leave (Ctrl-D too)
  /past [N] [since ID|DATE] [grep WORDS]    a slice of the past
  /write TEXT                               store a line that starts with /
  /stats                                    server figures
Entries other terminals write appear as they are stored.";

/// This session's own writes, so the live view does not show them twice.
#[derive(Default)]
struct OwnWrites {
    /// A request is on its way; an entry arriving now may be its own.
    in_flight: bool,
    ids: HashSet<u64>,
}

#[derive(Default)]
struct Shared {
    own: Mutex<OwnWrites>,
    settled: Condvar,
}

impl Shared {
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
        self.own.lock().expect("never poisoned").in_flight = true;
        let reply = client.request(line);
        let mut own = self.own.lock().expect("never poisoned");
        if let Ok(Reply::Stored { id, .. }) = &reply {
            own.ids.insert(*id);
        }
        own.in_flight = false;
        self.settled.notify_all();
        reply
    }
}

/// Runs the session until `e`, Ctrl-D or Ctrl-C.
pub fn run(client: &mut Client) -> Result<(), Box<dyn std::error::Error>> {
    let (recent, newest) = show_past(client, &format!("/past {RECENT}"))?;
    if recent == RECENT as usize {
        println!("(the last {RECENT} entries; p shows them all)");
    }
    println!("Writing to {}. h for help, e to leave.", client.server());
    let mut editor = rustyline::DefaultEditor::new()?;
    let shared = Arc::new(Shared::default());
    let printer: Box<dyn FnMut(String) + Send> = match editor.create_external_printer() {
        Ok(mut p) if std::io::stdin().is_terminal() => Box::new(move |line| {
            let _ = p.print(format!("{line}\n"));
        }),
        _ => Box::new(|line| println!("{line}")),
    };
    start_live_view(client, newest, shared.clone(), printer);
    loop {
        let line = match editor.readline("diary> ") {
            Ok(line) => line,
            Err(ReadlineError::Eof | ReadlineError::Interrupted) => break,
            Err(e) => return Err(e.into()),
        };
        if line.trim().is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line.as_str());
        let result = match line.as_str() {
            "e" | "/quit" => {
                let _ = shared.request(client, "e");
                break;
            }
            "h" => {
                println!("{HELP}");
                Ok(())
            }
            "p" => show_past(client, "/past").map(|_| ()),
            line => shared.request(client, line).map(print_reply),
        };
        if let Err(e) = result {
            eprintln!("diary: {e}");
        }
    }
    Ok(())
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
        // Both callbacks print; they never run at the same time.
        let printer = std::cell::RefCell::new(printer);
        let print = |line: String| (printer.borrow_mut())(line);
        let result = client::follow(
            &options,
            Some(after),
            |entry| {
                if !shared.is_own(entry.id) {
                    print(format_entry(entry));
                }
                true
            },
            |event| {
                if let FollowEvent::Reconnecting(why) = event {
                    print(format!("(live view: {why}; reconnecting)"));
                }
            },
        );
        if let Err(e) = result {
            print(format!("(no live view of other terminals: {e})"));
        }
    });
}

/// Prints the entries a `/past` request returns; returns how many, and the
/// newest id shown (0 if none).
fn show_past(client: &mut Client, request: &str) -> Result<(usize, u64), ClientError> {
    match client.request(request)? {
        Reply::Lines(lines) => {
            let (mut shown, mut newest) = (0, 0);
            for line in &lines {
                match parse_entry(line) {
                    Some(entry) => {
                        println!("{}", format_entry(&entry));
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
            print_reply(other);
            Ok((0, 0))
        }
    }
}

fn print_reply(reply: Reply) {
    match reply {
        Reply::Stored { id, time } => {
            println!("  stored #{id} at {}", client::short_time(&time))
        }
        Reply::Lines(lines) => {
            for line in lines {
                match parse_entry(&line) {
                    Some(entry) => println!("{}", format_entry(&entry)),
                    None => println!("{line}"),
                }
            }
        }
        Reply::Bye => println!("bye"),
        Reply::Cookie(cookie) => println!("cookie {cookie}"),
        Reply::Refused { code, message } => println!("  not stored ({code}): {message}"),
    }
}
