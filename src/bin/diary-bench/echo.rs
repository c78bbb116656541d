//! The ceiling: a bare single-thread `mio` echo server on one port, UDP and
//! TCP, with no parsing and no store. What it sustains under a load is what
//! the loop and the kernel alone can do; diaryd's figures are given as a
//! ratio to it.
//!
//! With a file to append to, it is the floor of any log server instead:
//! everything read in a batch (an iteration's TCP reads, a `recvmmsg` of
//! datagrams) is appended with one `write` before it is echoed. With
//! `sync` as well, it is the floor of any durable one: each batch is
//! flushed by diaryd's own syncer thread, the next batch is written while
//! it flushes, and echoes wait for the flush that covers them.

use diary::store::syncer::Syncer;
use diary::tcp::framing::OutBuf;
use diary::udp::datagrams::{self, RecvBatch};
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

const UDP: Token = Token(usize::MAX - 1);
const LISTENER: Token = Token(usize::MAX - 2);
const WAKER: Token = Token(usize::MAX - 3);

struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet written back.
    pending: OutBuf,
}

/// Where what is read goes before it is echoed.
pub enum Sink {
    /// Nowhere: a bare echo.
    None,
    /// Appended to the file, one `write` per batch.
    Append(File),
    /// Appended, and echoed only once `fdatasync` has returned.
    Durable(File),
}

/// Batches written and flushed, and the echoes that wait for them.
struct Flushes {
    syncer: Syncer,
    /// The newest batch written (batches count from 1).
    written: u64,
    /// The newest batch the flush in flight covers.
    flushing: u64,
    /// Every batch up to this one is on the disk.
    durable: u64,
    /// TCP connections with echoes held.
    held: Vec<usize>,
    /// Datagram echoes held: (batch, to, end of the datagram in `bytes`).
    datagrams: VecDeque<(u64, SocketAddr, usize)>,
    bytes: Vec<u8>,
    /// Where the front datagram starts in `bytes`.
    front: usize,
}

impl Flushes {
    fn start(file: &File, poll: &Poll) -> io::Result<Flushes> {
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let file = file.try_clone()?;
        Ok(Flushes {
            syncer: Syncer::start(Box::new(move || file.sync_data()), waker)?,
            written: 0,
            flushing: 0,
            durable: 0,
            held: Vec::new(),
            datagrams: VecDeque::new(),
            bytes: Vec::new(),
            front: 0,
        })
    }

    /// Takes a finished flush's result and starts the next one if
    /// anything was written since; whether echoes may have been released.
    fn turn(&mut self) -> io::Result<bool> {
        let mut settled = false;
        if let Some(result) = self.syncer.try_result() {
            result?;
            self.durable = self.flushing;
            settled = true;
        }
        if !self.syncer.in_flight() && self.written > self.durable {
            self.flushing = self.written;
            self.syncer.request();
        }
        Ok(settled)
    }

    /// Sends the held datagram echoes whose batch is on the disk.
    fn send_datagrams(&mut self, udp: &UdpSocket) {
        let ready = self
            .datagrams
            .iter()
            .take_while(|(batch, ..)| *batch <= self.durable)
            .count();
        let mut sent = 0;
        while sent < ready {
            let mut start = self.front;
            let echoes = self.datagrams.range(sent..ready).map(|&(_, to, end)| {
                let echo = (to, &self.bytes[start..end]);
                start = end;
                echo
            });
            let n = datagrams::send(udp, echoes).unwrap_or(1);
            for &(.., end) in self.datagrams.range(sent..sent + n) {
                self.front = end;
            }
            sent += n;
        }
        self.datagrams.drain(..ready);
        if self.datagrams.is_empty() {
            self.bytes.clear();
            self.front = 0;
        }
    }
}

/// Binds UDP and TCP on `addr` (port 0: any free one, shared) and returns
/// the address and a function that serves forever.
pub fn bind(
    addr: SocketAddr,
    sink: Sink,
) -> io::Result<(SocketAddr, impl FnOnce() -> io::Result<()>)> {
    let mut listener = diary::tcp::listen(addr)?;
    let local = listener.local_addr()?;
    let mut udp = UdpSocket::bind(local)?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    poll.registry()
        .register(&mut udp, UDP, Interest::READABLE)?;
    let (append, flushes) = match sink {
        Sink::None => (None, None),
        Sink::Append(file) => (Some(file), None),
        Sink::Durable(file) => {
            let flushes = Flushes::start(&file, &poll)?;
            (Some(file), Some(flushes))
        }
    };
    Ok((local, move || serve(poll, listener, udp, append, flushes)))
}

fn serve(
    mut poll: Poll,
    listener: TcpListener,
    udp: UdpSocket,
    mut append: Option<File>,
    mut flushes: Option<Flushes>,
) -> io::Result<()> {
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<Conn> = Slab::new();
    let mut buf = vec![0u8; 65_536];
    let mut batch = RecvBatch::default();
    // Appending: a batch of datagrams as lines.
    let mut lines: Vec<u8> = Vec::new();
    // Appending: what this iteration read, and who waits to be echoed
    // (with where its bytes of this iteration start).
    let mut read_now: Vec<u8> = Vec::new();
    let mut touched: Vec<(usize, usize)> = Vec::new();
    loop {
        poll.poll(&mut events, None)?;
        for event in events.iter() {
            match event.token() {
                WAKER => {}
                UDP => {
                    // Echo every waiting datagram, in batches as diaryd
                    // reads and answers them; one that the socket will not
                    // take now is dropped, as a loaded server would.
                    while let Ok(n) = batch.recv(&udp) {
                        if let Some(file) = &mut append {
                            lines.clear();
                            for i in 0..n {
                                lines.extend_from_slice(batch.get(i).0);
                                lines.push(b'\n');
                            }
                            file.write_all(&lines)?;
                        }
                        if let Some(flushes) = &mut flushes {
                            flushes.written += 1;
                            for i in 0..n {
                                let (datagram, from) = batch.get(i);
                                flushes.bytes.extend_from_slice(datagram);
                                let end = flushes.bytes.len();
                                flushes.datagrams.push_back((flushes.written, from, end));
                            }
                            continue;
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
                        let start = conn.pending.buf.len();
                        if read_all(conn, &mut buf, &mut read_now) {
                            touched.push((key, start));
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
            // One write for the iteration, then the echoes (held for the
            // batch's flush when there is one).
            if !read_now.is_empty() {
                file.write_all(&read_now)?;
                read_now.clear();
                if let Some(flushes) = &mut flushes {
                    flushes.written += 1;
                }
            }
            for (key, start) in touched.drain(..) {
                let Some(conn) = conns.get_mut(key) else {
                    continue;
                };
                if let Some(flushes) = &mut flushes
                    && start < conn.pending.buf.len()
                    && conn.pending.hold(flushes.written, start)
                {
                    flushes.held.push(key);
                }
                if conn.pending.flush_to(&mut conn.stream).is_err() {
                    close(&mut conns, key, &poll);
                }
            }
        }
        if let Some(flushes) = &mut flushes
            && flushes.turn()?
        {
            let durable = flushes.durable;
            flushes.held.retain(|&key| {
                let Some(conn) = conns.get_mut(key) else {
                    return false;
                };
                let still_held = conn.pending.release(durable);
                if conn.pending.flush_to(&mut conn.stream).is_err() {
                    close(&mut conns, key, &poll);
                    return false;
                }
                still_held
            });
            flushes.send_datagrams(&udp);
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
