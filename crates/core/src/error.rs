//! The hub's errors. Each has a stable machine-readable code that lines map onto their
//! protocol (an HTTP status and JSON body, an XMPP error condition, …) and a message that
//! names what was wrong.

use crate::address::AddressError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    BadAddress(#[from] AddressError),
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("not logged in, or the login was revoked")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A message or request to someone who does not exist or does not accept it from the
    /// sender. Both cases read the same so that nothing leaks about who exists or who refuses.
    #[error("the recipient is unknown or does not accept messages from you")]
    RecipientUnavailable,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    RateLimited(String),
    #[error("the session has expired or does not exist; open a new one")]
    SessionGone,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
}

impl HubError {
    /// The stable code clients can branch on.
    pub fn code(&self) -> &'static str {
        match self {
            HubError::InvalidInput(_) => "invalid_input",
            HubError::BadAddress(_) => "invalid_address",
            HubError::BadCredentials => "bad_credentials",
            HubError::Unauthenticated => "unauthenticated",
            HubError::Forbidden(_) => "forbidden",
            HubError::NotFound(_) => "not_found",
            HubError::RecipientUnavailable => "recipient_unavailable",
            HubError::Conflict(_) => "conflict",
            HubError::TooLarge(_) => "too_large",
            HubError::RateLimited(_) => "rate_limited",
            HubError::SessionGone => "session_gone",
            HubError::ShuttingDown => "shutting_down",
            HubError::Store(StoreError::AlreadyExists(_)) => "conflict",
            HubError::Store(StoreError::NotFound(_)) => "not_found",
            HubError::Store(_) => "store_unavailable",
        }
    }
}

pub type HubResult<T> = Result<T, HubError>;
