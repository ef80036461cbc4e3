//! Where a stanza is addressed, parsed once at the edge into what the hub understands.

use switchboard_core::model::ConversationId;
use switchboard_core::{Address, Hub};

/// The subdomain under which group conversations appear as multi-user chat rooms.
pub const ROOMS_PREFIX: &str = "conference.";

/// The addressee of a stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// No `to`, or the server's own domain: the server answers.
    Server,
    /// The rooms service itself (`conference.<realm>`).
    Rooms,
    /// A person by bare address.
    Bare(Address),
    /// One resource of a person.
    Full(Address, String),
    /// A group conversation as a room, optionally with an occupant nick.
    Room(ConversationId, Option<String>),
    /// Anything else (another server, a malformed address): not reachable from here.
    Elsewhere(String),
}

/// Splits `local@domain/resource` (RFC 7622 order: the resource starts at the first `/`).
pub fn split(text: &str) -> (Option<&str>, &str, Option<&str>) {
    let (bare, resource) = match text.find('/') {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    match bare.find('@') {
        Some(i) => (Some(&bare[..i]), &bare[i + 1..], resource),
        None => (None, bare, resource),
    }
}

pub fn parse_target(hub: &Hub, to: Option<&str>) -> Target {
    let Some(text) = to.filter(|t| !t.is_empty()) else {
        return Target::Server;
    };
    let (local, domain, resource) = split(text);
    let domain_lower = domain.to_ascii_lowercase();
    if let Some(realm) = domain_lower.strip_prefix(ROOMS_PREFIX)
        && hub.config().serves(realm)
    {
        return match local {
            None => Target::Rooms,
            Some(local) => match uuid::Uuid::parse_str(local) {
                Ok(id) => Target::Room(
                    ConversationId(id),
                    resource.filter(|r| !r.is_empty()).map(str::to_string),
                ),
                Err(_) => Target::Elsewhere(text.to_string()),
            },
        };
    }
    match local {
        None if hub.config().serves(&domain_lower) && resource.is_none() => Target::Server,
        None => Target::Elsewhere(text.to_string()),
        Some(local) => match Address::parse_full(&format!("{local}@{domain}")) {
            Ok(address) if hub.config().serves(address.realm_str()) => match resource {
                Some(r) if !r.is_empty() => Target::Full(address, r.to_string()),
                _ => Target::Bare(address),
            },
            _ => Target::Elsewhere(text.to_string()),
        },
    }
}

/// The room address of a group conversation.
pub fn room_jid(hub: &Hub, id: ConversationId) -> String {
    format!(
        "{}@{ROOMS_PREFIX}{}",
        id.0,
        hub.config().default_realm().as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_first_slash_and_the_at_before_it() {
        assert_eq!(split("a@b/c/d@e"), (Some("a"), "b", Some("c/d@e")));
        assert_eq!(split("b"), (None, "b", None));
        assert_eq!(split("b/r"), (None, "b", Some("r")));
    }
}
