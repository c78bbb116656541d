//! The journal as people use it every day: times in their own zone, spans
//! of time for past and follow, context before a follow, ids that line up.

mod common;

use common::*;
use std::process::Stdio;
use std::time::Duration;

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// What `diary ARGS` shows after each entry's id and time: `[AUTHOR] TEXT`.
fn shown_texts(server: std::net::SocketAddr, args: &[&str]) -> Vec<String> {
    let o = run_diary(server, args, b"");
    assert!(o.status.success(), "{args:?}: {o:?}");
    out(&o)
        .lines()
        .map(|l| l.trim_start().splitn(3, "  ").nth(2).unwrap().to_string())
        .collect()
}

/// `diary` with `TZ` set, its output.
fn diary_in_zone(server: std::net::SocketAddr, tz: &str, args: &[&str]) -> std::process::Output {
    diary_command(server, args)
        .env("TZ", tz)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn times_show_in_the_readers_zone_or_in_utc() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let server =
        Daemon::try_start_with_env(&file, "127.0.0.1:0", &[], &[("TZ", "Asia/Shanghai")]).unwrap();
    let o = run_diary(server.addr, &["write", "written in Shanghai 上海"], b"");
    assert!(o.status.success(), "{o:?}");
    // The file keeps the writer's zone, with its offset.
    let line = std::fs::read_to_string(&file).unwrap();
    let stamp = line
        .lines()
        .last()
        .unwrap()
        .split('\t')
        .nth(1)
        .unwrap()
        .to_string();
    assert!(stamp.ends_with("+08:00"), "{stamp}");
    let written = chrono::DateTime::parse_from_rfc3339(&stamp).unwrap();
    let shown = |offset_hours: i32| {
        let zone = chrono::FixedOffset::east_opt(offset_hours * 3600).unwrap();
        written
            .with_timezone(&zone)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    // New York is five hours behind UTC in November, Shanghai eight ahead.
    let ny = diary_in_zone(server.addr, "America/New_York", &["past"]);
    assert!(out(&ny).contains(&shown(-5)), "{}", out(&ny));
    let utc = diary_in_zone(server.addr, "America/New_York", &["--utc", "past"]);
    assert!(out(&utc).contains(&shown(0)), "{}", out(&utc));
    let sh = diary_in_zone(server.addr, "Asia/Shanghai", &["past"]);
    assert!(out(&sh).contains(&shown(8)), "{}", out(&sh));
    // JSON keeps the time as written.
    let json = diary_in_zone(server.addr, "America/New_York", &["past", "--json"]);
    assert!(out(&json).contains(&stamp), "{}", out(&json));
}

#[test]
fn until_and_since_take_ids_and_the_spans_dates_name() {
    let server = TestServer::start();
    for i in 1..=5 {
        run_diary(server.addr, &["write", &format!("entry {i}")], b"");
    }
    let ids = |args: &[&str]| -> Vec<String> {
        let o = run_diary(server.addr, args, b"");
        assert!(o.status.success(), "{args:?}: {o:?}");
        out(&o)
            .lines()
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&["past", "--until", "2"]), ["1", "2"]);
    assert_eq!(ids(&["past", "--since", "1", "--until", "3"]), ["2", "3"]);
    assert_eq!(ids(&["past", "-n", "1", "--until", "4"]), ["4"]);
    assert_eq!(ids(&["past", "--until", "today"]).len(), 5);
    assert!(ids(&["past", "--until", "yesterday"]).is_empty());
    assert_eq!(
        ids(&["past", "--since", "today", "--until", "3"]),
        ["1", "2", "3"]
    );
    assert_eq!(
        ids(&["--proto", "tcp", "past", "--until", "3 days ago"]).len(),
        0
    );
    let now = chrono::Local::now();
    for form in [
        now.format("%Y").to_string(),
        now.format("%Y-%m").to_string(),
        now.format("%Y-%m-%d").to_string(),
        now.format("%Y/%m/%d").to_string(),
    ] {
        assert_eq!(ids(&["past", "--until", &form]).len(), 5, "{form}");
        assert_eq!(ids(&["past", "--since", &form]).len(), 5, "{form}");
    }
    for bad in ["next tuesday", "2026-13", "", "5 fortnights ago"] {
        let o = run_diary(server.addr, &["past", "--until", bad], b"");
        assert_eq!(o.status.code(), Some(2), "{bad}: {o:?}");
        assert!(
            err(&o).contains("is not a date or an id"),
            "{bad}: {}",
            err(&o)
        );
    }
}

#[test]
fn follow_shows_context_first_and_takes_a_date() {
    let server = TestServer::start();
    for i in 1..=12 {
        run_diary(server.addr, &["write", &format!("before {i}")], b"");
    }
    let mut tail = diary_command(server.addr, &["follow", "-n", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tail_lines = LineFeed::new(tail.stdout.take().unwrap());
    let mut dated = diary_command(server.addr, &["follow", "--since", "today"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dated_lines = LineFeed::new(dated.stdout.take().unwrap());
    let context = tail_lines.until(Duration::from_secs(10), |l| l.ends_with("before 12"));
    assert_eq!(context.len(), 3, "{context:?}");
    assert!(context[0].ends_with("before 10"), "{context:?}");
    let all = dated_lines.until(Duration::from_secs(10), |l| l.ends_with("before 12"));
    assert_eq!(all.len(), 12, "{all:?}");
    run_diary(server.addr, &["write", "after"], b"");
    tail_lines.until(Duration::from_secs(10), |l| l.ends_with("after"));
    dated_lines.until(Duration::from_secs(10), |l| l.ends_with("after"));
    let _ = tail.kill();
    let _ = dated.kill();
    let _ = tail.wait();
    let _ = dated.wait();
}

#[test]
fn ids_line_up_past_four_digits() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    // A diary begun by hand: 10 000 entries (an older version's format).
    let mut text = String::new();
    for id in 1..=10_000 {
        text.push_str(&format!("{id}\t2026-11-25T06:00:00.000+00:00\tline {id}\n"));
    }
    std::fs::write(&file, text).unwrap();
    let server = Daemon::start(&file, &[]);
    let o = run_diary(server.addr, &["--utc", "past", "--since", "9996"], b"");
    assert!(o.status.success(), "{o:?}");
    let shown = out(&o);
    let columns: Vec<usize> = shown.lines().map(|l| l.find("2026").unwrap()).collect();
    assert_eq!(columns, [7, 7, 7, 7], "{shown}");
    assert!(
        shown
            .lines()
            .last()
            .unwrap()
            .starts_with("10000  2026-11-25 06:00:00  line")
    );
}

#[test]
fn tags_and_searches_narrow_what_past_and_follow_show() {
    let server = TestServer::start();
    for text in [
        "ran 5k #Health #run",
        "@Health check",
        "晚饭 #健康 #health",
        "Quarterly review",
        "quarterly taxes #money",
    ] {
        assert!(
            run_diary(server.addr, &["write", text], b"")
                .status
                .success()
        );
    }
    let shown = |args: &[&str]| shown_texts(server.addr, args);
    let tags = run_diary(server.addr, &["tags"], b"");
    let tags: Vec<String> = out(&tags).lines().map(|l| l.trim().to_string()).collect();
    assert_eq!(tags, ["2  #health", "1  #money", "1  #run", "1  #健康"]);
    assert_eq!(
        shown(&["past", "--tag", "health"]),
        ["ran 5k #Health #run", "晚饭 #健康 #health"]
    );
    assert_eq!(
        shown(&["past", "--tag", "#HEALTH", "--tag", "run"]),
        ["ran 5k #Health #run"]
    );
    assert_eq!(shown(&["past", "--tag", "健康"]), ["晚饭 #健康 #health"]);
    assert_eq!(shown(&["past", "--grep", "Health"]).len(), 2);
    assert_eq!(
        shown(&["past", "-i", "--grep", "@health"]),
        ["@Health check"]
    );
    assert_eq!(shown(&["past", "-i", "--grep", "QUARTERLY"]).len(), 2);
    assert_eq!(
        shown(&[
            "--proto",
            "tcp",
            "past",
            "--grep",
            "quarterly",
            "--grep",
            "taxes"
        ]),
        ["quarterly taxes #money"]
    );
    assert_eq!(
        shown(&["past", "--regex", r"^\S+ \d+k"]),
        ["ran 5k #Health #run"]
    );
    assert_eq!(
        shown(&["past", "-i", "--regex", "^q.*(review|taxes)"]).len(),
        2
    );
    for (bad, says) in [("(", "bad regex"), (r"\w{1000}{1000}", "too big")] {
        let o = run_diary(server.addr, &["past", "--regex", bad], b"");
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        assert!(
            err(&o).contains("bad-argument") && err(&o).contains(says),
            "{}",
            err(&o)
        );
    }
    let o = run_diary(server.addr, &["past", "--tag", "not a tag"], b"");
    assert_eq!(o.status.code(), Some(2), "{o:?}");

    // follow shows only what passes the same filters.
    let mut follower = diary_command(server.addr, &["follow", "-n", "1", "--tag", "health"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = LineFeed::new(follower.stdout.take().unwrap());
    let context = lines.until(Duration::from_secs(10), |l| l.contains("晚饭"));
    assert_eq!(context.len(), 1, "{context:?}");
    for text in ["no tag here", "#health again", "#healthy is another tag"] {
        run_diary(server.addr, &["write", text], b"");
    }
    run_diary(server.addr, &["write", "#Health last"], b"");
    let seen = lines.until(Duration::from_secs(10), |l| l.ends_with("#Health last"));
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].ends_with("#health again"), "{seen:?}");
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn each_entry_records_who_wrote_it() {
    let server = TestServer::start();
    let o = run_diary(
        server.addr,
        &["--name", "ann@laptop", "write", "from ann"],
        b"",
    );
    assert!(o.status.success(), "{o:?}");
    let o = run_diary(
        server.addr,
        &["--name", "bob", "--proto", "tcp", "write", "from bob"],
        b"",
    );
    assert!(o.status.success(), "{o:?}");
    // An import, pipelined over TCP, is recorded as its writer's too.
    let o = run_diary(
        server.addr,
        &["--name", "bob", "write"],
        "imported by bob\n".as_bytes(),
    );
    assert!(o.status.success(), "{o:?}");
    // Plain nc says nothing of who it is.
    let mut nc = Tcp::connect(server.addr);
    nc.write("from nc");
    let o = run_diary(server.addr, &["past"], b"");
    let shown = out(&o);
    let lines: Vec<&str> = shown.lines().collect();
    assert!(lines[0].ends_with("[ann@laptop] from ann"), "{shown}");
    assert!(lines[1].ends_with("[bob] from bob"), "{shown}");
    assert!(lines[2].ends_with("[bob] imported by bob"), "{shown}");
    assert!(lines[3].ends_with("  from nc"), "{shown}");
    let o = run_diary(server.addr, &["past", "--from", "bob"], b"");
    assert_eq!(out(&o).lines().count(), 2, "{}", out(&o));
    let o = run_diary(
        server.addr,
        &["past", "--json", "--from", "ann@laptop"],
        b"",
    );
    assert!(out(&o).contains(r#""author":"ann@laptop""#), "{}", out(&o));
    // The file says it as an attribute a person can grep.
    let file = std::fs::read_to_string(&server.path).unwrap();
    assert!(file.contains("\tfrom ann\treq="), "{file}");
    assert!(
        file.lines().any(|l| l.ends_with("\tby=ann@laptop")),
        "{file}"
    );
    let o = run_diary(server.addr, &["--name", "has space", "write", "x"], b"");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}

#[test]
fn an_export_imports_into_another_diary_byte_for_byte_and_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let first_file = dir.path().join("first.log");
    let first =
        Daemon::try_start_with_env(&first_file, "127.0.0.1:0", &[], &[("TZ", "Asia/Shanghai")])
            .unwrap();
    for (name, text) in [
        ("ann@laptop", "今天下雨了 #weather"),
        ("bob", "two\nlines\twith a tab and a \\ backslash"),
        ("ann@laptop", "  leading spaces kept"),
    ] {
        let o = run_diary(
            first.addr,
            &["--name", name, "--proto", "udp", "write", text],
            b"",
        );
        assert!(o.status.success(), "{o:?}");
    }
    let export = run_diary(first.addr, &["export"], b"");
    assert!(export.status.success(), "{export:?}");
    let jsonl = dir.path().join("export.jsonl");
    std::fs::write(&jsonl, &export.stdout).unwrap();

    // The second diary already has an entry, so ids differ.
    let second = TestServer::start();
    run_diary(
        second.addr,
        &["--name", "carol", "write", "already here"],
        b"",
    );
    let jsonl_arg = jsonl.to_str().unwrap();
    for round in 0..2 {
        let o = run_diary(second.addr, &["--name", "carol", "import", jsonl_arg], b"");
        assert!(o.status.success(), "round {round}: {o:?}");
    }
    let fields = |path: &std::path::Path| -> Vec<(String, String, String)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                let by = f.iter().find_map(|a| a.strip_prefix("by=")).unwrap_or("-");
                (f[1].to_string(), by.to_string(), f[2].to_string())
            })
            .collect()
    };
    let original = fields(&first_file);
    let imported = fields(&second.path);
    assert_eq!(
        imported.len(),
        4,
        "imported once though run twice: {imported:?}"
    );
    assert_eq!(
        imported[1..],
        original[..],
        "times, authors and text, byte for byte"
    );
    assert!(original.iter().all(|(t, _, _)| t.ends_with("+08:00")));
    let file = std::fs::read_to_string(&second.path).unwrap();
    assert_eq!(file.matches("\timported=carol").count(), 3, "{file}");
    // The importer's own export matches the first's, ids aside.
    let again = run_diary(second.addr, &["export", "--since", "1"], b"");
    let strip_id = |s: &[u8]| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(s)
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("id");
                // The second diary says who imported each entry into it.
                if let Some(by) = v.as_object_mut().unwrap().remove("imported_by") {
                    assert_eq!(by, "carol", "{l}");
                }
                v
            })
            .collect()
    };
    assert_eq!(strip_id(&again.stdout), strip_id(&export.stdout));
    // Markdown and text exports, read by people.
    let md = run_diary(
        second.addr,
        &["--utc", "export", "--format", "md", "--from", "bob"],
        b"",
    );
    let md = out(&md);
    assert!(md.starts_with("# Diary\n\n## "), "{md}");
    assert!(md.contains("(bob, imported by carol) two\n  lines"), "{md}");
    let txt = run_diary(
        second.addr,
        &["export", "--format", "txt", "--tag", "weather"],
        b"",
    );
    assert!(
        out(&txt).contains("[ann@laptop, imported by carol] 今天下雨了 #weather"),
        "{}",
        out(&txt)
    );
}

#[test]
fn dates_select_imported_entries_by_their_own_times() {
    let server = TestServer::start();
    run_diary(server.addr, &["write", "written today"], b"");
    let old = "{\"time\":\"2020-03-01T09:00:00.000+00:00\",\"text\":\"from 2020\",\"author\":\"ann\"}\n\
               {\"time\":\"2019-12-31T23:59:59Z\",\"text\":\"from 2019\"}\n\
               {\"time\":\"not a time\",\"text\":\"skipped\"}\n";
    let o = run_diary(server.addr, &["import", "-"], old.as_bytes());
    assert_eq!(o.status.code(), Some(1), "one line refused: {o:?}");
    assert!(
        err(&o).contains("- line 3: \"not a time\" is not an RFC 3339 time"),
        "{}",
        err(&o)
    );
    run_diary(server.addr, &["write", "written today again"], b"");
    let texts = |args: &[&str]| shown_texts(server.addr, args);
    assert_eq!(
        texts(&["--utc", "past", "--since", "2020", "--until", "2020"]),
        ["[ann, imported] from 2020"]
    );
    assert_eq!(texts(&["past", "--until", "2020-12-31"]).len(), 2);
    assert_eq!(
        texts(&["past", "--since", "today"]),
        ["written today", "written today again"]
    );
}

#[test]
fn amend_and_delete_append_records_that_past_and_follow_show() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("diary.log");
    let mut server = Daemon::start(&file, &[]);
    for text in ["first", "a typo: teh cat", "to be deleted", "last"] {
        run_diary(server.addr, &["write", text], b"");
    }
    let mut follower = diary_command(server.addr, &["follow", "--since", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let followed = LineFeed::new(follower.stdout.take().unwrap());
    // From entry 4 on, whenever it connects: the next entry reaches it.
    run_diary(server.addr, &["write", "hello follower"], b"");
    followed.until(Duration::from_secs(10), |l| l.ends_with("hello follower"));

    let o = run_diary(server.addr, &["amend", "2", "a typo: the cat"], b"");
    assert!(o.status.success(), "{o:?}");
    assert!(out(&o).starts_with("amended #2"), "{}", out(&o));
    let o = run_diary(server.addr, &["--proto", "tcp", "delete", "3"], b"");
    assert!(o.status.success(), "{o:?}");
    let seen = followed.until(Duration::from_secs(10), |l| l.contains("#3 deleted"));
    assert!(
        seen[0].contains("(#2 now reads) a typo: the cat"),
        "{seen:?}"
    );

    let texts = |args: &[&str]| shown_texts(server.addr, args);
    let now = [
        "first",
        "a typo: the cat (edited)",
        "last",
        "hello follower",
    ];
    assert_eq!(texts(&["past"]), now);
    assert_eq!(texts(&["--proto", "tcp", "past"]), now);
    assert_eq!(texts(&["past", "-n", "2"]), now[2..]);
    assert_eq!(texts(&["past", "--grep", "the cat"]), [now[1]]);
    assert!(texts(&["past", "--grep", "teh"]).is_empty());
    assert!(texts(&["past", "--grep", "deleted"]).is_empty());
    let versions = texts(&["past", "--versions"]);
    assert_eq!(versions.len(), 7, "{versions:?}");
    assert_eq!(versions[1], "a typo: teh cat");
    assert_eq!(versions[5], "(#2 now reads) a typo: the cat");
    // Wrong targets are refused, and nothing is appended for them.
    for (args, says) in [
        (&["amend", "99", "x"][..], "no entry #99"),
        (&["delete", "3"], "is deleted"),
        (&["amend", "6", "x"], "is an amendment or a deletion"),
    ] {
        let o = run_diary(server.addr, args, b"");
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        assert!(err(&o).contains(says), "{args:?}: {}", err(&o));
    }
    // The file is append-only: the old text is still there, the new after it.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\ta typo: teh cat\t"), "{text}");
    assert!(text.contains("\tamends=2"), "{text}");
    assert!(text.contains("\tdeletes=3"), "{text}");
    // After a restart, the same view.
    let _ = follower.kill();
    let _ = follower.wait();
    let _ = server.child.kill();
    let _ = server.child.wait();
    server = Daemon::start(&file, &[]);
    assert_eq!(shown_texts(server.addr, &["past"]), now);
    // An editor's edit, through $EDITOR.
    let o = diary_command(server.addr, &["amend", "1", "--edit"])
        .env("EDITOR", "sed -i s/first/first,\\ edited/")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let o = run_diary(server.addr, &["past", "-n", "4"], b"");
    assert!(out(&o).contains("first, edited (edited)"), "{}", out(&o));
}

#[test]
fn a_paragraph_written_in_the_editor_is_one_entry() {
    let server = TestServer::start();
    for proto in ["udp", "tcp"] {
        let o = diary_command(server.addr, &["--proto", proto, "write", "--edit"])
            .env("EDITOR", "printf 'para one\\n\\npara two, 中文\\n' >")
            .env_remove("VISUAL")
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
    }
    let entries = file_entries(&server.path);
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(
        entries
            .iter()
            .all(|(_, t)| t == "para one\n\npara two, 中文"),
        "{entries:?}"
    );
    let o = run_diary(server.addr, &["--utc", "past", "-n", "1"], b"");
    let shown = out(&o);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    assert!(
        lines[1].trim().is_empty() && lines[2].trim_start() == "para two, 中文",
        "{shown}"
    );
    assert_eq!(
        lines[0].find("para one"),
        lines[2].find("para two"),
        "indented under it: {shown}"
    );
}

#[test]
fn an_export_holds_every_version_of_an_amended_entry() {
    let server = TestServer::start();
    run_diary(server.addr, &["--name", "ann", "write", "teh first"], b"");
    run_diary(server.addr, &["write", "untouched"], b"");
    run_diary(
        server.addr,
        &["--name", "bob", "amend", "1", "the first"],
        b"",
    );
    run_diary(
        server.addr,
        &["--name", "ann", "amend", "1", "the first!"],
        b"",
    );
    let o = run_diary(server.addr, &["export"], b"");
    let lines: Vec<serde_json::Value> = out(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["text"], "the first!");
    assert_eq!(lines[0]["author"], "ann");
    let versions: Vec<&str> = lines[0]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["text"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["teh first", "the first", "the first!"]);
    assert_eq!(lines[0]["versions"][1]["author"], "bob");
    assert!(lines[1].get("versions").is_none());
}

#[test]
fn an_export_keeps_the_order_around_amended_entries() {
    let server = TestServer::start();
    for text in ["before", "teh second", "between", "teh fourth", "after"] {
        run_diary(server.addr, &["write", text], b"");
    }
    run_diary(server.addr, &["amend", "2", "the second"], b"");
    run_diary(server.addr, &["amend", "4", "the fourth"], b"");
    run_diary(server.addr, &["amend", "4", "the fourth!"], b"");
    let o = run_diary(server.addr, &["export"], b"");
    assert!(o.status.success(), "{o:?}");
    let lines: Vec<serde_json::Value> = out(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let texts: Vec<&str> = lines.iter().map(|l| l["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        ["before", "the second", "between", "the fourth!", "after"]
    );
    let ids: Vec<u64> = lines.iter().map(|l| l["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    let versions = |i: usize| -> Vec<&str> {
        lines[i]["versions"]
            .as_array()
            .map(|v| v.iter().map(|v| v["text"].as_str().unwrap()).collect())
            .unwrap_or_default()
    };
    assert_eq!(versions(0), Vec::<&str>::new());
    assert_eq!(versions(1), ["teh second", "the second"]);
    assert_eq!(versions(2), Vec::<&str>::new());
    assert_eq!(versions(3), ["teh fourth", "the fourth", "the fourth!"]);
    assert_eq!(versions(4), Vec::<&str>::new());
}
