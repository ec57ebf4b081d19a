//! Wire format: every frame is `kind: u8, sub_type: u8 (0 = none),
//! length: u16 big-endian, payload: length bytes`.

use std::fmt;

pub const HEADER_LEN: usize = 4;
pub const MAX_PAYLOAD: usize = u16::MAX as usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PacketKind {
    Hello = 1,
    Welcome = 2,
    Message = 3,
    Ack = 4,
    Bye = 5,
    Disconnect = 6,
}

impl PacketKind {
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Hello,
            2 => Self::Welcome,
            3 => Self::Message,
            4 => Self::Ack,
            5 => Self::Bye,
            6 => Self::Disconnect,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SubType {
    Text = 1,
    Binary = 2,
    ClientLeft = 3,
    ServerClosing = 4,
}

impl SubType {
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Text,
            2 => Self::Binary,
            3 => Self::ClientLeft,
            4 => Self::ServerClosing,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub kind: PacketKind,
    pub sub_type: Option<SubType>,
    pub payload: Vec<u8>,
}

impl Packet {
    pub fn new(kind: PacketKind, sub_type: SubType, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            kind,
            sub_type: Some(sub_type),
            payload: payload.into(),
        }
    }
}

#[derive(Debug)]
pub enum FrameError {
    UnknownKind(u8),
    UnknownSubType(u8),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKind(byte) => write!(f, "unknown packet kind {byte}"),
            Self::UnknownSubType(byte) => write!(f, "unknown sub type {byte}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Parses a frame header: kind, sub type and payload length.
pub fn parse_header(
    header: &[u8; HEADER_LEN],
) -> Result<(PacketKind, Option<SubType>, usize), FrameError> {
    let kind = PacketKind::from_byte(header[0]).ok_or(FrameError::UnknownKind(header[0]))?;
    let sub_type = match header[1] {
        0 => None,
        byte => Some(SubType::from_byte(byte).ok_or(FrameError::UnknownSubType(byte))?),
    };
    let len = u16::from_be_bytes([header[2], header[3]]) as usize;
    Ok((kind, sub_type, len))
}
