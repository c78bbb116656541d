//! The ceiling: a bare single-thread `mio` echo server on one port, UDP and
//! TCP, with no parsing and no store. What it sustains under a load is what
//! the loop and the kernel alone can do; diaryd's figures are given as a
//! ratio to it.
//!
//! With a file to append to, it is the floor of any log server instead:
//! everything read in a batch (an iteration's TCP reads, a `recvmmsg` of
//! datagrams) is appended with one `write` before it is echoed.

use diary::datagrams::{self, RecvBatch};
use diary::framing::OutBuf;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::fs::File;
use std::io::{self, Read, Write};
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
pub fn bind(
    addr: SocketAddr,
    append: Option<File>,
) -> io::Result<(SocketAddr, impl FnOnce() -> io::Result<()>)> {
    let mut listener = diary::tcp::listen(addr)?;
    let local = listener.local_addr()?;
    let mut udp = UdpSocket::bind(local)?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    poll.registry()
        .register(&mut udp, UDP, Interest::READABLE)?;
    Ok((local, move || serve(poll, listener, udp, append)))
}

fn serve(
    mut poll: Poll,
    listener: TcpListener,
    udp: UdpSocket,
    mut append: Option<File>,
) -> io::Result<()> {
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<Conn> = Slab::new();
    let mut buf = vec![0u8; 65_536];
    let mut batch = RecvBatch::default();
    // Appending: what this iteration read, and who waits to be echoed.
    let mut read_now: Vec<u8> = Vec::new();
    let mut touched: Vec<usize> = Vec::new();
    loop {
        poll.poll(&mut events, None)?;
        for event in events.iter() {
            match event.token() {
                UDP => {
                    // Echo every waiting datagram, in batches as diaryd
                    // reads and answers them; one that the socket will not
                    // take now is dropped, as a loaded server would.
                    while let Ok(n) = batch.recv(&udp) {
                        if let Some(file) = &mut append {
                            read_now.clear();
                            for i in 0..n {
                                read_now.extend_from_slice(batch.get(i).0);
                                read_now.push(b'\n');
                            }
                            file.write_all(&read_now)?;
                        }
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
                Token(key) if append.is_some() => {
                    if let Some(conn) = conns.get_mut(key) {
                        if read_all(conn, &mut buf, &mut read_now) {
                            touched.push(key);
                        } else {
                            close(&mut conns, key, &poll);
                        }
                    }
                }
                Token(key) => {
                    if let Some(conn) = conns.get_mut(key)
                        && !echo(conn, &mut buf)
                    {
                        close(&mut conns, key, &poll);
                    }
                }
            }
        }
        if let Some(file) = &mut append
            && !touched.is_empty()
        {
            // One write for the iteration, then the echoes.
            file.write_all(&read_now)?;
            read_now.clear();
            for key in touched.drain(..) {
                if let Some(conn) = conns.get_mut(key)
                    && conn.pending.flush_to(&mut conn.stream).is_err()
                {
                    close(&mut conns, key, &poll);
                }
            }
        }
    }
}

/// Lets go of a finished connection.
fn close(conns: &mut Slab<Conn>, key: usize, poll: &Poll) {
    let mut conn = conns.remove(key);
    let _ = poll.registry().deregister(&mut conn.stream);
}

/// Appending mode: reads what the connection sent into its echo and into
/// the iteration's batch; false once the connection is finished.
fn read_all(conn: &mut Conn, buf: &mut [u8], batch: &mut Vec<u8>) -> bool {
    loop {
        match conn.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                conn.pending.buf.extend_from_slice(&buf[..n]);
                batch.extend_from_slice(&buf[..n]);
                if n < buf.len() {
                    return true;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
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
