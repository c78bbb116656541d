//! Who may use the web page: one-time login tokens (Jupyter's login URL)
//! and the browser sessions they are exchanged for, each a named device.
//!
//! Only BLAKE3 hashes of tokens and cookies are kept, in memory and in the
//! sessions file (mode 0600, next to the diary), so the file lets no one
//! in. A session outlives restarts of diaryd (a page open across a restart
//! carries on); deleting its line and sending SIGHUP, or `diary web-logout
//! NAME`, logs it out.
//!
//! It may import `protocol` and `server::access::allow`.

use crate::protocol;
use crate::server::access::allow::Scopes;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How long a login URL may wait to be opened.
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Login URLs not yet used; making another forgets the oldest.
const MAX_TOKENS: usize = 16;
/// Browser sessions at once; a login past it is refused until one is revoked.
const MAX_SESSIONS: usize = 1024;
/// What a browser session may do: everything the page offers, not imports.
pub(crate) const SCOPES: Scopes = Scopes::WRITE
    .with(Scopes::READ)
    .with(Scopes::FOLLOW)
    .with(Scopes::EDIT);
/// The cookie that carries a session.
pub(crate) const COOKIE_NAME: &str = "diary_session";

/// A BLAKE3 hash of a token or cookie: all that is kept of it.
pub(crate) type Digest = [u8; 32];

fn digest(secret: &str) -> Digest {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).expect("the OS random source works");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

struct LoginToken {
    digest: Digest,
    name: Option<String>,
    expires: Instant,
}

/// A logged-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebSession {
    pub(crate) name: Arc<str>,
    /// Seconds since the epoch.
    pub(crate) created: u64,
}

/// The login tokens and sessions of the web side.
pub(crate) struct WebSessions {
    file: PathBuf,
    base_url: String,
    tokens: Vec<LoginToken>,
    sessions: HashMap<Digest, WebSession>,
    /// Bumped when sessions are revoked, so open event streams look again.
    generation: u64,
}

impl WebSessions {
    /// Opens the sessions file (a missing one is empty); `base_url` is
    /// what login URLs start with, e.g. `http://127.0.0.1:8080`.
    pub(crate) fn open(file: PathBuf, base_url: String) -> Result<WebSessions, String> {
        let sessions = read_file(&file)?;
        Ok(WebSessions {
            file,
            base_url,
            tokens: Vec::new(),
            sessions,
            generation: 0,
        })
    }

    pub(crate) fn file(&self) -> &Path {
        &self.file
    }

    /// A fresh one-time login URL; the session it opens is called `name`
    /// (or `web-` and four random hex digits).
    pub(crate) fn login_url(&mut self, name: Option<&str>) -> String {
        let token = random_hex(16);
        let now = Instant::now();
        self.tokens.retain(|t| t.expires > now);
        if self.tokens.len() >= MAX_TOKENS {
            self.tokens.remove(0);
        }
        self.tokens.push(LoginToken {
            digest: digest(&token),
            name: name.map(str::to_string),
            expires: now + TOKEN_LIFETIME,
        });
        format!("{}/login#{token}", self.base_url)
    }

    /// Exchanges a login token for a new session: its cookie value and
    /// name. The token is forgotten either way once it matched.
    pub(crate) fn exchange(&mut self, token: &str) -> Result<(String, Arc<str>), String> {
        let now = Instant::now();
        self.tokens.retain(|t| t.expires > now);
        let wanted = digest(token.trim());
        let Some(i) = self.tokens.iter().position(|t| t.digest == wanted) else {
            return Err(
                "this login link was used already, has expired (after 15 minutes) or \
                        is not one diaryd made; run `diary web-login` on the server's machine \
                        for a new one"
                    .into(),
            );
        };
        let token = self.tokens.remove(i);
        if self.sessions.len() >= MAX_SESSIONS {
            return Err(format!(
                "{MAX_SESSIONS} browsers are logged in already; log one out with `diary web-logout NAME`"
            ));
        }
        let name = self.unique_name(token.name.as_deref());
        let cookie = random_hex(32);
        let created = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let session = WebSession {
            name: name.clone(),
            created,
        };
        self.sessions.insert(digest(&cookie), session);
        if let Err(e) = self.save() {
            log::warn!(
                "{}: the web session {name} was not saved ({e}); it ends when diaryd stops",
                self.file.display()
            );
        }
        Ok((cookie, name))
    }

    fn unique_name(&self, wanted: Option<&str>) -> Arc<str> {
        let taken = |n: &str| self.sessions.values().any(|s| &*s.name == n);
        let base = match wanted {
            Some(name) => name.to_string(),
            None => loop {
                let name = format!("web-{}", random_hex(2));
                if !taken(&name) {
                    break name;
                }
            },
        };
        if !taken(&base) {
            return base.into();
        }
        (2..)
            .map(|n| format!("{base}-{n}"))
            .find(|n| !taken(n))
            .expect("some suffix is free")
            .into()
    }

    /// The session a cookie's value stands for: its hash (the session's
    /// key) and its name.
    pub(crate) fn session(&self, cookie: &str) -> Option<(Digest, Arc<str>)> {
        let digest = digest(cookie);
        let session = self.sessions.get(&digest)?;
        Some((digest, session.name.clone()))
    }

    /// Whether the session with this hash is still open.
    pub(crate) fn is_open(&self, digest: &Digest) -> bool {
        self.sessions.contains_key(digest)
    }

    /// Logs out the sessions called `name` (`all`: every one); how many.
    pub(crate) fn revoke(&mut self, name: &str) -> io::Result<usize> {
        let before = self.sessions.len();
        self.sessions
            .retain(|_, s| name != "all" && &*s.name != name);
        let gone = before - self.sessions.len();
        if gone > 0 {
            self.generation += 1;
            self.save()?;
        }
        Ok(gone)
    }

    /// The sessions, oldest first.
    pub(crate) fn list(&self) -> Vec<WebSession> {
        let mut all: Vec<WebSession> = self.sessions.values().cloned().collect();
        all.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        all
    }

    /// Re-reads the sessions file (SIGHUP): a line taken out logs its
    /// browser out. A file that cannot be read keeps the sessions known.
    pub(crate) fn reload(&mut self) -> Result<usize, String> {
        self.sessions = read_file(&self.file)?;
        self.generation += 1;
        Ok(self.sessions.len())
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Writes the file whole, through a temporary file and a rename, so a
    /// crash leaves the old one or the new one.
    fn save(&self) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut text = String::from(
            "# diaryd web sessions: HASH NAME CREATED, one logged-in browser per line.\n\
             # Delete a line and send diaryd SIGHUP to log that browser out.\n",
        );
        for (digest, session) in &self.sessions {
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            text.push_str(&format!("{hex} {} {}\n", session.name, session.created));
        }
        let mut temp = self.file.clone().into_os_string();
        temp.push(".new");
        let temp = PathBuf::from(temp);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_data()?;
        fs::rename(&temp, &self.file)?;
        if let Some(dir) = self.file.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<HashMap<Digest, WebSession>, String> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => {
            return Err(format!(
                "cannot read the web sessions {}: {e}",
                path.display()
            ));
        }
    };
    let mut sessions = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            format!(
                "{} line {}: expected `HASH NAME CREATED`",
                path.display(),
                n + 1
            )
        };
        let mut words = line.split_whitespace();
        let (Some(hex), Some(name), Some(created)) = (words.next(), words.next(), words.next())
        else {
            return Err(bad());
        };
        let digest = parse_digest(hex).ok_or_else(bad)?;
        let created = created.parse().map_err(|_| bad())?;
        if !protocol::valid_session_name(name) {
            return Err(bad());
        }
        sessions.insert(
            digest,
            WebSession {
                name: name.into(),
                created,
            },
        );
    }
    Ok(sessions)
}

fn parse_digest(hex: &str) -> Option<Digest> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(dir: &tempfile::TempDir) -> WebSessions {
        WebSessions::open(dir.path().join("web"), "http://127.0.0.1:1".into()).unwrap()
    }

    fn token_of(url: &str) -> &str {
        url.split_once('#').unwrap().1
    }

    #[test]
    fn a_token_opens_one_session_once_and_the_session_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut web = sessions(&dir);
        let url = web.login_url(Some("phone"));
        assert!(url.starts_with("http://127.0.0.1:1/login#"));
        assert_eq!(token_of(&url).len(), 32, "128 bits, in hex");
        let (cookie, name) = web.exchange(token_of(&url)).unwrap();
        assert_eq!(&*name, "phone");
        assert!(web.exchange(token_of(&url)).is_err(), "one time only");
        assert_eq!(&*web.session(&cookie).unwrap().1, "phone");
        assert!(web.session("not a cookie").is_none());
        let text = fs::read_to_string(dir.path().join("web")).unwrap();
        assert!(!text.contains(&cookie), "only a hash is stored");
        assert!(!text.contains(token_of(&url)));
        let again = sessions(&dir);
        assert_eq!(&*again.session(&cookie).unwrap().1, "phone");
    }

    #[test]
    fn names_are_unique_and_revoking_one_logs_it_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut web = sessions(&dir);
        let a = web.login_url(Some("phone"));
        let b = web.login_url(Some("phone"));
        let c = web.login_url(None);
        let (ca, _) = web.exchange(token_of(&a)).unwrap();
        let (cb, nb) = web.exchange(token_of(&b)).unwrap();
        let (cc, nc) = web.exchange(token_of(&c)).unwrap();
        assert_eq!(&*nb, "phone-2");
        assert!(nc.starts_with("web-"), "{nc}");
        let (key, _) = web.session(&cb).unwrap();
        assert_eq!(web.revoke("phone-2").unwrap(), 1);
        assert!(!web.is_open(&key));
        assert!(web.session(&ca).is_some() && web.session(&cc).is_some());
        assert_eq!(web.revoke("all").unwrap(), 2);
        assert!(sessions(&dir).list().is_empty());
    }

    #[test]
    fn a_line_taken_out_of_the_file_logs_out_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut web = sessions(&dir);
        let url = web.login_url(Some("tablet"));
        let (cookie, _) = web.exchange(token_of(&url)).unwrap();
        let path = dir.path().join("web");
        let kept: String = fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        fs::write(&path, kept).unwrap();
        assert_eq!(web.reload().unwrap(), 0);
        assert!(web.session(&cookie).is_none());
        fs::write(&path, "zz tablet 1\n").unwrap();
        assert!(web.reload().is_err(), "a bad line is an error");
    }
}
