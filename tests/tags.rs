//! Issue 26, 4: a request tag is its writer's. Another device cannot claim
//! a tag in advance and have the victim's write answered with its entry,
//! nor read back what another device's tag stored; a retry whose text
//! differs from what its tag stored gets an error, never "stored".

mod common;

use common::Daemon;
use diary::client::secure::{Credentials, SecureStream};
use diary::client::{Options, Pin};
use diary::secure::keys::KeyPair;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One request over a new encrypted connection as `device`; its reply.
fn ask(server: &Daemon, device: &KeyPair, request: &str) -> Vec<String> {
    let creds = Credentials {
        own: device.clone(),
        server: server.key.parse().unwrap(),
        pin: Pin::Given,
    };
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut session = SecureStream::connect(stream, &creds, &Options::default(), deadline).unwrap();
    writeln!(session, "{request}").unwrap();
    let mut lines = Vec::new();
    let mut reader = BufReader::new(&mut session);
    // An enveloped reply: `id TAG`, then one line.
    for _ in 0..2 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        lines.push(line.trim_end().to_string());
    }
    lines
}

#[test]
fn a_tag_is_its_writers_and_a_retry_must_match_it() {
    let dir = tempfile::tempdir().unwrap();
    let (laptop, mallory) = (KeyPair::generate(), KeyPair::generate());
    let allow = dir.path().join("allow");
    std::fs::write(
        &allow,
        format!(
            "{} laptop all\n{} mallory write\n",
            laptop.public, mallory.public
        ),
    )
    .unwrap();
    let file = dir.path().join("d.log");
    let args = ["--fsync", "never", "--allow", allow.to_str().unwrap()];
    let server = Daemon::start(&file, &args);

    let junk = ask(&server, &mallory, "/id victim-tag-1 junk");
    assert!(junk[1].starts_with("ok 1 "), "{junk:?}");
    let real = ask(&server, &laptop, "/id victim-tag-1 real");
    assert!(
        real[1].starts_with("ok 2 "),
        "stored, not told #1: {real:?}"
    );
    // Its retry is answered from its own write.
    let retry = ask(&server, &laptop, "/id victim-tag-1 real");
    assert_eq!(retry, real);
    // Another text under the same tag is an error, not a false "stored".
    let other = ask(&server, &laptop, "/id victim-tag-1 something else");
    assert!(
        other[1].starts_with("err bad-argument tag victim-tag-1 was used for another entry (#2)"),
        "{other:?}"
    );

    // Plaintext on this machine: the name a client gives is its writer.
    let mut a = common::Tcp::connect(server.addr);
    a.send("/id plain-tag by=alice a line of alice's");
    assert_eq!(a.line().trim_end().to_string(), "id plain-tag");
    let alice = a.line().trim_end().to_string();
    a.send("/id plain-tag by=bob a line of bob's");
    assert_eq!(a.line().trim_end().to_string(), "id plain-tag");
    let bob = a.line().trim_end().to_string();
    assert!(
        alice.starts_with("ok 3 ") && bob.starts_with("ok 4 "),
        "{alice} {bob}"
    );

    // After a restart the memory, rebuilt from the file, is still per writer.
    drop(a);
    server.terminate();
    let server = Daemon::start(&file, &args);
    assert_eq!(ask(&server, &laptop, "/id victim-tag-1 real"), real);
    assert_eq!(ask(&server, &mallory, "/id victim-tag-1 junk"), junk);
    let mut a = common::Tcp::connect(server.addr);
    a.send("/id plain-tag by=bob a line of bob's");
    assert_eq!(a.line().trim_end().to_string(), "id plain-tag");
    assert_eq!(a.line().trim_end().to_string(), bob);
    let texts: Vec<String> = common::file_entries(&file)
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert_eq!(
        texts,
        ["junk", "real", "a line of alice's", "a line of bob's"]
    );
}
