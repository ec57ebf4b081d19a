//! Errors a caller must tell apart.

/// A problem with what the user asked for (a bad PID, a function that does
/// not exist, a malformed location, missing privileges). The message is one
/// line that says what was wrong and what to do; the observer prints it
/// alone and exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UserError {
    message: String,
}

impl UserError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// The one line to print for `error`: a [`UserError`] anywhere in the chain
/// speaks for itself; anything else is printed with its context chain.
pub fn one_line(error: &anyhow::Error) -> String {
    match error.chain().find_map(|e| e.downcast_ref::<UserError>()) {
        Some(user) => user.to_string(),
        None => format!("{error:#}").replace('\n', " "),
    }
}
