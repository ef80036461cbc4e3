//! Personal eventing (XEP-0163): the subset of publish-subscribe (XEP-0060) that clients use
//! on their own account for avatars (XEP-0084), OMEMO device lists and bundles, nicknames.
//! Items are the hub's personal items; who may read them and who is notified follows the
//! presence rules (the "presence" access model).

use switchboard_core::hub::{Hub, Principal};
use switchboard_core::model::{ItemUpdate, PersonalItem};
use switchboard_core::{Address, HubError};
use switchboard_xmpp_proto::{Element, Limits, parse_element};

use crate::jid::Target;
use crate::stanza::*;

pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const NS_PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const NS_PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";

/// Disco features of an account that offers PEP.
pub const FEATURES: &[&str] = &[
    NS_PUBSUB,
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#last-published",
];

/// Items a node keeps when the publisher does not say.
const DEFAULT_KEEP: usize = 1;
/// Items returned when the requester does not say.
const DEFAULT_ITEMS: usize = 50;

fn item_element(ns: &str, id: &str, payload: Option<&str>) -> Element {
    let mut item = Element::new("item", ns).with_attr("id", id);
    // Stored payloads were serialized from elements, so they parse back.
    if let Some(payload) = payload.and_then(|p| parse_element(p.as_bytes(), Limits::default()).ok())
    {
        item.append_child(payload);
    }
    item
}

/// The notification a contact's client gets when an item is published or retracted.
pub fn notification(update: &ItemUpdate) -> Element {
    let items = match &update.payload {
        Some(payload) => Element::new("items", NS_PUBSUB_EVENT)
            .with_attr("node", update.node.as_str())
            .with_child(item_element(NS_PUBSUB_EVENT, &update.id, Some(payload))),
        None => Element::new("items", NS_PUBSUB_EVENT)
            .with_attr("node", update.node.as_str())
            .with_child(
                Element::new("retract", NS_PUBSUB_EVENT).with_attr("id", update.id.as_str()),
            ),
    };
    Element::new("message", NS_CLIENT)
        .with_attr("type", "headline")
        .with_attr("from", update.owner.as_str())
        .with_child(Element::new("event", NS_PUBSUB_EVENT).with_child(items))
}

fn error(iq: &Element, condition: Condition, text: &str) -> Element {
    error_reply(iq, condition, Some(text))
}

fn hub_error(iq: &Element, e: HubError) -> Element {
    match e {
        HubError::NotFound(t) => error(iq, Condition::ItemNotFound, &t),
        HubError::InvalidInput(t) => error(iq, Condition::BadRequest, &t),
        HubError::TooLarge(t) => error(iq, Condition::NotAcceptable, &t),
        other => error(iq, Condition::InternalServerError, &other.to_string()),
    }
}

/// `pubsub#max_items` from publish options ("max" is the most a node keeps).
fn keep_from_options(pubsub: &Element) -> usize {
    pubsub
        .get_child("publish-options", NS_PUBSUB)
        .and_then(|o| o.get_child("x", NS_DATA))
        .into_iter()
        .flat_map(|x| x.children())
        .find(|f| f.attr("var") == Some("pubsub#max_items"))
        .and_then(|f| f.get_child("value", NS_DATA))
        .map(|v| match v.text().trim() {
            "max" => switchboard_core::hub::MAX_ITEMS_PER_NODE,
            n => n.parse().unwrap_or(DEFAULT_KEEP),
        })
        .unwrap_or(DEFAULT_KEEP)
}

/// Answers a pubsub IQ addressed to an account (own or a contact's).
pub async fn iq(
    hub: &Hub,
    principal: &Principal,
    iq: &Element,
    pubsub: &Element,
    target: &Target,
) -> Element {
    let owner: Address = match target {
        Target::Server => principal.address.clone(),
        Target::Bare(a) => a.clone(),
        _ => return error(iq, Condition::ServiceUnavailable, "no pubsub service here"),
    };
    let own = owner == principal.address;
    let kind = iq.attr("type").unwrap_or_default();
    if pubsub.ns() == NS_PUBSUB_OWNER {
        return match (kind, pubsub.get_child("delete", NS_PUBSUB_OWNER)) {
            ("set", Some(delete)) if own => {
                let node = delete.attr("node").unwrap_or_default();
                match hub.delete_node(principal, node).await {
                    Ok(()) => iq_result(iq),
                    Err(e) => hub_error(iq, e),
                }
            }
            ("set", Some(_)) => error(iq, Condition::Forbidden, "only the owner deletes a node"),
            _ => error(
                iq,
                Condition::FeatureNotImplemented,
                "node configuration is fixed: presence access, the publisher's item limit",
            ),
        };
    }
    if kind == "set" && !own {
        return error(
            iq,
            Condition::Forbidden,
            "only the owner publishes to personal nodes",
        );
    }
    if let Some(publish) = pubsub
        .get_child("publish", NS_PUBSUB)
        .filter(|_| kind == "set")
    {
        let node = publish.attr("node").unwrap_or_default();
        let Some(item) = publish.get_child("item", NS_PUBSUB) else {
            return error(iq, Condition::BadRequest, "a publish needs an <item/>");
        };
        let id = item
            .attr("id")
            .map(str::to_string)
            .unwrap_or_else(switchboard_core::credentials::new_public_id);
        let Some(payload) = item.children().next() else {
            return error(iq, Condition::BadRequest, "an item needs a payload element");
        };
        return match hub
            .publish_item(
                principal,
                node,
                &id,
                payload.to_xml(),
                keep_from_options(pubsub),
            )
            .await
        {
            Ok(()) => iq_result(iq).with_child(
                Element::new("pubsub", NS_PUBSUB).with_child(
                    Element::new("publish", NS_PUBSUB)
                        .with_attr("node", node)
                        .with_child(Element::new("item", NS_PUBSUB).with_attr("id", id)),
                ),
            ),
            Err(e) => hub_error(iq, e),
        };
    }
    if let Some(retract) = pubsub
        .get_child("retract", NS_PUBSUB)
        .filter(|_| kind == "set")
    {
        let node = retract.attr("node").unwrap_or_default();
        for item in retract.children().filter(|c| c.name() == "item") {
            let id = item.attr("id").unwrap_or_default();
            if let Err(e) = hub.retract_item(principal, node, id).await {
                return hub_error(iq, e);
            }
        }
        return iq_result(iq);
    }
    if let Some(items) = pubsub
        .get_child("items", NS_PUBSUB)
        .filter(|_| kind == "get")
    {
        let node = items.attr("node").unwrap_or_default();
        let wanted: Vec<&str> = items
            .children()
            .filter(|c| c.name() == "item")
            .filter_map(|c| c.attr("id"))
            .collect();
        let limit = items
            .attr("max_items")
            .and_then(|m| m.parse().ok())
            .unwrap_or(DEFAULT_ITEMS);
        let found: Vec<PersonalItem> = match hub
            .items_of(
                principal,
                &owner,
                node,
                if wanted.is_empty() { limit } else { 1000 },
            )
            .await
        {
            Ok(found) => found,
            Err(e) => return hub_error(iq, e),
        };
        if found.is_empty() {
            return error(iq, Condition::ItemNotFound, "the node has no items");
        }
        let mut out = Element::new("items", NS_PUBSUB).with_attr("node", node);
        for item in found
            .iter()
            .filter(|i| wanted.is_empty() || wanted.contains(&i.id.as_str()))
        {
            out.append_child(item_element(NS_PUBSUB, &item.id, Some(&item.payload)));
        }
        return iq_result(iq).with_child(Element::new("pubsub", NS_PUBSUB).with_child(out));
    }
    error(
        iq,
        Condition::FeatureNotImplemented,
        "personal eventing supports publish, retract, items and delete",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_options_set_how_many_items_a_node_keeps() {
        let form = |value: &str| {
            Element::new("pubsub", NS_PUBSUB).with_child(
                Element::new("publish-options", NS_PUBSUB).with_child(
                    Element::new("x", NS_DATA)
                        .with_attr("type", "submit")
                        .with_child(
                            Element::new("field", NS_DATA)
                                .with_attr("var", "pubsub#max_items")
                                .with_child(Element::new("value", NS_DATA).with_text(value)),
                        ),
                ),
            )
        };
        assert_eq!(keep_from_options(&form("10")), 10);
        assert_eq!(
            keep_from_options(&form("max")),
            switchboard_core::hub::MAX_ITEMS_PER_NODE
        );
        assert_eq!(
            keep_from_options(&Element::new("pubsub", NS_PUBSUB)),
            DEFAULT_KEEP
        );
    }
}
