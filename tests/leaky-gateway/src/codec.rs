//! Encodes packets into pooled buffers.

use std::fmt;
use std::sync::Arc;

use bufpool::{BufPool, Overflow, PooledBuf};

use crate::protocol::{Packet, PacketKind, HEADER_LEN, MAX_PAYLOAD};

/// Frames are encoded into buffers of at least this size, so small frames
/// share one size class and the buffer can be reused for any of them.
const MIN_FRAME_BUFFER: usize = 256;

#[derive(Debug)]
pub enum EncodeError {
    MissingSubType(PacketKind),
    PayloadTooLarge(usize),
    Overflow(Overflow),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingSubType(kind) => write!(f, "{kind:?} packet has no sub type"),
            Self::PayloadTooLarge(len) => write!(f, "payload of {len} bytes is too large"),
            Self::Overflow(overflow) => write!(f, "{overflow}"),
        }
    }
}

impl std::error::Error for EncodeError {}

impl From<Overflow> for EncodeError {
    fn from(overflow: Overflow) -> Self {
        Self::Overflow(overflow)
    }
}

/// Turns packets into wire frames. The caller owns the returned buffer and
/// must give it back to the pool once it has been written.
#[derive(Clone)]
pub struct Encoder {
    pool: Arc<BufPool>,
}

impl Encoder {
    pub fn new(pool: Arc<BufPool>) -> Self {
        Self { pool }
    }

    pub fn encode(&self, packet: &Packet) -> Result<PooledBuf, EncodeError> {
        let payload_len = packet.payload.len();
        if payload_len > MAX_PAYLOAD {
            return Err(EncodeError::PayloadTooLarge(payload_len));
        }
        let mut buf = self
            .pool
            .allocate((HEADER_LEN + payload_len).max(MIN_FRAME_BUFFER));
        buf.put_u8(packet.kind as u8)?;
        let sub_type = packet
            .sub_type
            .ok_or(EncodeError::MissingSubType(packet.kind))?;
        buf.put_u8(sub_type as u8)?;
        buf.put_u16(payload_len as u16)?;
        buf.put_slice(&packet.payload)?;
        Ok(buf)
    }
}
