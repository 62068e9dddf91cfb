//! Noticing a CRIU restore from inside the restored process.
//!
//! Sandboxes are checkpointed with `criu dump --tcp-established` and restored
//! with `criu restore --tcp-close`: every TCP connection that was established
//! at dump time comes back closed. The interpreter holds one loopback TCP
//! connection to itself, the canary; while it is established, a non-blocking
//! `peek` on it reports "would block". Any other answer (EOF, ENOTCONN, ...)
//! means the process was restored, so the tcp kernels' ZeroMQ connections
//! (closed the same way) must be rebuilt and cached credentials dropped.

use crate::error::{Error, Result};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, TcpListener, TcpStream};

/// A loopback TCP connection that dies when the process is restored.
#[derive(Debug)]
pub struct Canary {
    /// Our end, checked with a non-blocking peek.
    probe: TcpStream,
    /// The accepted end: kept open (and never written) so `probe` sees no
    /// data and no EOF while the connection lives.
    _peer: TcpStream,
}

impl Canary {
    /// Opens a fresh canary connection on an ephemeral loopback port.
    pub fn arm() -> Result<Self> {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| Error::io("bind the restore canary", e))?;
        let addr = listener.local_addr().map_err(|e| Error::io("restore canary address", e))?;
        let probe = TcpStream::connect(addr).map_err(|e| Error::io("connect the restore canary", e))?;
        let (peer, _) = listener.accept().map_err(|e| Error::io("accept the restore canary", e))?;
        probe.set_nonblocking(true).map_err(|e| Error::io("restore canary non-blocking", e))?;
        // The listener is dropped here: only the established pair matters.
        Ok(Canary { probe, _peer: peer })
    }

    /// Whether the connection is still established, i.e. no restore happened
    /// since [`Canary::arm`]. One non-blocking syscall.
    pub fn alive(&self) -> bool {
        let mut byte = [0u8; 1];
        match self.probe.peek(&mut byte) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => true,
            Ok(n) => {
                tracing::debug!("restore canary: peek returned {n}");
                false
            }
            Err(e) => {
                tracing::debug!("restore canary: {e}");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Shutdown;

    #[test]
    fn a_fresh_canary_is_alive() {
        assert!(Canary::arm().unwrap().alive());
    }

    #[test]
    fn a_closed_connection_is_noticed() {
        // Closing the peer is what the probe sees after `--tcp-close` (EOF or
        // ENOTCONN, depending on the restored socket state).
        let canary = Canary::arm().unwrap();
        let _ = canary._peer.shutdown(Shutdown::Both);
        assert!(!canary.alive());
        let _ = canary.probe.shutdown(Shutdown::Both);
        assert!(!canary.alive());
    }
}
