//! Personal items: what a person publishes about themselves (XMPP personal eventing: avatars,
//! OMEMO device lists and key bundles, nicknames). They are stored per person and node, and
//! seen by exactly those who may see the person's presence (Architecture invariant 6).

use std::sync::Arc;

use crate::address::Address;
use crate::bus::{Delivery, Recipients};
use crate::error::{HubError, HubResult};
use crate::model::*;

use super::presence::visible_to;
use super::{Hub, Principal};

/// Most items a node keeps, whatever the publisher asks for.
pub const MAX_ITEMS_PER_NODE: usize = 1000;
const MAX_NODE_BYTES: usize = 256;
const MAX_ITEM_ID_BYTES: usize = 256;

fn check_names(node: &str, id: Option<&str>) -> HubResult<()> {
    if node.is_empty() || node.len() > MAX_NODE_BYTES {
        return Err(HubError::InvalidInput(format!(
            "a node name must have 1 to {MAX_NODE_BYTES} bytes"
        )));
    }
    if let Some(id) = id
        && (id.is_empty() || id.len() > MAX_ITEM_ID_BYTES)
    {
        return Err(HubError::InvalidInput(format!(
            "an item id must have 1 to {MAX_ITEM_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

impl Hub {
    /// Publishes (or replaces) an item; the node keeps its `keep` newest items. The person's
    /// sessions and everyone allowed to see their presence are told.
    pub async fn publish_item(
        &self,
        principal: &Principal,
        node: &str,
        id: &str,
        payload: String,
        keep: usize,
    ) -> HubResult<()> {
        check_names(node, Some(id))?;
        if payload.len() > self.inner.config.max_message_bytes {
            return Err(HubError::TooLarge(format!(
                "the item has {} bytes; the limit is {}",
                payload.len(),
                self.inner.config.max_message_bytes
            )));
        }
        let item = PersonalItem {
            node: node.to_string(),
            id: id.to_string(),
            payload: payload.clone(),
            updated_at: now_millis(),
        };
        self.inner
            .store
            .put_personal_item(principal.user, item, keep.clamp(1, MAX_ITEMS_PER_NODE))
            .await?;
        self.announce_item(principal, node, id, Some(payload));
        Ok(())
    }

    /// Retracts one item.
    pub async fn retract_item(&self, principal: &Principal, node: &str, id: &str) -> HubResult<()> {
        check_names(node, Some(id))?;
        if !self
            .inner
            .store
            .delete_personal_item(principal.user, node, Some(id))
            .await?
        {
            return Err(HubError::NotFound(format!(
                "there is no item {id:?} in {node:?}"
            )));
        }
        self.announce_item(principal, node, id, None);
        Ok(())
    }

    /// Removes a whole node with its items.
    pub async fn delete_node(&self, principal: &Principal, node: &str) -> HubResult<()> {
        check_names(node, None)?;
        if !self
            .inner
            .store
            .delete_personal_item(principal.user, node, None)
            .await?
        {
            return Err(HubError::NotFound(format!("there is no node {node:?}")));
        }
        Ok(())
    }

    /// The newest items of a person's node, if the viewer may see them (the person
    /// themselves, or someone allowed to see their presence). Not being allowed reads like
    /// the node not existing.
    pub async fn items_of(
        &self,
        viewer: &Principal,
        owner: &Address,
        node: &str,
        limit: usize,
    ) -> HubResult<Vec<PersonalItem>> {
        check_names(node, None)?;
        let owner_id = if owner == &viewer.address {
            viewer.user
        } else {
            let account = self
                .inner
                .store
                .account_by_address(owner)
                .await?
                .ok_or_else(|| HubError::NotFound(format!("there is no node {node:?}")))?;
            if !self.may_see_items(&account, &viewer.address).await? {
                return Err(HubError::NotFound(format!("there is no node {node:?}")));
            }
            account.id
        };
        Ok(self
            .inner
            .store
            .personal_items(owner_id, node, limit.clamp(1, MAX_ITEMS_PER_NODE))
            .await?)
    }

    /// Whether `viewer` may see `owner`'s items: the same rule as for presence, read from
    /// the store (the owner may be offline).
    async fn may_see_items(&self, owner: &Account, viewer: &Address) -> HubResult<bool> {
        let store = &self.inner.store;
        if store.is_blocked(owner.id, viewer).await? {
            return Ok(false);
        }
        let Some(contact) = store.contact(owner.id, viewer).await? else {
            return Ok(false);
        };
        Ok(contact.from == SubState::Accepted
            && match owner.settings.visibility {
                Visibility::Contacts => true,
                Visibility::Chosen => contact.chosen,
                Visibility::Nobody => false,
            })
    }

    /// Relays a stanza to one endpoint of a person (or to all, `to_endpoint` `None`): one of
    /// the principal's own, or one of a contact with a subscription in either direction who
    /// does not block the principal and is online. Anyone else reads like an endpoint that
    /// does not exist.
    pub fn relay_to_endpoint(
        &self,
        principal: &Principal,
        from_endpoint: &str,
        to: &Address,
        to_endpoint: Option<&str>,
        payload: String,
    ) -> HubResult<()> {
        let unavailable = || HubError::NotFound(format!("{to} is not available"));
        let to_user = self.inner.online_user(to).ok_or_else(unavailable)?;
        if to != &principal.address {
            let me = self.inner.person(principal.user).ok_or_else(unavailable)?;
            let related = {
                let p = me.lock().unwrap_or_else(|e| e.into_inner());
                p.audience.contains_key(to) || p.watching.contains(to)
            };
            let blocked = self.inner.person(to_user).is_none_or(|them| {
                them.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .blocked
                    .contains(&principal.address)
            });
            if !related || blocked {
                return Err(unavailable());
            }
        }
        self.inner.bus.send(Delivery::Event {
            to: Recipients::Users(vec![to_user]),
            event: Event::Endpoint(Arc::new(EndpointStanza {
                from: principal.address.clone(),
                from_endpoint: from_endpoint.to_string(),
                to_endpoint: to_endpoint.map(str::to_string),
                payload,
            })),
        });
        Ok(())
    }

    fn announce_item(&self, principal: &Principal, node: &str, id: &str, payload: Option<String>) {
        let mut to = vec![principal.user];
        if let Some(person) = self.inner.person(principal.user) {
            let p = person.lock().unwrap_or_else(|e| e.into_inner());
            to.extend(
                p.audience
                    .keys()
                    .filter(|viewer| visible_to(&p, viewer))
                    .filter_map(|viewer| self.inner.online_user(viewer)),
            );
        }
        self.inner.bus.send(Delivery::Event {
            to: Recipients::Users(to),
            event: Event::Item(Arc::new(ItemUpdate {
                owner: principal.address.clone(),
                node: node.to_string(),
                id: id.to_string(),
                payload,
            })),
        });
    }
}
