//! The manual pages and shell completions are made from the same clap
//! definitions as `--help`: every command has its page, every flag that
//! `--help` shows is on a page, and each completion script names every
//! command.

mod common;

use std::path::Path;
use std::process::Command;

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The commands `diary --help` lists.
fn commands() -> Vec<String> {
    let help = run(env!("CARGO_BIN_EXE_diary"), &["--help"]);
    help.split("Commands:")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Every `--flag` in a help text.
fn flags(help: &str) -> Vec<String> {
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.split(['=', '<']).next().unwrap().to_string())
        .collect()
}

/// A roff page as text: `\-` is a dash, fonts are dropped.
fn page(dir: &Path, name: &str) -> String {
    let roff = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    roff.replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fR", "")
        .replace("\\fI", "")
}

#[test]
fn every_command_and_flag_is_in_the_manual_pages() {
    let dir = tempfile::tempdir().unwrap();
    run(
        env!("CARGO_BIN_EXE_diary"),
        &["generate-man", dir.path().to_str().unwrap()],
    );
    run(
        env!("CARGO_BIN_EXE_diaryd"),
        &["--generate-man", dir.path().to_str().unwrap()],
    );
    let commands = commands();
    assert!(commands.len() >= 13, "{commands:?}");
    let main = page(dir.path(), "diary.1");
    for flag in flags(&run(env!("CARGO_BIN_EXE_diary"), &["--help"])) {
        assert!(main.contains(&flag), "diary.1 lacks {flag}");
    }
    for command in &commands {
        assert!(
            main.contains(command.as_str()),
            "diary.1 does not list {command}"
        );
        let text = page(dir.path(), &format!("diary-{command}.1"));
        for flag in flags(&run(env!("CARGO_BIN_EXE_diary"), &[command, "--help"])) {
            assert!(text.contains(&flag), "diary-{command}.1 lacks {flag}");
        }
    }
    let server = page(dir.path(), "diaryd.8");
    assert!(server.contains("\n.TH diaryd 8"), "{}", &server[..80]);
    let flags_of_diaryd = flags(&run(env!("CARGO_BIN_EXE_diaryd"), &["--help"]));
    assert!(flags_of_diaryd.len() > 25, "{flags_of_diaryd:?}");
    for flag in flags_of_diaryd {
        assert!(server.contains(&flag), "diaryd.8 lacks {flag}");
    }
    assert!(server.contains("SIGHUP") && server.contains("diary-protocol(5)"));
    let protocol = page(dir.path(), "diary-protocol.5");
    assert!(protocol.contains("/follow") && protocol.contains("Last-Event-ID"));
    assert!(page(dir.path(), "diary-file.5").contains("ID<TAB>TIME<TAB>TEXT"));
    // Rendered by man(1), where there is one: no warnings.
    if common::have_tool("man") {
        for name in ["diary.1", "diaryd.8", "diary-write.1", "diary-protocol.5"] {
            let out = Command::new("man")
                .args(["--warnings", "-l"])
                .arg(dir.path().join(name))
                .env("MANWIDTH", "80")
                .output()
                .unwrap();
            assert!(out.status.success(), "{name}: {out:?}");
            let warnings = String::from_utf8_lossy(&out.stderr);
            assert!(warnings.trim().is_empty(), "{name}: {warnings}");
        }
    }
}

#[test]
fn completion_scripts_name_every_command() {
    let commands = commands();
    for shell in ["bash", "zsh", "fish"] {
        let script = run(env!("CARGO_BIN_EXE_diary"), &["completions", shell]);
        for command in &commands {
            assert!(
                script.contains(command.as_str()),
                "{shell}: {command} missing"
            );
        }
        let server = run(env!("CARGO_BIN_EXE_diaryd"), &["--completions", shell]);
        for flag in ["--listen", "--fsync", "--web", "--check", "--allow"] {
            assert!(
                server.contains(flag.trim_start_matches('-')),
                "{shell}: {flag}"
            );
        }
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_diary"))
        .args(["completions", "cmd.exe"])
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}
