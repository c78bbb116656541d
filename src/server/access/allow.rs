//! The allow file: which devices may reach the diary, by public key, under
//! which name, to do what (`PUBLIC-KEY NAME SCOPES`, one per line), and the
//! scopes every command is checked against.

use crate::protocol::Command;
use crate::secure::keys::PublicKey;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// What a device may do: a set of `write` (new entries), `edit` (amend
/// and delete entries, anyone's), `import` (entries with another time and
/// author, as `diary import` sends), `read` and `follow`. `all` is every
/// one. Changing what others wrote and speaking for other authors are
/// scopes of their own: a sensor that may only add lines cannot rewrite
/// or forge the diary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scopes(u8);

impl Scopes {
    pub(crate) const WRITE: Scopes = Scopes(1);
    pub(crate) const READ: Scopes = Scopes(2);
    pub(crate) const FOLLOW: Scopes = Scopes(4);
    pub(crate) const EDIT: Scopes = Scopes(8);
    pub(crate) const IMPORT: Scopes = Scopes(16);
    pub(crate) const ALL: Scopes = Scopes(31);
    pub(crate) const NONE: Scopes = Scopes(0);

    /// These scopes and `other`'s.
    pub(crate) const fn with(self, other: Scopes) -> Scopes {
        Scopes(self.0 | other.0)
    }

    pub(crate) fn contains(self, other: Scopes) -> bool {
        self.0 & other.0 == other.0
    }

    /// The scope a command needs; help, quit and cookies need none.
    pub(crate) fn needed_by(command: &Command) -> Scopes {
        match command {
            Command::Write(_) => Scopes::WRITE,
            Command::Amend { .. } | Command::Delete { .. } => Scopes::EDIT,
            Command::Import { .. } => Scopes::IMPORT,
            Command::Past { .. } | Command::Stats => Scopes::READ,
            Command::Follow { .. } => Scopes::FOLLOW,
            Command::Help | Command::Quit | Command::Cookie => Scopes::NONE,
            // Logins for others: only a device that may do everything.
            Command::Web(_) => Scopes::ALL,
        }
    }

    /// The name of a single scope, for error replies.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scopes::WRITE => "write",
            Scopes::READ => "read",
            Scopes::FOLLOW => "follow",
            Scopes::EDIT => "edit",
            Scopes::IMPORT => "import",
            _ => "all",
        }
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Scopes::ALL {
            return f.write_str("all");
        }
        let names: Vec<&str> = [
            Scopes::WRITE,
            Scopes::EDIT,
            Scopes::IMPORT,
            Scopes::READ,
            Scopes::FOLLOW,
        ]
        .into_iter()
        .filter(|s| self.contains(*s))
        .map(Scopes::name)
        .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

impl std::str::FromStr for Scopes {
    type Err = String;

    fn from_str(text: &str) -> Result<Scopes, String> {
        let mut scopes = Scopes::NONE;
        for word in text.split(',') {
            scopes.0 |= match word {
                "write" => Scopes::WRITE.0,
                "read" => Scopes::READ.0,
                "follow" => Scopes::FOLLOW.0,
                "edit" => Scopes::EDIT.0,
                "import" => Scopes::IMPORT.0,
                "all" => Scopes::ALL.0,
                _ => {
                    return Err(format!(
                        "unknown scope {word:?}; scopes are write, edit, import, read, \
                         follow or all, joined by commas"
                    ));
                }
            };
        }
        Ok(scopes)
    }
}

/// One allowed device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Device {
    pub(crate) name: Arc<str>,
    pub(crate) scopes: Scopes,
}

/// The devices of an allow file, by public key.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowList {
    devices: HashMap<PublicKey, Device>,
}

impl AllowList {
    pub(crate) fn get(&self, key: &PublicKey) -> Option<&Device> {
        self.devices.get(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.devices.len()
    }

    /// Reads an allow file; an error names `file:line` and the reason.
    /// A file that others may write (or that sits in a directory others
    /// may write without the sticky bit) is refused: whoever can change it
    /// can let their own key in.
    pub(crate) fn load(path: &Path) -> Result<AllowList, String> {
        check_not_writable_by_others(path)?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read allow file {}: {e}", path.display()))?;
        AllowList::parse(&text, &path.display().to_string())
    }

    pub(crate) fn parse(text: &str, file: &str) -> Result<AllowList, String> {
        let mut devices = HashMap::new();
        let mut names: HashMap<Arc<str>, usize> = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let at = |why: String| format!("{file}:{n}: {why}");
            let words: Vec<&str> = line.split_whitespace().collect();
            let [key, name, scopes] = words[..] else {
                return Err(at(format!(
                    "expected `PUBLIC-KEY NAME SCOPES`, found {} fields",
                    words.len()
                )));
            };
            let key: PublicKey = key.parse().map_err(at)?;
            if name.chars().any(|c| c.is_control()) || name.len() > 64 {
                return Err(at(format!(
                    "device name {name:?} must be at most 64 bytes without control characters"
                )));
            }
            let scopes: Scopes = scopes.parse().map_err(at)?;
            let name: Arc<str> = name.into();
            if let Some(first) = names.insert(name.clone(), n) {
                return Err(at(format!(
                    "device name {name:?} is already used on line {first}"
                )));
            }
            if devices.insert(key, Device { name, scopes }).is_some() {
                return Err(at("this key is already listed".to_string()));
            }
        }
        Ok(AllowList { devices })
    }
}

/// Refuses an allow file that users other than its owner may change.
fn check_not_writable_by_others(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    const STICKY: u32 = 0o1000;
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode())
            .map_err(|e| format!("cannot read allow file {}: {e}", path.display()))
    };
    let file_mode = mode(path)?;
    if file_mode & 0o022 != 0 {
        return Err(format!(
            "allow file {p} may be written by others (mode {m:o}), who could add their own \
             key to it; run: chmod go-w {p}",
            p = path.display(),
            m = file_mode & 0o777
        ));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let dir_mode = mode(dir)?;
    if dir_mode & 0o002 != 0 && dir_mode & STICKY == 0 {
        return Err(format!(
            "allow file {p} is in {d}, which anyone may write (mode {m:o}), so anyone could \
             replace it; keep it in a directory only you may write",
            p = path.display(),
            d = dir.display(),
            m = dir_mode & 0o777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::keys::KeyPair;

    #[test]
    fn an_allow_file_lists_devices_with_their_scopes() {
        let (a, b) = (KeyPair::generate().public, KeyPair::generate().public);
        let text = format!("# my devices\n\n{a} laptop all\n{b} phone write,read  # no follow\n");
        let list = AllowList::parse(&text, "allow").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list.get(&a).unwrap().scopes, Scopes::ALL);
        let phone = list.get(&b).unwrap();
        assert_eq!(&*phone.name, "phone");
        assert!(phone.scopes.contains(Scopes::WRITE) && phone.scopes.contains(Scopes::READ));
        assert!(!phone.scopes.contains(Scopes::FOLLOW));
        assert_eq!(phone.scopes.to_string(), "write,read");
    }

    #[test]
    fn a_bad_line_is_named_with_its_reason() {
        let a = KeyPair::generate().public;
        for (text, want) in [
            (format!("{a} laptop\n"), "allow:1: expected"),
            (
                format!("\n{a} laptop sing\n"),
                "allow:2: unknown scope \"sing\"",
            ),
            (
                "nokey laptop all\n".to_string(),
                "allow:1: \"nokey\" is not a key",
            ),
            (
                format!("{a} a all\n{a} b all\n"),
                "allow:2: this key is already listed",
            ),
            (
                format!("{a} a all\n{} a read\n", KeyPair::generate().public),
                "allow:2: device name \"a\" is already used on line 1",
            ),
        ] {
            let e = AllowList::parse(&text, "allow").unwrap_err();
            assert!(e.starts_with(want), "{e}");
        }
    }

    #[test]
    fn each_command_needs_its_scope() {
        use crate::protocol::PastQuery;
        assert_eq!(Scopes::needed_by(&Command::Write("x")), Scopes::WRITE);
        // Changing entries and speaking for other authors are not `write`.
        let amend = Command::Amend { id: 1, text: "x" };
        assert_eq!(Scopes::needed_by(&amend), Scopes::EDIT);
        assert_eq!(Scopes::needed_by(&Command::Delete { id: 1 }), Scopes::EDIT);
        let import = Command::Import {
            time: "2020-01-01T00:00:00+00:00",
            millis: 0,
            author: Some("admin"),
            text: "x".into(),
        };
        assert_eq!(Scopes::needed_by(&import), Scopes::IMPORT);
        let write: Scopes = "write".parse().unwrap();
        assert!(!write.contains(Scopes::EDIT) && !write.contains(Scopes::IMPORT));
        let all: Scopes = "all".parse().unwrap();
        assert!(all.contains(Scopes::EDIT) && all.contains(Scopes::IMPORT));
        let some: Scopes = "write,edit".parse().unwrap();
        assert_eq!(some.to_string(), "write,edit");
        let past = Command::Past {
            query: PastQuery::default(),
        };
        assert_eq!(Scopes::needed_by(&past), Scopes::READ);
        assert_eq!(Scopes::needed_by(&Command::Stats), Scopes::READ);
        let follow = Command::Follow {
            since: None,
            diary: None,
        };
        assert_eq!(Scopes::needed_by(&follow), Scopes::FOLLOW);
        assert!(Scopes::WRITE.contains(Scopes::needed_by(&Command::Help)));
    }
}
