//! Writers that retry each line with its tag until it is acknowledged,
//! across crashes, restarts and files saved over the diary, and the check
//! that every acknowledged line is stored exactly once with its id.

use super::ack_id;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What one writer had acknowledged: tag → (id, text).
pub type Acked = HashMap<String, (u64, String)>;

/// Writes lines `0..` tagged `{who}-{i}` over UDP or TCP, each retried with
/// its tag until acknowledged, until `stop`; the line in flight is still
/// finished (the server comes back).
pub fn retrying_writer(addr: SocketAddr, who: &str, tcp: bool, stop: Arc<AtomicBool>) -> Acked {
    let mut acked = Acked::new();
    let mut link: Option<(TcpStream, BufReader<TcpStream>)> = None;
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(150)))
        .unwrap();
    let give_up = Instant::now() + Duration::from_secs(120);
    for i in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let tag = format!("{who}-{i}");
        let text = format!("chaos {who} line {i} 日记");
        let request = format!("/id {tag} {text}\n");
        let expected = format!("id {tag}");
        let id = loop {
            assert!(Instant::now() < give_up, "{tag} never acknowledged");
            let reply = if tcp {
                tcp_attempt(addr, &mut link, &request)
            } else {
                udp_attempt(&udp, addr, &request, &expected)
            };
            match reply {
                Some(lines) if lines[0] == expected && lines[1].starts_with("ok ") => {
                    break ack_id(&lines[1]);
                }
                // err io while the disk is gone: not stored; send it again.
                Some(lines) if lines[0] == expected && lines[1].starts_with("err io") => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Some(lines) if lines[0] != expected => {} // a late reply to an earlier try
                Some(lines) => panic!("{tag}: unexpected reply {lines:?}"),
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        if let Some((earlier, _)) = acked.insert(tag.clone(), (id, text)) {
            panic!("{tag} acknowledged twice: {earlier} and {id}");
        }
    }
    acked
}

fn udp_attempt(
    socket: &UdpSocket,
    addr: SocketAddr,
    request: &str,
    expected: &str,
) -> Option<Vec<String>> {
    socket.send_to(request.as_bytes(), addr).ok()?;
    let mut buf = [0u8; 2048];
    loop {
        let n = socket.recv(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.first().map(String::as_str) == Some(expected) {
            return Some(lines);
        }
    }
}

/// One try on the current connection (made if needed); `None` and a new
/// connection next time when anything goes wrong.
fn tcp_attempt(
    addr: SocketAddr,
    link: &mut Option<(TcpStream, BufReader<TcpStream>)>,
    request: &str,
) -> Option<Vec<String>> {
    if link.is_none() {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        let reader = BufReader::new(stream.try_clone().ok()?);
        *link = Some((stream, reader));
    }
    let (stream, reader) = link.as_mut().expect("made above");
    let result = (|| {
        stream.write_all(request.as_bytes()).ok()?;
        let mut lines = Vec::new();
        for _ in 0..2 {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(n) if n > 0 => lines.push(line.trim_end().to_string()),
                _ => return None,
            }
        }
        Some(lines)
    })();
    if result.is_none() {
        *link = None;
    }
    result
}

/// Every acknowledged line is among `entries` (a diary's, from some id
/// on) once, with its id; no line is there twice; ids are dense; nothing
/// is there that was not acknowledged. The number of acknowledged lines.
pub fn check_exactly_once(entries: &[(u64, String)], acked: &[Acked]) -> usize {
    let first = entries.first().map_or(1, |(id, _)| *id);
    for (i, (id, _)) in entries.iter().enumerate() {
        assert_eq!(*id, first + i as u64, "ids are dense");
    }
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for (id, text) in entries {
        if let Some(first) = seen.insert(text, *id) {
            panic!("{text:?} stored twice: #{first} and #{id}");
        }
    }
    let mut total = 0;
    for writer in acked {
        for (tag, (id, text)) in writer {
            assert_eq!(
                seen.get(text.as_str()),
                Some(id),
                "{tag}: {text:?} acknowledged as #{id}"
            );
            total += 1;
        }
    }
    assert_eq!(
        total,
        entries.len(),
        "nothing stored that was not acknowledged"
    );
    total
}
