//! One client connection, from hello to goodbye.

use std::fmt;
use std::io;
use std::sync::Arc;

use bufpool::{BufPool, PooledBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::codec::{EncodeError, Encoder};
use crate::protocol::{parse_header, FrameError, Packet, PacketKind, SubType, HEADER_LEN};

/// The farewell packet's sub type. Leaving it unset makes the encoder fail
/// after it has taken a buffer from the pool, and that buffer is never
/// given back: the bug of the story. `fixed-disconnect` is the fix.
#[cfg(not(feature = "fixed-disconnect"))]
const FAREWELL_SUB_TYPE: Option<SubType> = None;
#[cfg(feature = "fixed-disconnect")]
const FAREWELL_SUB_TYPE: Option<SubType> = Some(SubType::ServerClosing);

/// Each connection reads into one pooled buffer for its whole life.
const INBOX_SIZE: usize = 4096;

#[derive(Debug)]
pub enum SessionError {
    Io(io::Error),
    Frame(FrameError),
    Encode(EncodeError),
    TooLarge(usize),
    Unexpected(PacketKind),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(err) => write!(f, "i/o: {err}"),
            Self::Frame(err) => write!(f, "bad frame: {err}"),
            Self::Encode(err) => write!(f, "encode: {err}"),
            Self::TooLarge(len) => write!(f, "frame of {len} bytes exceeds the inbox"),
            Self::Unexpected(kind) => write!(f, "unexpected {kind:?} from client"),
        }
    }
}

impl From<io::Error> for SessionError {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

impl From<FrameError> for SessionError {
    fn from(err: FrameError) -> Self {
        Self::Frame(err)
    }
}

impl From<EncodeError> for SessionError {
    fn from(err: EncodeError) -> Self {
        Self::Encode(err)
    }
}

pub struct Session {
    id: u64,
    stream: TcpStream,
    pool: Arc<BufPool>,
    encoder: Encoder,
    name: String,
}

impl Session {
    pub fn new(id: u64, stream: TcpStream, pool: Arc<BufPool>) -> Self {
        let encoder = Encoder::new(Arc::clone(&pool));
        Self {
            id,
            stream,
            pool,
            encoder,
            name: String::new(),
        }
    }

    /// Serves the client until it leaves, then says goodbye and cleans up.
    pub async fn run(mut self) -> Result<(), SessionError> {
        let mut inbox = self.pool.allocate(INBOX_SIZE);
        let outcome = self.converse(&mut inbox).await;
        if let Err(err) = self.say_goodbye().await {
            // The client is usually gone already; a failed farewell is noise.
            crate::server::debug(format_args!(
                "session {} ({}): farewell failed: {err}",
                self.id, self.name
            ));
        }
        self.pool.release(inbox);
        outcome
    }

    async fn converse(&mut self, inbox: &mut PooledBuf) -> Result<(), SessionError> {
        while let Some(packet) = self.read_packet(inbox).await? {
            match packet.kind {
                PacketKind::Hello => {
                    self.name = String::from_utf8_lossy(&packet.payload).into_owned();
                    let welcome = format!("welcome, {}", self.name);
                    self.send(&Packet::new(PacketKind::Welcome, SubType::Text, welcome))
                        .await?;
                }
                PacketKind::Message => {
                    let sub_type = packet.sub_type.unwrap_or(SubType::Text);
                    self.send(&Packet::new(PacketKind::Ack, sub_type, packet.payload))
                        .await?;
                }
                PacketKind::Bye => return Ok(()),
                other => return Err(SessionError::Unexpected(other)),
            }
        }
        Ok(())
    }

    async fn say_goodbye(&mut self) -> Result<(), SessionError> {
        let farewell = Packet {
            kind: PacketKind::Disconnect,
            sub_type: FAREWELL_SUB_TYPE,
            payload: Vec::new(),
        };
        self.send(&farewell).await
    }

    async fn send(&mut self, packet: &Packet) -> Result<(), SessionError> {
        let frame = self.encoder.encode(packet)?;
        let written = self.stream.write_all(frame.as_slice()).await;
        self.pool.release(frame);
        Ok(written?)
    }

    /// Reads one frame; `None` when the client closed the connection.
    async fn read_packet(&mut self, inbox: &mut PooledBuf) -> Result<Option<Packet>, SessionError> {
        inbox.clear();
        let mut header = [0u8; HEADER_LEN];
        match self.stream.read_exact(&mut header).await {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(err) => return Err(err.into()),
        }
        let (kind, sub_type, len) = parse_header(&header)?;
        if len > inbox.capacity() {
            return Err(SessionError::TooLarge(len));
        }
        self.stream
            .read_exact(&mut inbox.spare_mut()[..len])
            .await?;
        inbox
            .set_len(len)
            .map_err(|_| SessionError::TooLarge(len))?;
        Ok(Some(Packet {
            kind,
            sub_type,
            payload: inbox.as_slice().to_vec(),
        }))
    }
}
