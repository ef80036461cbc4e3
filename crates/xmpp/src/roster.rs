//! The roster (RFC 6121) is the hub's contact list; an XMPP subscription state is the pair of
//! the hub's per-direction states.

use switchboard_core::Address;
use switchboard_core::model::SubState;
use switchboard_xmpp_proto::Element;

use crate::stanza::{NS_CLIENT, NS_ROSTER};

/// The two directions of a contact as the hub keeps them: `to` (the owner sees the peer's
/// presence) and `from` (the peer sees the owner's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Directions {
    pub to: SubState,
    pub from: SubState,
}

impl Directions {
    /// RFC 6121 `subscription` attribute.
    pub fn subscription(self) -> &'static str {
        match (
            self.to == SubState::Accepted,
            self.from == SubState::Accepted,
        ) {
            (true, true) => "both",
            (true, false) => "to",
            (false, true) => "from",
            (false, false) => "none",
        }
    }

    /// RFC 6121 `ask='subscribe'`: the owner's request is waiting for an answer.
    pub fn asking(self) -> bool {
        self.to == SubState::Pending
    }
}

/// One `<item/>` of a roster result or push.
pub fn item(peer: &Address, name: Option<&str>, directions: Option<Directions>) -> Element {
    let mut item = Element::new("item", NS_ROSTER).with_attr("jid", peer.as_str());
    match directions {
        None => item.set_attr("subscription", "remove"),
        Some(d) => {
            item.set_attr("subscription", d.subscription());
            if d.asking() {
                item.set_attr("ask", "subscribe");
            }
        }
    }
    if let Some(name) = name {
        item.set_attr("name", name);
    }
    item
}

/// A roster push (RFC 6121 §2.1.6) of one item.
pub fn push(to: &str, id: &str, item: Element) -> Element {
    Element::new("iq", NS_CLIENT)
        .with_attr("type", "set")
        .with_attr("id", id)
        .with_attr("to", to)
        .with_child(Element::new("query", NS_ROSTER).with_child(item))
}

/// The subscription presences (RFC 6121 §3) a change of a contact's directions means for
/// its owner's client: `(type, from the peer)`.
pub fn presences_for_change(before: Directions, after: Directions) -> Vec<&'static str> {
    let mut out = Vec::new();
    if after.from == SubState::Pending && before.from != SubState::Pending {
        out.push("subscribe");
    }
    if after.to == SubState::Accepted && before.to != SubState::Accepted {
        out.push("subscribed");
    }
    if before.to != SubState::None && after.to == SubState::None {
        out.push("unsubscribed");
    }
    if before.from == SubState::Accepted && after.from == SubState::None {
        out.push("unsubscribe");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(to: SubState, from: SubState) -> Directions {
        Directions { to, from }
    }

    #[test]
    fn subscription_states_follow_rfc_6121() {
        use SubState::*;
        assert_eq!(d(Accepted, Accepted).subscription(), "both");
        assert_eq!(d(Accepted, Pending).subscription(), "to");
        assert_eq!(d(Pending, Accepted).subscription(), "from");
        assert!(d(Pending, Accepted).asking());
        assert_eq!(d(None, Pending).subscription(), "none");
    }

    #[test]
    fn changes_become_subscription_presences() {
        use SubState::*;
        assert_eq!(
            presences_for_change(d(None, None), d(None, Pending)),
            ["subscribe"]
        );
        assert_eq!(
            presences_for_change(d(Pending, None), d(Accepted, None)),
            ["subscribed"]
        );
        assert_eq!(
            presences_for_change(d(Pending, None), d(None, None)),
            ["unsubscribed"]
        );
        assert!(presences_for_change(d(Accepted, Accepted), d(Accepted, Accepted)).is_empty());
    }
}
