//! A long-connection chat gateway: clients connect over TCP, say hello,
//! exchange framed messages and say goodbye. Outgoing frames are encoded into
//! buffers from a shared [`bufpool::BufPool`] and released once written.

pub mod codec;
pub mod protocol;
pub mod server;
pub mod session;
