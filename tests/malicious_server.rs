//! Issue 26, 9: a server that is not diaryd (an impostor, or anything else
//! listening where the client was pointed) cannot make the client hold
//! what it sends without end. Alone in its test binary, so that the
//! memory figure of the children it waited for is this client's.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;

/// A "server" that answers any request with one line of `bytes` bytes.
fn endless_line(bytes: usize) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..bytes >> 20 {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
            }
            let _ = stream.write_all(b"\n");
        }
    });
    addr
}

fn children_max_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage), 0);
        usage.ru_maxrss
    }
}

#[test]
fn a_300_mb_line_from_a_server_is_refused_in_bounded_memory() {
    let server = endless_line(300 << 20);
    for args in [
        &["--proto", "tcp", "past"][..],
        &["--proto", "tcp", "write", "hello"],
    ] {
        let out = common::run_diary(server, args, b"");
        assert!(!out.status.success(), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("over 8 MiB"), "{args:?}: {stderr}");
    }
    let rss = children_max_rss_kib();
    assert!(rss < 64 * 1024, "the client grew to {rss} KiB");
}
