//! `diary` with no command: a chat-like session. Shows recent history, then
//! a prompt; every line typed is written; `p`, `h`, `e` work as in the
//! seed; Ctrl-D leaves. Line editing (CJK width included) is rustyline's.

use crate::client::{Client, ClientError, Reply, format_entry, parse_entry};
use rustyline::error::ReadlineError;

/// Entries shown when the session starts.
const RECENT: u32 = 20;

const HELP: &str = "\
Type a line and press Enter to store it.
  p        all past entries, oldest first
  h        this help
  e        leave (Ctrl-D too)
  /past [N] [since ID|DATE] [grep WORDS]    a slice of the past
  /write TEXT                               store a line that starts with /
  /stats                                    server figures";

/// Runs the session until `e`, Ctrl-D or Ctrl-C.
pub fn run(client: &mut Client) -> Result<(), Box<dyn std::error::Error>> {
    let recent = show_past(client, &format!("/past {RECENT}"))?;
    if recent == RECENT as usize {
        println!("(the last {RECENT} entries; p shows them all)");
    }
    println!("Writing to {}. h for help, e to leave.", client.server());
    let mut editor = rustyline::DefaultEditor::new()?;
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
                let _ = client.request("e");
                break;
            }
            "h" => {
                println!("{HELP}");
                Ok(())
            }
            "p" => show_past(client, "/past").map(|_| ()),
            command if command.starts_with('/') && !command.starts_with("/write ") => {
                client.request(command).map(print_reply)
            }
            text => client.request(text).map(print_reply),
        };
        if let Err(e) = result {
            eprintln!("diary: {e}");
        }
    }
    Ok(())
}

/// Prints the entries a `/past` request returns; returns how many.
fn show_past(client: &mut Client, request: &str) -> Result<usize, ClientError> {
    match client.request(request)? {
        Reply::Lines(lines) => {
            let mut shown = 0;
            for line in &lines {
                match parse_entry(line) {
                    Some(entry) => {
                        println!("{}", format_entry(&entry));
                        shown += 1;
                    }
                    None => println!("{line}"),
                }
            }
            if lines.is_empty() {
                println!("(no entries yet)");
            }
            Ok(shown)
        }
        other => {
            print_reply(other);
            Ok(0)
        }
    }
}

fn print_reply(reply: Reply) {
    match reply {
        Reply::Stored { id, time } => {
            println!("  stored #{id} at {}", crate::client::short_time(&time))
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
        Reply::Refused { code, message } => println!("  not stored ({code}): {message}"),
    }
}
