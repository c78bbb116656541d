//! The architecture, checked from the sources: imports run downwards only
//! (binaries → event_loop → udp | tcp | web → server/handler → store | secure →
//! protocol → wire; client → secure | protocol | wire), no module imports
//! one that imports it back, and the `diary` binary uses no server code.
//! (docs: the design brief's §7a, and the table in src/lib.rs.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each part of the library may import.
const ALLOWED: &[(&str, &[&str])] = &[
    (
        "event_loop",
        &[
            "udp", "tcp", "web", "server", "handler", "store", "secure", "protocol", "wire",
        ],
    ),
    // HTTP runs over TCP: the web side reuses its output buffer and followers.
    ("web", &["tcp", "server", "store", "protocol", "wire"]),
    (
        "udp",
        &["server", "handler", "store", "secure", "protocol", "wire"],
    ),
    (
        "tcp",
        &["server", "handler", "store", "secure", "protocol", "wire"],
    ),
    (
        "server",
        &["handler", "store", "secure", "protocol", "wire"],
    ),
    ("handler", &["server", "store", "protocol", "wire"]),
    ("store", &["wire"]),
    ("secure", &["wire"]),
    ("protocol", &["wire"]),
    ("wire", &[]),
    ("client", &["secure", "protocol", "wire"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/server/access/allow.rs` → `server::access::allow`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|c| c != "mod")
        .collect();
    parts.join("::")
}

/// The source with `//` comments (doc comments included) left out, so a
/// path named in prose is no import.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `PREFIX::a::b…` path in `code`, as its segments.
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    let mut found = Vec::new();
    let needle = format!("{prefix}::");
    let mut rest = code;
    while let Some(at) = rest.find(&needle) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + needle.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        found.push(rest[..end].split("::").filter(|s| !s.is_empty()).collect());
    }
    found
}

#[test]
fn imports_run_downwards_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| !f.starts_with(src.join("bin")));
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for file in &files {
        let from = module_of(&src, file);
        let part = from.split("::").next().unwrap().to_string();
        if part == "lib" {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        for path in paths_after(&code, "crate") {
            // The longest module the path names.
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|m| modules.contains(m));
            let Some(target) = target else { continue };
            let to_part = target.split("::").next().unwrap();
            let inside = to_part == part;
            let may = allowed.get(part.as_str()).map(|a| a.contains(&to_part));
            if !inside && may != Some(true) {
                wrong.push(format!("{from} -> {target}"));
            }
            if target != from && !from.starts_with(&format!("{target}::")) {
                graph.entry(from.clone()).or_default().insert(target);
            }
        }
    }
    assert!(wrong.is_empty(), "imports that climb: {wrong:#?}");
    // No cycles among files (a parent's own children excepted, as above).
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) {
        match state.get(node) {
            Some(2) => return,
            Some(1) => panic!("an import cycle: {stack:?} -> {node}"),
            _ => {}
        }
        state.insert(node, 1);
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, state, stack);
        }
        stack.pop();
        state.insert(node, 2);
    }
    for node in graph.keys() {
        visit(node, &graph, &mut state, &mut Vec::new());
    }
}

/// The `diary` binary is a client: it names no server, store or side.
#[test]
fn the_diary_binary_uses_only_client_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/diary");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    assert!(files.len() >= 5, "{files:?}");
    for file in files {
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        for path in paths_after(&code, "diary") {
            let part = path.first().copied().unwrap_or_default();
            assert!(
                ["client", "wire", "secure", "protocol"].contains(&part),
                "{} uses diary::{}",
                file.display(),
                path.join("::")
            );
        }
    }
}

/// The README's layout table names every source file, so a newcomer sees
/// the whole of it, and each file opens with a `//!` saying what it owns.
#[test]
fn every_source_file_is_in_the_readme_and_says_what_it_owns() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    for file in files {
        let rel = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            readme.contains(&format!("`{rel}`")),
            "README's layout table does not list {rel}"
        );
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("//!"),
            "{rel} does not open with a //! comment"
        );
    }
}
