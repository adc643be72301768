//! Datagrams in batches: one `recvmmsg` receives up to [`BATCH`] queries and one `sendmmsg`
//! sends their replies, instead of a system call per datagram each way.
//!
//! `nix` wraps both calls in a safe interface, so this module needs no `unsafe`. A [`Batch`]
//! owns every buffer it uses for the life of its worker: the received datagrams, their
//! senders, and one reply buffer per slot, reused, so the loop allocates nothing per query.
//! It knows nothing of DNS.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

/// Datagrams per system call at most.
pub(super) const BATCH: usize = 32;
/// The largest query we read whole: longer ones are cut by the kernel, fail to decode and get
/// FORMERR if their header reads (a DNS query over UDP is far shorter).
const MAX_QUERY: usize = 4096;

/// Buffers for one worker's batches.
pub(super) struct Batch {
    queries: Vec<[u8; MAX_QUERY]>,
    lens: [usize; BATCH],
    peers: [Option<SockaddrStorage>; BATCH],
    /// The reply to each query; empty when there is nothing to send.
    replies: Vec<Vec<u8>>,
    recv_headers: MultiHeaders<SockaddrStorage>,
    send_headers: MultiHeaders<SockaddrStorage>,
    received: usize,
}

impl Batch {
    /// Buffers for [`BATCH`] datagrams each way.
    pub(super) fn new() -> Batch {
        Batch {
            queries: vec![[0; MAX_QUERY]; BATCH],
            lens: [0; BATCH],
            peers: [None; BATCH],
            replies: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
            recv_headers: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
            received: 0,
        }
    }

    /// Waits for at least one datagram (as long as the socket's read timeout) and takes every
    /// one already queued, up to [`BATCH`]; how many.
    ///
    /// # Errors
    ///
    /// The socket's: `WouldBlock` when the read timeout passed with nothing to read.
    pub(super) fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.received = 0;
        let mut slots = self.queries.iter_mut();
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(
                slots.next().expect("one buffer per slot").as_mut_slice(),
            )]
        });
        let received = recvmmsg(
            socket.as_raw_fd(),
            &mut self.recv_headers,
            iovs.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )
        .map_err(io::Error::from)?;
        let mut n = 0;
        for message in received {
            self.lens[n] = message.bytes;
            self.peers[n] = message.address;
            n += 1;
        }
        self.received = n;
        Ok(n)
    }

    /// Slot `i` of the last batch: the query, its sender (`None` when the kernel gave none we
    /// can answer) and the reply buffer to fill (empty: send nothing).
    pub(super) fn slot(&mut self, i: usize) -> (&[u8], Option<SocketAddr>, &mut Vec<u8>) {
        let len = self.lens[i].min(MAX_QUERY);
        let peer = self.peers[i].as_ref().and_then(socket_addr);
        (&self.queries[i][..len], peer, &mut self.replies[i])
    }

    /// Sends every non-empty reply of the last batch to its sender; returns how many failed.
    pub(super) fn send(&mut self, socket: &UdpSocket) -> usize {
        let mut iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|_| [IoSlice::new(&[])]);
        let mut peers: [Option<SockaddrStorage>; BATCH] = [None; BATCH];
        let mut n = 0;
        for i in 0..self.received {
            if !self.replies[i].is_empty() && self.peers[i].is_some() {
                iovs[n] = [IoSlice::new(&self.replies[i])];
                peers[n] = self.peers[i];
                n += 1;
            }
        }
        let mut failed = 0;
        let mut sent = 0;
        while sent < n {
            match sendmmsg(
                socket.as_raw_fd(),
                &mut self.send_headers,
                iovs[sent..n].iter(),
                &peers[sent..n],
                [],
                MsgFlags::empty(),
            ) {
                Ok(results) => sent += results.count().max(1),
                Err(Errno::EINTR) => {}
                // The first datagram could not go (a full send buffer, an unreachable peer):
                // drop it, as a lost datagram, and send the rest.
                Err(_) => {
                    failed += 1;
                    sent += 1;
                }
            }
        }
        failed
    }
}

/// The standard address of a sender.
fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    let v6 = addr.as_sockaddr_in6()?;
    Some(SocketAddr::V6(SocketAddrV6::from(*v6)))
}
