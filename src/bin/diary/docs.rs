//! `diary completions SHELL` and the manual pages (`diary generate-man
//! DIR`, hidden: `contrib/dist.sh` runs it), made from the same clap
//! definitions as `--help`, so they cannot drift from it.

use clap::CommandFactory;
use std::io::{self, Write};
use std::path::Path;

/// The shell completion script for `shell`, on stdout.
pub fn completions(shell: clap_complete::Shell) {
    let mut command = crate::Args::command();
    clap_complete::generate(shell, &mut command, "diary", &mut io::stdout());
}

/// Writes diary(1), a diary-COMMAND(1) page per command, and the protocol
/// and file format as diary-protocol(5) and diary-file(5), into `dir`.
pub fn man_pages(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let command = crate::Args::command().after_long_help(
        "The protocol is in diary-protocol(5), the diary file's format in diary-file(5), \
         the server in diaryd(8).",
    );
    clap_mangen::generate_to(command, dir)?;
    text_page(
        dir,
        ("diary-protocol", "5"),
        "the diary protocol: requests and replies over UDP, TCP and HTTP",
        include_str!("../../../docs/PROTOCOL.md"),
    )?;
    text_page(
        dir,
        ("diary-file", "5"),
        "the diary file: one entry per line, human-readable and append-only",
        include_str!("../../../docs/FORMAT.md"),
    )
}

/// A page whose body is a Markdown document shown as it is (fixed width).
fn text_page(
    dir: &Path,
    (name, section): (&str, &str),
    summary: &str,
    text: &str,
) -> io::Result<()> {
    let mut page = std::fs::File::create(dir.join(format!("{name}.{section}")))?;
    writeln!(page, ".TH {} {section}", name.to_uppercase())?;
    writeln!(page, ".SH NAME\n{name} \\- {summary}")?;
    writeln!(page, ".SH DESCRIPTION\n.nf")?;
    for line in text.lines() {
        // roff: a backslash is \e; a line may not start with . or '.
        let line = line.replace('\\', "\\e");
        if line.starts_with('.') || line.starts_with('\'') {
            writeln!(page, "\\&{line}")?;
        } else {
            writeln!(page, "{line}")?;
        }
    }
    writeln!(page, ".fi\n.SH SEE ALSO\ndiary(1), diaryd(8)")
}
