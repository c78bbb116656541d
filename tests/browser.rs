//! The page in a real browser (headless Chromium over WebDriver), as a
//! person uses it from a phone: log in with the printed URL, write Chinese
//! and emoji, see a terminal's line arrive live, search, amend, delete;
//! entries that look like HTML stay text; a server killed and restarted
//! under an open page loses and doubles nothing, and lines typed while it
//! was down are stored once each when it is back.

mod common;

use common::browser::Browser;
use common::web::{WebDaemon, free_port};
use common::{file_entries, run_diary};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

fn entry_texts(browser: &Browser) -> Vec<String> {
    browser.texts("#entries .entry:not(.pending) .text")
}

fn live(browser: &Browser) {
    browser.wait("the page to be live", WAIT, |b| {
        b.texts("#status") == ["live"]
    });
}

/// Texts in the diary as `diary past` shows them (amended, deleted gone).
fn past_texts(server: std::net::SocketAddr) -> Vec<String> {
    let out = run_diary(server, &["past", "--json"], b"");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn save_screenshot(browser: &Browser, name: &str) {
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(dir.join(name), &png).unwrap();
    // `DIARY_UPDATE_SCREENSHOT=1 cargo test --test browser` refreshes the README's.
    if std::env::var_os("DIARY_UPDATE_SCREENSHOT").is_some() {
        std::fs::write(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("docs")
                .join(name),
            &png,
        )
        .unwrap();
    }
}

#[test]
fn a_person_writes_reads_searches_and_edits_from_the_page() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.log");
    let web = WebDaemon::start(&file);
    run_diary(web.addr, &["write", "written before the page opened"], b"");
    browser.goto(&web.login_url);
    live(&browser);
    assert_eq!(entry_texts(&browser), ["written before the page opened"]);
    // The session cookie is out of the page's reach, and the token out of its address.
    let seen = browser.run("return [document.cookie, location.href];", json!([]));
    assert_eq!(seen[0], "", "HttpOnly");
    assert!(!seen[1].as_str().unwrap().contains('#'), "{seen}");

    browser.type_text("#text", "今天下雨了，在家写日记 ☔🎉", "\u{E007}");
    browser.wait("the entry to be stored", WAIT, |_| {
        file_entries(&file).len() == 2
    });
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(
        stored.contains("\t今天下雨了，在家写日记 ☔🎉\treq=w"),
        "{stored}"
    );
    assert!(
        stored.contains("\tby=web-"),
        "the browser session is the author: {stored}"
    );

    // A line from another terminal appears without a reload.
    run_diary(
        web.addr,
        &["--proto", "udp", "write", "from the terminal 终端"],
        b"",
    );
    browser.wait("the terminal's line", WAIT, |b| {
        entry_texts(b).last().map(String::as_str) == Some("from the terminal 终端")
    });

    // Entries that look like HTML are shown as text and never run.
    let img = "<img src=x onerror=\"window.__xss=1\">";
    let script = "<script>window.__xss=2</script>";
    run_diary(web.addr, &["write", img], b"");
    run_diary(web.addr, &["write", script], b"");
    browser.wait("the HTML-like entries", WAIT, |b| entry_texts(b).len() == 5);
    let texts = entry_texts(&browser);
    assert_eq!(&texts[3..], [img, script]);
    let injected = browser.run(
        "return [window.__xss === undefined, document.querySelectorAll('#entries img, #entries script').length];",
        json!([]),
    );
    assert_eq!(injected, json!([true, 0]));

    // A paragraph is one entry.
    browser.click("#paragraph");
    browser.type_text("#text", "第一行\n第二行", "");
    browser.click("#send");
    browser.wait("the paragraph", WAIT, |_| file_entries(&file).len() == 6);
    assert_eq!(past_texts(web.addr).last().unwrap(), "第一行\n第二行");
    browser.wait("the paragraph shown", WAIT, |b| {
        entry_texts(b).last().map(String::as_str) == Some("第一行\n第二行")
    });

    // Search: words, with the same matching as `diary past`.
    browser.click("#search-toggle");
    browser.type_text("#search-words", "下雨", "\u{E007}");
    browser.wait("the search result", WAIT, |b| {
        entry_texts(b) == ["今天下雨了，在家写日记 ☔🎉"]
    });
    browser.click("#search-clear");
    browser.wait("the timeline again", WAIT, |b| entry_texts(b).len() == 6);

    // Amend the terminal's line, delete the script one.
    browser.run(
        "document.querySelector('#entries .entry[data-id=\"3\"] .edit').click();",
        json!([]),
    );
    browser.run(
        "const box = document.querySelector('#entries .entry[data-id=\"3\"] textarea'); box.value = 'amended from the page';",
        json!([]),
    );
    browser.run(
        "document.querySelector('#entries .entry[data-id=\"3\"] .editor button').click();",
        json!([]),
    );
    browser.wait("the amendment", WAIT, |b| {
        entry_texts(b).contains(&"amended from the page".to_string())
    });
    let edited = browser.texts("#entries .entry[data-id=\"3\"] .edited");
    assert_eq!(edited, ["(edited)"]);
    browser.run(
        "document.querySelector('#entries .entry[data-id=\"5\"] .delete').click();",
        json!([]),
    );
    browser.accept_dialog();
    browser.wait("the deletion", WAIT, |b| entry_texts(b).len() == 5);
    let past = past_texts(web.addr);
    assert!(
        past.contains(&"amended from the page".to_string()),
        "{past:?}"
    );
    assert!(!past.contains(&script.to_string()), "{past:?}");
    // The phone-sized window scrolls only up and down.
    let widths = browser.run(
        "return [document.documentElement.scrollWidth, window.innerWidth];",
        json!([]),
    );
    assert!(widths[0].as_u64() <= widths[1].as_u64(), "{widths}");
    save_screenshot(&browser, "web-page.png");
}

#[test]
fn an_open_page_survives_a_kill_9_and_lines_typed_meanwhile_are_stored_once() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.log");
    let listen = format!("127.0.0.1:{}", free_port());
    let web_addr = format!("127.0.0.1:{}", free_port());
    let web = WebDaemon::start_at(&file, &listen, &web_addr, &[]);
    for n in 1..=3 {
        run_diary(web.addr, &["write", &format!("before {n}")], b"");
    }
    browser.goto(&web.login_url);
    live(&browser);
    let mut daemon = web.daemon;
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    browser.wait("the page to notice", WAIT, |b| {
        b.texts("#status") != ["live"]
    });
    // Typed while the server is down: kept in the browser, shown as waiting.
    browser.type_text("#text", "typed while down 1", "\u{E007}");
    browser.type_text("#text", "typed while down 2 🙂", "\u{E007}");
    browser.wait("the outbox to say so", WAIT, |b| {
        b.texts("#waiting")[0].starts_with("2 entries kept in this browser")
    });
    let web = WebDaemon::start_at(&file, &listen, &web_addr, &[]);
    // Written by a terminal before the page is back: it must not be missed.
    run_diary(web.addr, &["write", "while the page reconnects"], b"");
    live(&browser);
    browser.wait("everything on the page", WAIT, |b| {
        entry_texts(b).len() == 6
    });
    run_diary(web.addr, &["write", "after the restart"], b"");
    browser.wait("the live line after the restart", WAIT, |b| {
        entry_texts(b).len() == 7
    });
    let mut on_page = entry_texts(&browser);
    let mut in_file: Vec<String> = file_entries(&file).into_iter().map(|e| e.1).collect();
    assert_eq!(in_file.len(), 7, "each line once: {in_file:?}");
    for typed in ["typed while down 1", "typed while down 2 🙂"] {
        assert_eq!(
            in_file.iter().filter(|t| *t == typed).count(),
            1,
            "{in_file:?}"
        );
    }
    on_page.sort();
    in_file.sort();
    assert_eq!(on_page, in_file, "nothing missed or doubled on the page");
    assert_eq!(browser.texts("#waiting"), [""]);
    let ids = browser.run(
        "return Array.from(document.querySelectorAll('#entries .entry'), e => Number(e.dataset.id));",
        json!([]),
    );
    assert_eq!(ids, json!([1, 2, 3, 4, 5, 6, 7]), "in id order");
}

#[test]
fn times_are_shown_and_searched_in_the_readers_time_zone() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let web = WebDaemon::start(&dir.path().join("d.log"));
    // 23:30 UTC on 6 December is 07:30 on 7 December in Shanghai.
    let mut tcp = common::Tcp::connect(web.addr);
    tcp.send("/import 2026-12-06T23:30:00+00:00 - late in London, early in Shanghai");
    assert!(tcp.line().starts_with("ok 1 "));
    tcp.send("/import 2026-12-05T12:00:00+00:00 - two days before");
    assert!(tcp.line().starts_with("ok 2 "));
    browser.set_time_zone("Asia/Shanghai");
    browser.goto(&web.login_url);
    live(&browser);
    let shown = browser.texts("#entries .entry[data-id=\"1\"] time");
    assert!(
        shown[0].contains("7:30") && (shown[0].contains("Dec 7") || shown[0].contains("12月7")),
        "shown in Shanghai's time: {shown:?}"
    );
    // A day picked in the search is the reader's day, not UTC's.
    browser.click("#search-toggle");
    browser.run(
        "document.querySelector('#search-since').value = '2026-12-07';\
         document.querySelector('#search-until').value = '2026-12-07';\
         document.querySelector('#search button[type=submit]').click();",
        json!([]),
    );
    browser.wait("the day's entries", WAIT, |b| {
        b.texts("#results") != [""] && !b.texts("#results")[0].is_empty()
    });
    assert_eq!(entry_texts(&browser), ["late in London, early in Shanghai"]);
}
