//! One encrypted TCP connection on the server: the handshake (or a key
//! request before it), then a byte stream in sealed frames. The TCP side
//! reads requests through [`SecureLink::reader`] and sends replies through
//! [`SecureLink::writer`], so framing, holds and limits stay as they are
//! for plaintext.

use crate::secure::noise::{
    self, DATA, INIT, KEY, MAX_FRAME_PLAINTEXT, REFUSED, REPLY, Refusal, TCP_HEADER,
};
use crate::server::access::gatekeeper::{Gatekeeper, Over, Peer};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

/// What a first frame may weigh: a handshake is about a hundred bytes.
const MAX_HANDSHAKE_BUFFER: usize = 1024;
/// The receive buffer's size, kept while the connection is busy (it is
/// zeroed once, not per read); a bigger frame grows it for a while.
const RX_SIZE: usize = 16 * 1024;
/// Room a read asks for at least.
const READ_MIN: usize = 4096;
/// Buffers that grew past this are given back once empty.
const RETAINED: usize = 16 * 1024;

/// How far the handshake got.
pub enum Step {
    /// More bytes are needed.
    Waiting,
    /// The session is open, for this device.
    Open(Peer),
    /// A refusal is queued; close once it is sent.
    Refused,
    /// Nothing worth an answer: close now.
    Broken,
}

#[derive(Default)]
pub struct SecureLink {
    transport: Option<Box<snow::TransportState>>,
    peer: Option<Peer>,
    started: Option<Instant>,
    /// A frame of the session has opened: the initiator holds its keys, so
    /// its first message was no replay (see `SecureLink::newly_confirmed`).
    confirmed: bool,
    /// The confirmation has been reported.
    announced: bool,
    /// Ciphertext received and not yet opened: `rx[rx_start..rx_end]`.
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    /// Opened and not yet read, from `plain_start`.
    plain: Vec<u8>,
    plain_start: usize,
    /// Sealed and not yet sent, from `tx_sent`.
    tx: Vec<u8>,
    tx_sent: usize,
}

impl SecureLink {
    pub(crate) fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    pub(crate) fn peer_mut(&mut self) -> Option<&mut Peer> {
        self.peer.as_mut()
    }

    pub(crate) fn is_open(&self) -> bool {
        self.transport.is_some()
    }

    /// The device, the first time this is asked after a frame opened: a
    /// Noise IK first message can be replayed (after a restart the server
    /// has forgotten its stamp), so a session is the device's only once
    /// one of its messages opens.
    pub(crate) fn newly_confirmed(&mut self) -> Option<&Peer> {
        if !self.confirmed || self.announced {
            return None;
        }
        self.announced = true;
        self.peer.as_ref()
    }

    /// The device of a confirmed session.
    pub(crate) fn confirmed_peer(&self) -> Option<&Peer> {
        self.peer.as_ref().filter(|_| self.confirmed)
    }

    /// When the session was made (it is renewed by a new connection).
    pub(crate) fn started(&self) -> Option<Instant> {
        self.started
    }

    /// Sealed bytes not yet taken by the socket.
    pub(crate) fn unsent(&self) -> usize {
        self.tx.len() - self.tx_sent
    }

    /// Reads and answers handshake frames until the session opens.
    pub fn handshake(
        &mut self,
        stream: &mut impl Read,
        gate: &mut Gatekeeper,
        from: SocketAddr,
    ) -> Step {
        loop {
            let frame = match noise::parse_frame(&self.rx[self.rx_start..self.rx_end]) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    if self.rx_end >= MAX_HANDSHAKE_BUFFER {
                        return Step::Broken;
                    }
                    match self.fill(stream) {
                        Ok(0) => return Step::Broken,
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Waiting,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return Step::Broken,
                    }
                }
                Err(noise::NotAFrame) => {
                    gate.failed(Over::Tcp, from.ip(), Instant::now());
                    return Step::Broken;
                }
            };
            let (frame, used) = frame;
            match frame.kind {
                KEY if frame.body.is_empty() => {
                    let key = gate.public_key();
                    noise::push_frame(&mut self.tx, KEY, &key.0);
                    self.rx_start += used;
                }
                INIT => {
                    let now = Instant::now();
                    // A TCP peer has proven its address (it got our
                    // SYN-ACK), so its failures are its own.
                    let accepted = if gate.is_limited(Over::Tcp, from.ip(), now) {
                        Err(Refusal::TooMany)
                    } else {
                        gate.accept(frame.body).inspect_err(|_| {
                            gate.failed(Over::Tcp, from.ip(), now);
                        })
                    };
                    self.rx_start += used;
                    let (mut handshake, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(why) => {
                            log::info!("TCP handshake from {from} refused: {}", why.words());
                            let mut body = vec![why as u8];
                            body.extend_from_slice(why.words().as_bytes());
                            noise::push_frame(&mut self.tx, REFUSED, &body);
                            return Step::Refused;
                        }
                    };
                    let mut reply = [0u8; 128];
                    let Ok(n) = handshake.write_message(&[], &mut reply) else {
                        return Step::Broken;
                    };
                    let Ok(transport) = handshake.into_transport_mode() else {
                        return Step::Broken;
                    };
                    noise::push_frame(&mut self.tx, REPLY, &reply[..n]);
                    self.transport = Some(Box::new(transport));
                    self.peer = Some(peer.clone());
                    self.started = Some(now);
                    return Step::Open(peer);
                }
                _ => {
                    gate.failed(Over::Tcp, from.ip(), Instant::now());
                    return Step::Broken;
                }
            }
        }
    }

    /// Requests, opened from the frames `stream` brings.
    pub(crate) fn reader<'a, S: Read>(&'a mut self, stream: &'a mut S) -> Opener<'a, S> {
        Opener { link: self, stream }
    }

    /// Replies, sealed into frames as `stream` takes them.
    pub(crate) fn writer<'a, S: Write>(&'a mut self, stream: &'a mut S) -> Sealer<'a, S> {
        Sealer { link: self, stream }
    }

    /// Sends sealed bytes until none are left or the socket is full.
    pub(crate) fn send_sealed(&mut self, stream: &mut impl Write) -> io::Result<()> {
        while self.tx_sent < self.tx.len() {
            match stream.write(&self.tx[self.tx_sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.tx_sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.tx.clear();
        self.tx_sent = 0;
        if self.tx.capacity() > RETAINED {
            self.tx = Vec::new();
        }
        Ok(())
    }
}

impl SecureLink {
    /// Reads more ciphertext after what is buffered, keeping only the
    /// unopened part.
    fn fill(&mut self, stream: &mut impl Read) -> io::Result<usize> {
        if self.rx_start > 0 {
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
        if self.rx.len() < self.rx_end + READ_MIN {
            self.rx.resize((self.rx_end + READ_MIN).max(RX_SIZE), 0);
        }
        let n = stream.read(&mut self.rx[self.rx_end..])?;
        self.rx_end += n;
        Ok(n)
    }

    /// Gives back the buffers of a quiet connection.
    pub(crate) fn release_idle(&mut self) {
        if self.rx_start == self.rx_end {
            self.rx = Vec::new();
            self.rx_start = 0;
            self.rx_end = 0;
        }
        if self.plain_start == self.plain.len() {
            self.plain = Vec::new();
            self.plain_start = 0;
        }
    }
}

fn broken(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

pub(crate) struct Opener<'a, S> {
    link: &'a mut SecureLink,
    stream: &'a mut S,
}

impl<S: Read> Read for Opener<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let link = &mut *self.link;
        loop {
            if link.plain_start < link.plain.len() {
                let n = buf.len().min(link.plain.len() - link.plain_start);
                buf[..n].copy_from_slice(&link.plain[link.plain_start..link.plain_start + n]);
                link.plain_start += n;
                if link.plain_start == link.plain.len() {
                    link.plain.clear();
                    link.plain_start = 0;
                }
                return Ok(n);
            }
            let Some(transport) = link.transport.as_mut() else {
                return Err(broken("no session"));
            };
            match noise::parse_frame(&link.rx[link.rx_start..link.rx_end]) {
                Ok(Some((frame, used))) if frame.kind == DATA => {
                    link.plain.resize(frame.body.len(), 0);
                    let n = transport
                        .read_message(frame.body, &mut link.plain)
                        .map_err(|_| broken("a frame did not open"))?;
                    link.plain.truncate(n);
                    link.confirmed = true;
                    link.rx_start += used;
                }
                Ok(Some(_)) | Err(noise::NotAFrame) => return Err(broken("not a data frame")),
                Ok(None) => {
                    if link.rx_start == link.rx_end && link.rx.len() > RX_SIZE {
                        // A big frame grew it; back to the usual size.
                        link.rx = Vec::new();
                        (link.rx_start, link.rx_end) = (0, 0);
                    }
                    if link.fill(self.stream)? == 0 {
                        return Ok(0);
                    }
                }
            }
        }
    }
}

pub(crate) struct Sealer<'a, S> {
    link: &'a mut SecureLink,
    stream: &'a mut S,
}

impl<S: Write> Write for Sealer<'_, S> {
    /// Takes at most one frame's worth, and only when the previous frame
    /// has left: what the socket cannot take stays in the caller's buffer,
    /// where limits and holds apply to it.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.link.send_sealed(self.stream)?;
        if self.link.unsent() > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let Some(transport) = self.link.transport.as_mut() else {
            return Err(broken("no session"));
        };
        let n = buf.len().min(MAX_FRAME_PLAINTEXT);
        self.link.tx.reserve(TCP_HEADER + n + noise::TAG_LEN);
        noise::seal_frame(transport, &buf[..n], &mut self.link.tx)
            .map_err(|_| broken("cannot seal"))?;
        self.link.send_sealed(self.stream)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.link.send_sealed(self.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::keys::KeyPair;

    #[test]
    fn frames_cut_anywhere_still_open_in_order() {
        let (client, server) = (KeyPair::generate(), KeyPair::generate());
        let mut i = noise::initiator(&client, &server.public);
        let mut r = noise::responder(&server);
        let mut buf = [0u8; 256];
        let n = i.write_message(&noise::stamp_now(), &mut buf).unwrap();
        r.read_message(&buf[..n], &mut [0u8; 64]).unwrap();
        let n = r.write_message(&[], &mut buf).unwrap();
        i.read_message(&buf[..n], &mut [0u8; 64]).unwrap();
        let mut sender = i.into_transport_mode().unwrap();
        let mut link = SecureLink {
            transport: Some(Box::new(r.into_transport_mode().unwrap())),
            ..SecureLink::default()
        };
        let mut wire = Vec::new();
        let text: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        for chunk in text.chunks(MAX_FRAME_PLAINTEXT) {
            noise::seal_frame(&mut sender, chunk, &mut wire).unwrap();
        }
        // A stream that gives 7 bytes at a time.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(7).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut stream = Trickle(&wire);
        let mut got = Vec::new();
        link.reader(&mut stream).read_to_end(&mut got).unwrap();
        assert_eq!(got, text);
    }
}
