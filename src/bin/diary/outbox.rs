//! The interactive client's outbox: lines typed while the server could not
//! be reached, kept on disk with their tags until the server takes them.
//!
//! One file per user, `$XDG_STATE_HOME/diary/outbox` (or
//! `~/.local/state/diary/outbox`), mode 0600, one line per entry:
//! `SERVER<TAB>TAG<TAB>TEXT` with TEXT escaped as in the diary. Every
//! change is flushed to the disk before it is reported. Entries go out in
//! order, each with the tag it was first given, so one the server did store
//! before the connection broke is answered, not stored twice.

use diary::client::{Client, ClientError, Reply};
use diary::wire::entry;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A queued entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub tag: String,
    pub text: String,
}

pub struct Outbox {
    path: PathBuf,
    server: String,
    /// This server's entries, oldest first.
    mine: Vec<Queued>,
    /// Other servers' lines, kept as they are.
    others: Vec<String>,
}

/// Where the outbox lives.
pub fn default_path() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))?;
    Some(state.join("diary").join("outbox"))
}

impl Outbox {
    /// The outbox at `path`, with the entries queued for `server`.
    pub fn open(path: PathBuf, server: &str) -> io::Result<Outbox> {
        let mut outbox = Outbox {
            path,
            server: server.to_string(),
            mine: Vec::new(),
            others: Vec::new(),
        };
        let text = match fs::read_to_string(&outbox.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        for line in text.lines() {
            let mut fields = line.splitn(3, '\t');
            let (Some(to), Some(tag), Some(escaped)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue; // a line cut short by a crash: it was never reported queued
            };
            match entry::unescape(escaped) {
                Some(text) if to == server => outbox.mine.push(Queued {
                    tag: tag.to_string(),
                    text,
                }),
                _ => outbox.others.push(line.to_string()),
            }
        }
        Ok(outbox)
    }

    pub fn len(&self) -> usize {
        self.mine.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mine.is_empty()
    }

    /// Queues an entry; it is on the disk when this returns.
    pub fn push(&mut self, tag: &str, text: &str) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        file.write_all(&self.line(tag, text))?;
        file.sync_all()?;
        self.mine.push(Queued {
            tag: tag.to_string(),
            text: text.to_string(),
        });
        Ok(())
    }

    fn line(&self, tag: &str, text: &str) -> Vec<u8> {
        let mut line = format!("{}\t{tag}\t", self.server).into_bytes();
        entry::escape_into(text, &mut line);
        line.push(b'\n');
        line
    }

    /// Sends the queued entries in order, each with its tag, calling
    /// `on_reply` with each answer. Stops at the first that cannot be sent
    /// (the rest stay queued); an entry the server refused is reported and
    /// dropped, since sending it again would be refused again.
    pub fn deliver(
        &mut self,
        client: &mut Client,
        mut on_reply: impl FnMut(&Queued, &Reply),
    ) -> Result<usize, ClientError> {
        let mut sent = 0;
        while let Some(next) = self.mine.first().cloned() {
            let reply = client.write_tagged(&next.tag, &next.text)?;
            on_reply(&next, &reply);
            self.mine.remove(0);
            sent += 1;
            if let Err(e) = self.rewrite() {
                // Sent but still on disk: a later run sends it again with its
                // tag, and the server answers it without storing it twice.
                return Err(ClientError::Io(
                    client.server(),
                    client.options().proto,
                    io::Error::new(
                        e.kind(),
                        format!("cannot update {}: {e}", self.path.display()),
                    ),
                ));
            }
        }
        Ok(sent)
    }

    /// Writes the file anew (a temporary file, flushed, renamed over it).
    fn rewrite(&self) -> io::Result<()> {
        let mut body = Vec::new();
        for line in &self.others {
            body.extend_from_slice(line.as_bytes());
            body.push(b'\n');
        }
        for q in &self.mine {
            body.extend_from_slice(&self.line(&q.tag, &q.text));
        }
        let tmp = self.path.with_extension("tmp");
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&body)?;
        file.sync_all()?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_entries_survive_a_reopen_and_other_servers_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/diary/outbox");
        let mut a = Outbox::open(path.clone(), "host-a:8888").unwrap();
        a.push("t1", "第一 line\twith a tab").unwrap();
        a.push("t2", "  second").unwrap();
        let mut b = Outbox::open(path.clone(), "host-b:8888").unwrap();
        b.push("t3", "for b").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let a = Outbox::open(path.clone(), "host-a:8888").unwrap();
        assert_eq!(
            a.mine,
            [
                Queued {
                    tag: "t1".into(),
                    text: "第一 line\twith a tab".into()
                },
                Queued {
                    tag: "t2".into(),
                    text: "  second".into()
                }
            ]
        );
        a.rewrite().unwrap();
        assert_eq!(Outbox::open(path, "host-b:8888").unwrap().len(), 1);
    }
}
