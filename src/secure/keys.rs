//! Keys, as SSH and WireGuard keep them: Curve25519 key pairs for Noise,
//! a public key's text form (base64, 44 characters, as `wg` prints them),
//! key files that only their owner can read, and where a device's key and
//! its pins of server keys live by default.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use snow::params::DHChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The one Noise protocol both transports speak: WireGuard's pattern.
pub(crate) const NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
pub(crate) const KEY_LEN: usize = 32;

/// A public key; its text form is standard base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl std::str::FromStr for PublicKey {
    type Err = String;

    fn from_str(text: &str) -> Result<PublicKey, String> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|_| format!("{text:?} is not a key (44 characters of base64)"))?;
        let key: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| format!("{text:?} is not a key (it must decode to 32 bytes)"))?;
        Ok(PublicKey(key))
    }
}

impl PublicKey {
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<PublicKey> {
        bytes.try_into().ok().map(PublicKey)
    }
}

/// A private key and its public half.
#[derive(Clone)]
pub struct KeyPair {
    pub(crate) private: [u8; KEY_LEN],
    pub public: PublicKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private half, not even in a debug print.
        write!(f, "KeyPair({})", self.public)
    }
}

impl KeyPair {
    pub fn generate() -> KeyPair {
        let params = NOISE_PARAMS.parse().expect("valid Noise parameters");
        let pair = snow::Builder::new(params)
            .generate_keypair()
            .expect("the system's random source works");
        KeyPair::from_private(pair.private[..].try_into().expect("32 bytes"))
    }

    pub fn from_private(private: [u8; KEY_LEN]) -> KeyPair {
        let mut dh = DefaultResolver
            .resolve_dh(&DHChoice::Curve25519)
            .expect("snow's default resolver has Curve25519");
        dh.set(&private);
        let public = PublicKey::from_slice(dh.pubkey()).expect("32 bytes");
        KeyPair { private, public }
    }
}

/// What a key file holds: a comment, then `private BASE64`.
fn key_file_text(pair: &KeyPair) -> String {
    format!(
        "# diary key: keep it private; its public half is {}\nprivate {}\n",
        pair.public,
        BASE64.encode(pair.private)
    )
}

/// Reads a key file written by [`create_key_file`]. Refuses one that
/// others may read, as ssh does: a key that leaked is no key.
pub fn load_key_file(path: &Path) -> Result<KeyPair, String> {
    let shown = path.display();
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read key {shown}: {e}"))?;
    let mode = fs::metadata(path)
        .map_err(|e| format!("cannot read key {shown}: {e}"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "key {shown} can be read by others (mode {:04o}); run `chmod 600 '{shown}'`",
            mode & 0o7777
        ));
    }
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let (n, line) = lines
        .next()
        .ok_or_else(|| format!("{shown}: no key in the file"))?;
    let encoded = line
        .strip_prefix("private ")
        .ok_or_else(|| format!("{shown}:{}: expected `private BASE64`", n + 1))?;
    let private: [u8; KEY_LEN] = BASE64
        .decode(encoded.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{shown}:{}: not a 32-byte base64 key", n + 1))?;
    if let Some((n, _)) = lines.next() {
        return Err(format!("{shown}:{}: one key per file", n + 1));
    }
    Ok(KeyPair::from_private(private))
}

/// Creates a new key file, mode 0600, in a directory made owner-only if
/// it is new. An existing file is kept unless `replace`; a replaced one
/// is swapped in whole (a crash leaves the old key or the new, not half).
pub fn create_key_file(path: &Path, replace: bool) -> Result<KeyPair, String> {
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if path.exists() && !replace {
        return Err(format!(
            "{shown} exists; a new key would lock out the servers that allow the old one. \
             Pass --force to replace it"
        ));
    }
    let pair = KeyPair::generate();
    let temp = path.with_extension("new-key");
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut f| {
            f.write_all(key_file_text(&pair).as_bytes())?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(format!("cannot write {}: {e}", temp.display()));
    }
    let linked = if replace {
        fs::rename(&temp, path)
    } else {
        // Never over a file that appeared meanwhile.
        fs::hard_link(&temp, path).and_then(|()| fs::remove_file(&temp))
    };
    linked.map_err(|e| {
        let _ = fs::remove_file(&temp);
        format!("cannot write {shown}: {e}")
    })?;
    Ok(pair)
}

/// The server's key: read, or made on first start.
pub fn load_or_create(path: &Path) -> Result<(KeyPair, bool), String> {
    match fs::symlink_metadata(path) {
        Ok(_) => load_key_file(path).map(|k| (k, false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_key_file(path, false).map(|k| (k, true))
        }
        Err(e) => Err(format!("cannot read key {}: {e}", path.display())),
    }
}

/// `$XDG_CONFIG_HOME/diary`, or `~/.config/diary`.
pub(crate) fn config_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("diary")
}

/// Where `diary keygen` puts a device's key unless told otherwise.
pub fn default_device_key() -> PathBuf {
    config_dir().join("key")
}

/// The client's pins of server keys, as ssh's `known_hosts`.
pub(crate) fn default_known_servers() -> PathBuf {
    config_dir().join("known_servers")
}

/// The pinned key of `server` (as the user wrote its address) in a
/// known_servers file, with its line number.
pub(crate) fn pinned_key(file: &Path, server: &str) -> Result<Option<(PublicKey, usize)>, String> {
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    for (n, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        if words.next() == Some(server) {
            let key = words
                .next()
                .unwrap_or_default()
                .parse()
                .map_err(|e| format!("{}:{}: {e}", file.display(), n + 1))?;
            return Ok(Some((key, n + 1)));
        }
    }
    Ok(None)
}

/// Appends `server KEY` to a known_servers file, made if need be.
pub(crate) fn pin_key(file: &Path, server: &str, key: &PublicKey) -> Result<(), String> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)
        .and_then(|mut f| writeln!(f, "{server} {key}"))
        .map_err(|e| format!("cannot write {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_round_trips_and_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key");
        let made = create_key_file(&path, false).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let read = load_key_file(&path).unwrap();
        assert_eq!(read.public, made.public);
        assert_eq!(read.private, made.private);
        let again = create_key_file(&path, false).unwrap_err();
        assert!(again.contains("--force"), "{again}");
        let replaced = create_key_file(&path, true).unwrap();
        assert_ne!(replaced.public, made.public);
        assert_eq!(load_key_file(&path).unwrap().public, replaced.public);
    }

    #[test]
    fn a_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        create_key_file(&path, false).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_key_file(&path).unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn public_keys_parse_from_their_text_and_nothing_else() {
        let pair = KeyPair::generate();
        let text = pair.public.to_string();
        assert_eq!(text.len(), 44);
        assert_eq!(text.parse::<PublicKey>().unwrap(), pair.public);
        assert!("short".parse::<PublicKey>().is_err());
        assert!("AAAA".parse::<PublicKey>().is_err());
    }

    #[test]
    fn pins_are_found_by_the_address_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_servers");
        assert_eq!(pinned_key(&file, "h:1").unwrap(), None);
        let (a, b) = (KeyPair::generate().public, KeyPair::generate().public);
        pin_key(&file, "h:1", &a).unwrap();
        pin_key(&file, "h:2", &b).unwrap();
        assert_eq!(pinned_key(&file, "h:1").unwrap(), Some((a, 1)));
        assert_eq!(pinned_key(&file, "h:2").unwrap(), Some((b, 2)));
        fs::write(&file, "h:3 nonsense\n").unwrap();
        assert!(pinned_key(&file, "h:3").unwrap_err().contains(":1:"));
    }
}
