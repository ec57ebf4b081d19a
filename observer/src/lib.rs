//! pool observer: finds leaking buffer pools in live Rust processes.
//!
//! The modules follow the data flow, one stage each:
//! [`resolve`] targets → [`plan`] probes → [`attach`] → [`snapshot`] maps →
//! [`symbolize`] → [`analyse`] → [`render`]; [`session`] drives the stages
//! while attached and [`cli`] describes the command line. Beside the
//! reports, a session can serve [`metrics`] to Prometheus, show a live
//! view ([`tui`]), and measures its own [`cost`].

pub mod analyse;
pub mod arch;
pub mod attach;
pub mod cli;
pub mod cost;
pub mod error;
pub mod inspect;
pub mod metrics;
pub mod plan;
pub mod render;
pub mod resolve;
pub mod session;
pub mod snapshot;
pub mod symbolize;
#[cfg(test)]
mod test_c;
pub mod tui;
