//! The hub of Switchboard: accounts, contacts and subscriptions, presence, conversations and
//! their audiences, messages and their delivery state, server-held sessions, policy and
//! routing.
//!
//! Architecture invariant: this crate knows no wire protocol and no storage engine. Lines
//! (web, XMPP, …) translate their protocols into calls on [`Hub`] and turn [`model::Event`]s
//! back into their protocol; storage is reached only through the [`store::Store`] trait.

pub mod address;
pub mod bus;
pub mod credentials;
pub mod error;
pub mod hub;
pub mod limits;
pub mod model;
pub mod store;

pub use address::{Address, AddressError, Realm};
pub use error::HubError;
pub use hub::{Hub, HubConfig};
