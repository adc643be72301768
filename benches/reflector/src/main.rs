//! The yardstick of `benches/peers`: a UDP server that does no DNS work at all.
//!
//! Every datagram is sent back to where it came from with the QR bit set, in batches of up to
//! `BATCH` with `recvmmsg` and `sendmmsg`: no parsing, no lookup, no allocation per packet.
//! Whatever a real nameserver spends beyond this reflector is its own work; what it spends up to
//! it is the kernel's. It uses `nix`, the crate meridian's own UDP fast path is meant to use, so
//! the yardstick pays the same system-call machinery a well-built server would.
//!
//! ```text
//! meridian-bench-reflector 127.0.0.1:5390 [WORKERS]
//! ```
//!
//! With more than one worker each thread owns its own `SO_REUSEPORT` socket.

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;

use nix::sys::socket::{
    AddressFamily, MsgFlags, MultiHeaders, SockFlag, SockType, SockaddrIn, bind, recvmmsg,
    sendmmsg, setsockopt, socket, sockopt,
};

/// Datagrams per system call at most.
const BATCH: usize = 64;
/// Largest datagram we echo; longer ones are truncated by the kernel and echoed short.
const MAX_DATAGRAM: usize = 1500;
/// Receive buffer, so that a burst from the load generator is queued rather than dropped.
const RECV_BUFFER_BYTES: usize = 8 << 20;
/// The QR bit in the third byte of a DNS header.
const QR: u8 = 0x80;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next().and_then(|a| a.parse::<SocketAddrV4>().ok()) else {
        eprintln!("usage: meridian-bench-reflector IPV4:PORT [WORKERS]");
        return ExitCode::from(2);
    };
    let workers = match args.next().map(|w| w.parse::<usize>()) {
        None => 1,
        Some(Ok(w)) if w > 0 => w,
        Some(_) => {
            eprintln!("WORKERS must be a positive number");
            return ExitCode::from(2);
        }
    };
    let mut sockets = Vec::with_capacity(workers);
    for _ in 0..workers {
        match bind_socket(addr) {
            Ok(fd) => sockets.push(fd),
            Err(error) => {
                eprintln!("binding {addr}: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    let threads: Vec<_> = sockets
        .into_iter()
        .map(|fd| std::thread::spawn(move || serve(&fd)))
        .collect();
    for thread in threads {
        if let Ok(Err(error)) = thread.join() {
            eprintln!("reflector stopped: {error}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn bind_socket(addr: SocketAddrV4) -> nix::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    setsockopt(&fd, sockopt::RcvBuf, &RECV_BUFFER_BYTES)?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(addr))?;
    Ok(fd)
}

/// Receive a batch, flip QR on each datagram, send the batch back; forever.
fn serve(fd: &OwnedFd) -> nix::Result<()> {
    let raw = fd.as_raw_fd();
    let mut bufs = vec![[0u8; MAX_DATAGRAM]; BATCH];
    let mut lens = [0usize; BATCH];
    let mut peers: [Option<SockaddrIn>; BATCH] = [None; BATCH];
    let mut recv_headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    loop {
        let n = {
            let mut bufs_iter = bufs.iter_mut();
            let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
                [IoSliceMut::new(
                    bufs_iter.next().expect("one buffer per header"),
                )]
            });
            let received = match recvmmsg(
                raw,
                &mut recv_headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(received) => received,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(error) => return Err(error),
            };
            let mut n = 0;
            for msg in received {
                lens[n] = msg.bytes;
                peers[n] = msg.address;
                n += 1;
            }
            n
        };
        for (buf, &len) in bufs.iter_mut().zip(&lens[..n]) {
            if len > 2 {
                buf[2] |= QR;
            }
        }
        let iovs: [[IoSlice<'_>; 1]; BATCH] =
            std::array::from_fn(|i| [IoSlice::new(&bufs[i][..lens[i]])]);
        let mut sent = 0;
        while sent < n {
            match sendmmsg(
                raw,
                &mut send_headers,
                iovs[sent..n].iter(),
                &peers[sent..n],
                [],
                MsgFlags::empty(),
            ) {
                Ok(results) => sent += results.count().max(1),
                Err(nix::errno::Errno::EINTR) => {}
                // A full send buffer or an unreachable peer: drop this datagram, as a server would.
                Err(_) => sent += 1,
            }
        }
    }
}
