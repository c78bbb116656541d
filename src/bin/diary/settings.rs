//! The client's config file, `$XDG_CONFIG_HOME/diary/config.toml` (or
//! `DIARY_CONFIG`): `server`, `proto`, `name`, `key`, `timezone`,
//! `timeout`. A flag wins over its environment variable, which wins over
//! the file, which wins over the default; `diary config` shows which gave
//! each value.

use crate::Args;
use clap::ArgMatches;
use clap::parser::ValueSource;
use diary::client::Proto;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    server: Option<String>,
    proto: Option<String>,
    name: Option<String>,
    key: Option<PathBuf>,
    /// `local` (`TZ`, else the system's), `utc`, or a zone such as `Asia/Shanghai`.
    timezone: Option<String>,
    timeout: Option<f64>,
}

/// Where a value came from.
#[derive(Debug, Clone)]
pub enum Source {
    Flag,
    Env(&'static str),
    File,
    Default,
}

/// Each setting, its value as used, and where it came from.
pub struct Report {
    pub file: PathBuf,
    pub file_found: bool,
    pub values: Vec<(&'static str, String, Source)>,
}

impl Report {
    pub fn describe(&self) -> String {
        let mut out = format!(
            "config file: {} ({})\n",
            self.file.display(),
            if self.file_found {
                "read"
            } else {
                "none there"
            }
        );
        for (name, value, source) in &self.values {
            let from = match source {
                Source::Flag => format!("--{name}"),
                Source::Env(var) => format!("${var}"),
                Source::File => "config file".into(),
                Source::Default => "default".into(),
            };
            out.push_str(&format!("{name:<9}{value:<32} from {from}\n"));
        }
        out
    }
}

/// The config file's path: `DIARY_CONFIG`, else `$XDG_CONFIG_HOME/diary/config.toml`.
pub fn path() -> PathBuf {
    if let Some(path) = std::env::var_os("DIARY_CONFIG") {
        return PathBuf::from(path);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("diary").join("config.toml")
}

fn source(matches: &ArgMatches, id: &str, env: Option<&'static str>) -> Option<Source> {
    match matches.value_source(id) {
        Some(ValueSource::CommandLine) => Some(Source::Flag),
        Some(ValueSource::EnvVariable) => Some(Source::Env(env.unwrap_or("?"))),
        _ => None,
    }
}

/// Where setting `id` comes from: a flag or the environment (left as
/// clap set it), else the file's value (handed to `apply`), else the default.
fn layer<T>(
    matches: &ArgMatches,
    id: &str,
    env: Option<&'static str>,
    file: Option<T>,
    apply: impl FnOnce(T) -> Result<(), String>,
) -> Result<Source, String> {
    if let Some(given) = source(matches, id, env) {
        return Ok(given);
    }
    match file {
        Some(value) => apply(value).map(|()| Source::File),
        None => Ok(Source::Default),
    }
}

/// Fills in from the config file what neither a flag nor the environment
/// gave; says where each value came from. A file that cannot be read or
/// parsed is an error naming it.
pub fn apply(matches: &ArgMatches, args: &mut Args) -> Result<Report, String> {
    let file = path();
    let (settings, found) = read(&file)?;
    let bad = |what: &str, why: String| format!("{}: {what}: {why}", file.display());
    let mut values = Vec::new();

    let from = layer(
        matches,
        "server",
        Some("DIARY_SERVER"),
        settings.server,
        |server| {
            args.server = server;
            Ok(())
        },
    )?;
    values.push(("server", args.server.clone(), from));

    let from = layer(matches, "proto", None, settings.proto, |proto| {
        args.proto = proto.parse::<Proto>().map_err(|e| bad("proto", e))?;
        Ok(())
    })?;
    values.push(("proto", args.proto.to_string().to_lowercase(), from));

    let from = layer(matches, "timeout", None, settings.timeout, |timeout| {
        if timeout <= 0.0 {
            return Err(bad(
                "timeout",
                format!("{timeout} is not a positive number of seconds"),
            ));
        }
        args.timeout = timeout;
        Ok(())
    })?;
    values.push(("timeout", format!("{} s", args.timeout), from));

    let from = layer(matches, "name", Some("DIARY_NAME"), settings.name, |name| {
        args.name = Some(crate::parse_name(&name).map_err(|e| bad("name", e))?);
        Ok(())
    })?;
    let name = args
        .name
        .clone()
        .or_else(diary::client::default_name)
        .unwrap_or_else(|| "(none)".into());
    values.push(("name", name, from));

    let from = layer(matches, "key", Some("DIARY_KEY"), settings.key, |key| {
        args.key = Some(expand_home(&key));
        Ok(())
    })?;
    let key = args.key.clone().map_or_else(
        || "(the default: config dir's key)".to_string(),
        |k| k.display().to_string(),
    );
    values.push(("key", key, from));

    let (zone, from) =
        time_zone(matches, args, settings.timezone).map_err(|e| bad("timezone", e))?;
    values.push(("timezone", zone, from));
    Ok(Report {
        file,
        file_found: found,
        values,
    })
}

/// `--utc` wins, then `TZ`, then the file's `timezone`.
fn time_zone(
    matches: &ArgMatches,
    args: &mut Args,
    setting: Option<String>,
) -> Result<(String, Source), String> {
    if matches.value_source("utc") == Some(ValueSource::CommandLine) && args.utc {
        return Ok(("UTC".into(), Source::Flag));
    }
    if let Ok(tz) = std::env::var("TZ") {
        return Ok((tz, Source::Env("TZ")));
    }
    match setting.as_deref() {
        None => Ok(("local (the system's)".into(), Source::Default)),
        Some("local") => Ok(("local (the system's)".into(), Source::File)),
        Some(zone) if zone.eq_ignore_ascii_case("utc") => {
            args.utc = true;
            Ok(("UTC".into(), Source::File))
        }
        Some(zone) => {
            let known =
                !zone.contains("..") && Path::new("/usr/share/zoneinfo").join(zone).is_file();
            if !known {
                return Err(format!(
                    "{zone:?} is not a time zone here (one of /usr/share/zoneinfo, as Asia/Shanghai; or local, or utc)"
                ));
            }
            // SAFETY: at start, before any other thread runs: the zone the
            // times are shown in, read by chrono's Local.
            unsafe { std::env::set_var("TZ", zone) };
            Ok((zone.to_string(), Source::File))
        }
    }
}

fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

fn read(path: &Path) -> Result<(FileSettings, bool), String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((FileSettings::default(), false));
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let settings = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((settings, true))
}
