//! The host <-> worker protocol.
//!
//! Frames on dedicated sockets (requests on fd 3, replies on fd 4 in the worker; never
//! stdout): a 4-byte
//! little-endian length, then one message encoded with postcard (compact, serde-based).
//! Every call carries a request id and its reply carries the same id, so a reply can
//! never reach the wrong caller; a worker that misses a deadline is killed, so a late
//! reply cannot exist either (the Python original read the previous call's reply).
//! The first frame from a worker is [`FromWorker::Hello`] (or
//! [`FromWorker::InitFailed`]); its protocol version must equal [`PROTOCOL_VERSION`].

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Bumped whenever a message changes.
pub const PROTOCOL_VERSION: u32 = 2;

/// The result of a call or a host service, as it crosses the socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireResult {
    /// Reply bytes (JSON by convention).
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A structured error.
    Err {
        /// Stable code.
        code: String,
        /// Message.
        message: String,
        /// HTTP status.
        status: u16,
    },
}

/// Host to worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Run an action.
    Call {
        /// Request id, echoed in the reply.
        id: u64,
        /// Action name.
        action: String,
        /// Payload bytes.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        /// Who asked.
        caller: String,
        /// Request id for logs.
        request_id: String,
        /// Deadline (ms since the epoch), 0 for none.
        deadline_unix_ms: u64,
    },
    /// Liveness check, answered by [`FromWorker::Pong`].
    Ping {
        /// Echoed.
        id: u64,
    },
    /// The answer to a [`FromWorker::HostCall`].
    HostReply {
        /// The host call's id.
        id: u64,
        /// Its result.
        result: WireResult,
    },
    /// Finish queued calls, shut the plugin down and exit.
    Shutdown,
}

/// Worker to host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromWorker {
    /// The handshake: the worker loaded the plugin and is ready.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The plugin's name, as the worker was told.
        plugin: String,
        /// The contract version the library was compiled against.
        api_version: String,
        /// `landlock` when the filesystem rules are in force, else `none`.
        fs_isolation: String,
        /// Whether the seccomp filter is in force.
        seccomp: bool,
        /// The plugin's self-description (the JSON its root module's `describe` answers),
        /// `None` for a plugin built on ABI 0.1.0. The plugin wrote it: the host bounds and
        /// parses it like any other input from the worker.
        #[serde(default)]
        description: Option<String>,
    },
    /// The worker could not load or start the plugin.
    InitFailed {
        /// Why, naming the plugin.
        message: String,
        /// Which step failed (the loader's kinds, the constructor, the confinement).
        #[serde(default = "worker_kind")]
        kind: crate::load_failure::LoadKind,
    },
    /// The reply to a [`ToWorker::Call`].
    Reply {
        /// The call's id.
        id: u64,
        /// Its result.
        result: WireResult,
    },
    /// The reply to a [`ToWorker::Ping`].
    Pong {
        /// The ping's id.
        id: u64,
    },
    /// A log line from the plugin.
    Log {
        /// One of `xcore_plugin_abi::ffi::level`.
        level: u8,
        /// The call's request id, if any.
        request_id: String,
        /// The message.
        message: String,
    },
    /// A host service request, answered by [`ToWorker::HostReply`].
    HostCall {
        /// Id, echoed.
        id: u64,
        /// Service name.
        service: String,
        /// The call being served when the plugin asked (empty outside a call).
        request_id: String,
        /// That call's deadline, Unix ms (0 outside a call): waits in the host's services
        /// end before it.
        deadline_unix_ms: u64,
        /// JSON payload.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
}

/// A frame over the configured limit, or a malformed one.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the socket.
    #[error("connection closed")]
    Closed,
    /// Reading or writing failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// Larger than the limit.
    #[error("frame of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// The size of `msg`'s body, computed without allocating.
pub fn encoded_size<T: Serialize>(msg: &T) -> Result<usize, FrameError> {
    postcard::serialize_with_flavor(msg, postcard::ser_flavors::Size::default())
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Encodes a message as one frame (length prefix included), refusing it when it would
/// exceed `limit`. The size is checked before anything is allocated, and the frame is
/// allocated once at its final size: an oversized message costs no memory.
pub fn encode<T: Serialize>(msg: &T, limit: usize) -> Result<Vec<u8>, FrameError> {
    let size = encoded_size(msg)?;
    if size > limit {
        return Err(FrameError::TooLarge { size, limit });
    }
    let mut buf = Vec::with_capacity(4 + size);
    buf.extend_from_slice(&(size as u32).to_le_bytes());
    postcard::to_extend(msg, buf).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Writes `msg` as one frame straight into `w`, without building the frame in memory
/// (a reply of the maximum size costs no second copy); over `limit` nothing is written.
/// `w` should be buffered: small fields become small writes. Flushes at the end.
pub fn write_msg<T: Serialize, W: Write>(w: &mut W, msg: &T, limit: usize) -> Result<(), FrameError> {
    let size = encoded_size(msg)?;
    if size > limit {
        return Err(FrameError::TooLarge { size, limit });
    }
    w.write_all(&(size as u32).to_le_bytes())?;
    postcard::to_io(msg, &mut *w).map_err(|e| FrameError::Malformed(e.to_string()))?;
    w.flush()?;
    Ok(())
}

/// Writes one already-encoded frame.
pub fn write_frame(w: &mut impl Write, frame: &[u8]) -> Result<(), FrameError> {
    w.write_all(frame)?;
    Ok(())
}

/// Reads one message; a frame over `limit` is refused before its body is read.
pub fn read<T: for<'de> Deserialize<'de>>(r: &mut impl Read, limit: usize) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    if let Err(e) = r.read_exact(&mut len) {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof { FrameError::Closed } else { e.into() });
    }
    let size = u32::from_le_bytes(len) as usize;
    if size > limit {
        return Err(FrameError::TooLarge { size, limit });
    }
    let mut body = vec![0u8; size];
    r.read_exact(&mut body)?;
    postcard::from_bytes(&body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// The kind of an `InitFailed` that names none: the worker's own start.
fn worker_kind() -> crate::load_failure::LoadKind {
    crate::load_failure::LoadKind::Worker
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_frames() {
        let msgs = vec![
            ToWorker::Call {
                id: 7,
                action: "echo".into(),
                payload: b"{\"a\":1}".to_vec(),
                caller: "http".into(),
                request_id: "r1".into(),
                deadline_unix_ms: 42,
            },
            ToWorker::Ping { id: 8 },
            ToWorker::HostReply {
                id: 9,
                result: WireResult::Err { code: "x".into(), message: "y".into(), status: 500 },
            },
            ToWorker::Shutdown,
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            write_frame(&mut wire, &encode(m, 1 << 20).unwrap()).unwrap();
        }
        let mut r = io::Cursor::new(wire);
        for m in &msgs {
            assert_eq!(&read::<ToWorker>(&mut r, 1 << 20).unwrap(), m);
        }
        assert!(matches!(read::<ToWorker>(&mut r, 1 << 20), Err(FrameError::Closed)));
    }

    #[test]
    fn oversized_frames_are_refused_both_ways() {
        let big = FromWorker::Reply { id: 1, result: WireResult::Ok(vec![0; 5000]) };
        assert!(matches!(encode(&big, 4096), Err(FrameError::TooLarge { .. })));
        let frame = encode(&big, 1 << 20).unwrap();
        let mut r = io::Cursor::new(frame);
        assert!(
            matches!(read::<FromWorker>(&mut r, 4096), Err(FrameError::TooLarge { size, .. }) if size > 5000)
        );
    }

    #[test]
    fn streamed_frames_equal_encoded_frames_and_oversized_ones_write_nothing() {
        let msg = FromWorker::Reply { id: 3, result: WireResult::Ok(vec![9; 10_000]) };
        let mut streamed = Vec::new();
        write_msg(&mut streamed, &msg, 1 << 20).unwrap();
        assert_eq!(streamed, encode(&msg, 1 << 20).unwrap());
        let mut none = Vec::new();
        assert!(matches!(write_msg(&mut none, &msg, 4096), Err(FrameError::TooLarge { .. })));
        assert!(none.is_empty());
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let mut wire = 3u32.to_le_bytes().to_vec();
        wire.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(read::<ToWorker>(&mut io::Cursor::new(wire), 100), Err(FrameError::Malformed(_))));
    }
}
