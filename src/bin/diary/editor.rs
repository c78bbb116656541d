//! Writing in the person's own editor (`$VISUAL`, `$EDITOR`, else `vi`),
//! as git does: for paragraphs, and for correcting an entry.

/// Opens `text` in the person's editor; the saved buffer, without its
/// final newline (`None` if it is left empty).
pub fn edit(text: &str) -> std::io::Result<Option<String>> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let file = tempfile::Builder::new().suffix(".txt").tempfile()?;
    std::fs::write(file.path(), format!("{text}\n"))?;
    // As git runs it: through the shell, so EDITOR may hold arguments.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(file.path())
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "{editor} exited with {status}"
        )));
    }
    let edited = std::fs::read_to_string(file.path())?;
    let edited = edited.strip_suffix('\n').unwrap_or(&edited);
    Ok((!edited.trim().is_empty()).then(|| edited.to_string()))
}
