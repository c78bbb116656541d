//! The ceiling: a bare single-thread `mio` echo server on one port, UDP and
//! TCP, with no parsing and no store. What it sustains under a load is what
//! the loop and the kernel alone can do; diaryd's figures are given as a
//! ratio to it.

use diary::datagrams::{self, RecvBatch};
use diary::framing::OutBuf;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{self, Read};
use std::net::SocketAddr;

const UDP: Token = Token(usize::MAX - 1);
const LISTENER: Token = Token(usize::MAX - 2);

struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet written back.
    pending: OutBuf,
}

/// Binds UDP and TCP on `addr` (port 0: any free one, shared) and returns
/// the address and a function that serves forever.
pub fn bind(addr: SocketAddr) -> io::Result<(SocketAddr, impl FnOnce() -> io::Result<()>)> {
    let mut listener = diary::tcp::listen(addr)?;
    let local = listener.local_addr()?;
    let mut udp = UdpSocket::bind(local)?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    poll.registry()
        .register(&mut udp, UDP, Interest::READABLE)?;
    Ok((local, move || serve(poll, listener, udp)))
}

fn serve(mut poll: Poll, listener: TcpListener, udp: UdpSocket) -> io::Result<()> {
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<Conn> = Slab::new();
    let mut buf = vec![0u8; 65_536];
    let mut batch = RecvBatch::default();
    loop {
        poll.poll(&mut events, None)?;
        for event in events.iter() {
            match event.token() {
                UDP => {
                    // Echo every waiting datagram, in batches as diaryd
                    // reads and answers them; one that the socket will not
                    // take now is dropped, as a loaded server would.
                    while let Ok(n) = batch.recv(&udp) {
                        let mut sent = 0;
                        while sent < n {
                            let echoes = (sent..n).map(|i| {
                                let (datagram, from) = batch.get(i);
                                (from, datagram)
                            });
                            sent += datagrams::send(&udp, echoes).unwrap_or(1);
                        }
                    }
                }
                LISTENER => {
                    while let Ok((mut stream, _)) = listener.accept() {
                        let _ = stream.set_nodelay(true);
                        let entry = conns.vacant_entry();
                        poll.registry().register(
                            &mut stream,
                            Token(entry.key()),
                            Interest::READABLE | Interest::WRITABLE,
                        )?;
                        entry.insert(Conn {
                            stream,
                            pending: OutBuf::default(),
                        });
                    }
                }
                Token(key) => {
                    if let Some(conn) = conns.get_mut(key)
                        && !echo(conn, &mut buf)
                    {
                        let mut conn = conns.remove(key);
                        let _ = poll.registry().deregister(&mut conn.stream);
                    }
                }
            }
        }
    }
}

/// Reads what the connection sent and writes it back, as far as the socket
/// allows; false once the connection is finished.
fn echo(conn: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        if conn.pending.flush_to(&mut conn.stream).is_err() {
            return false;
        }
        if conn.pending.queued() > 0 {
            return true;
        }
        match conn.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                conn.pending.buf.extend_from_slice(&buf[..n]);
                if n < buf.len() {
                    // The socket is empty and Linux raises a new edge for
                    // what comes next: skip the read that would only say
                    // "would block", as diaryd does.
                    return conn.pending.flush_to(&mut conn.stream).is_ok();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}
