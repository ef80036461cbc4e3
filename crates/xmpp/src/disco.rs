//! Service discovery (XEP-0030) and the server's entity capabilities (XEP-0115).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};
use switchboard_xmpp_proto::Element;

use crate::stanza::*;

/// An identity: (category, type, name).
pub type Identity<'a> = (&'a str, &'a str, &'a str);

pub const SERVER_IDENTITY: Identity<'static> = ("server", "im", "Switchboard");
pub const SERVER_FEATURES: &[&str] = &[
    NS_BLOCKING,
    NS_CARBONS,
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_PING,
    NS_VERSION,
    "msgoffline",
];

pub const ACCOUNT_IDENTITY: Identity<'static> = ("account", "registered", "");
pub const ACCOUNT_FEATURES: &[&str] = &[NS_DISCO_INFO, NS_MAM, "urn:xmpp:mam:2#extended"];

pub const ROOMS_IDENTITY: Identity<'static> = ("conference", "text", "Group conversations");
pub const ROOMS_FEATURES: &[&str] = &[NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MUC];

pub const ROOM_FEATURES: &[&str] = &[
    NS_DISCO_INFO,
    NS_MUC,
    NS_MAM,
    NS_SID,
    "muc_membersonly",
    "muc_persistent",
    "muc_nonanonymous",
    "muc_hidden",
];

/// The `<query/>` of a disco#info result.
pub fn info(identity: Identity<'_>, features: &[&str], node: Option<&str>) -> Element {
    let mut query = Element::new("query", NS_DISCO_INFO);
    if let Some(node) = node {
        query.set_attr("node", node);
    }
    let mut id = Element::new("identity", NS_DISCO_INFO)
        .with_attr("category", identity.0)
        .with_attr("type", identity.1);
    if !identity.2.is_empty() {
        id.set_attr("name", identity.2);
    }
    query.append_child(id);
    for feature in features {
        query.append_child(Element::new("feature", NS_DISCO_INFO).with_attr("var", *feature));
    }
    query
}

/// XEP-0115 §5.1 verification string of an identity and features (no forms).
pub fn caps_ver(identity: Identity<'_>, features: &[&str]) -> String {
    let mut sorted: Vec<&str> = features.to_vec();
    sorted.sort_unstable();
    let mut s = format!("{}/{}//{}<", identity.0, identity.1, identity.2);
    for f in sorted {
        s.push_str(f);
        s.push('<');
    }
    STANDARD.encode(Sha1::digest(s.as_bytes()))
}

pub const CAPS_NODE: &str = "https://switchboard.invalid/caps";

/// The `<c/>` stream feature announcing the server's capabilities.
pub fn caps_feature() -> Element {
    Element::new("c", NS_CAPS)
        .with_attr("hash", "sha-1")
        .with_attr("node", CAPS_NODE)
        .with_attr("ver", caps_ver(SERVER_IDENTITY, SERVER_FEATURES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_ver_matches_xep_0115_simple_example() {
        // XEP-0115 §5.2: client/pc//Exodus 0.9.1 with four features.
        let features = [
            "http://jabber.org/protocol/caps",
            "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/disco#items",
            "http://jabber.org/protocol/muc",
        ];
        assert_eq!(
            caps_ver(("client", "pc", "Exodus 0.9.1"), &features),
            "QgayPKawpkPSDYmwT/WM94uAlu0="
        );
    }
}
