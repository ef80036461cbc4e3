//! Contacts and subscriptions (MISSION T1: the server sets up the channel between two users).
//!
//! Subscriptions are per direction as XMPP defines them. The web's "request" and "accept" are
//! compositions: a request asks for the peer's presence, and accepting it grants both
//! directions at once.

use crate::address::Address;
use crate::error::{HubError, HubResult};
use crate::model::*;

use super::{Hub, Principal};

/// A contact list entry with the presence its owner may see of the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactView {
    pub contact: Contact,
    pub presence: Presence,
}

pub(crate) fn event_for(contact: &Contact, removed: bool) -> AccountEvent {
    AccountEvent::Contact {
        peer: contact.peer.clone(),
        to: contact.to,
        from: contact.from,
        name: contact.name.clone(),
        chosen: contact.chosen,
        removed,
    }
}

/// The two entries a change touches: the owner's entry for the peer, and the peer's entry for
/// the owner when the peer has an account here.
struct Pair {
    mine: Contact,
    mine_existed: bool,
    theirs: Option<(Contact, bool)>,
    /// Whether the peer blocks the owner: then nothing reaches the peer.
    blocked_by_peer: bool,
}

impl Hub {
    pub async fn contacts(&self, principal: &Principal) -> HubResult<Vec<ContactView>> {
        let contacts = self.inner.store.contacts_of(principal.user).await?;
        Ok(contacts
            .into_iter()
            .map(|contact| {
                let presence = if contact.to == SubState::Accepted {
                    self.presence_of(&principal.address, &contact.peer)
                } else {
                    Presence::offline()
                };
                ContactView { contact, presence }
            })
            .collect())
    }

    /// Asks for a person's presence (a contact request). Asking someone who has asked you
    /// accepts their request.
    pub async fn request_contact(&self, principal: &Principal, peer: &Address) -> HubResult<()> {
        if !self.inner.contact_limiter.check(&principal.user) {
            return Err(HubError::RateLimited(
                "too many contact requests; wait a minute and try again".into(),
            ));
        }
        self.change_pair(principal, peer, |pair| {
            if pair.mine.from == SubState::Pending {
                grant_both(pair);
                return Ok(());
            }
            if pair.mine.to != SubState::Accepted {
                pair.mine.to = SubState::Pending;
            }
            if let Some((theirs, _)) = &mut pair.theirs
                && !pair.blocked_by_peer
                && theirs.from != SubState::Accepted
            {
                theirs.from = SubState::Pending;
            }
            Ok(())
        })
        .await
    }

    /// Answers a contact request. Accepting grants both directions.
    pub async fn answer_contact(
        &self,
        principal: &Principal,
        peer: &Address,
        accept: bool,
    ) -> HubResult<()> {
        self.change_pair(principal, peer, |pair| {
            if pair.mine.from != SubState::Pending {
                return Err(HubError::NotFound(format!(
                    "there is no contact request from {}",
                    pair.mine.peer
                )));
            }
            if accept {
                grant_both(pair);
            } else {
                pair.mine.from = SubState::None;
                if let Some((theirs, _)) = &mut pair.theirs
                    && theirs.to == SubState::Pending
                {
                    theirs.to = SubState::None;
                }
            }
            Ok(())
        })
        .await
    }

    /// Lets the peer see the principal's presence: one direction only (XMPP `subscribed`),
    /// answering the peer's pending request. Already granted is fine.
    pub async fn grant_presence(&self, principal: &Principal, peer: &Address) -> HubResult<()> {
        self.change_pair(principal, peer, |pair| {
            match pair.mine.from {
                SubState::Accepted => return Ok(()),
                SubState::Pending => {}
                SubState::None => {
                    return Err(HubError::NotFound(format!(
                        "there is no contact request from {}",
                        pair.mine.peer
                    )));
                }
            }
            pair.mine.from = SubState::Accepted;
            if let Some((theirs, _)) = &mut pair.theirs {
                theirs.to = SubState::Accepted;
            }
            Ok(())
        })
        .await
    }

    /// The peer stops seeing the principal's presence, or is refused it (XMPP
    /// `unsubscribed`). The other direction stays as it is.
    pub async fn revoke_presence(&self, principal: &Principal, peer: &Address) -> HubResult<()> {
        self.change_pair(principal, peer, |pair| {
            require_existing(pair)?;
            pair.mine.from = SubState::None;
            if let Some((theirs, _)) = &mut pair.theirs
                && theirs.to != SubState::None
            {
                theirs.to = SubState::None;
            }
            Ok(())
        })
        .await
    }

    /// The principal stops receiving the peer's presence, or withdraws a request (XMPP
    /// `unsubscribe`). The other direction stays as it is.
    pub async fn stop_watching(&self, principal: &Principal, peer: &Address) -> HubResult<()> {
        self.change_pair(principal, peer, |pair| {
            require_existing(pair)?;
            pair.mine.to = SubState::None;
            if let Some((theirs, _)) = &mut pair.theirs
                && theirs.from != SubState::None
            {
                theirs.from = SubState::None;
            }
            Ok(())
        })
        .await
    }

    /// Puts a person in the principal's contact list without asking for anything (an XMPP
    /// roster set), or renames them.
    pub async fn save_contact(
        &self,
        principal: &Principal,
        peer: &Address,
        name: Option<String>,
    ) -> HubResult<()> {
        if let Some(name) = &name
            && name.chars().count() > 100
        {
            return Err(HubError::InvalidInput(
                "a contact's name must have at most 100 characters".into(),
            ));
        }
        self.change_pair(principal, peer, |pair| {
            pair.mine.name = name;
            Ok(())
        })
        .await
    }

    /// Removes a contact: both directions end, on both sides.
    pub async fn remove_contact(&self, principal: &Principal, peer: &Address) -> HubResult<()> {
        let _guard = self.inner.contact_lock.lock().await;
        let store = &self.inner.store;
        let mine = store
            .contact(principal.user, peer)
            .await?
            .ok_or_else(|| HubError::NotFound(format!("{peer} is not in your contacts")))?;
        let mut changes = vec![Change::DeleteContact {
            owner: principal.user,
            peer: peer.clone(),
        }];
        let mut events = vec![(principal.user, event_for(&mine, true))];
        let mut theirs_changed = None;
        if let Some(account) = store.account_by_address(peer).await?
            && let Some(mut theirs) = store.contact(account.id, &principal.address).await?
        {
            theirs.to = SubState::None;
            theirs.from = SubState::None;
            changes.push(Change::PutContact(theirs.clone()));
            events.push((account.id, event_for(&theirs, false)));
            theirs_changed = Some(theirs);
        }
        self.inner
            .journal()
            .submit(JournalEntry::Changes { changes, events })
            .await?;
        self.contact_changed(&mine, true);
        if let Some(theirs) = theirs_changed {
            self.contact_changed(&theirs, false);
        }
        Ok(())
    }

    /// Names a contact, or marks them as one of the chosen few who see presence when
    /// visibility is "chosen".
    pub async fn update_contact(
        &self,
        principal: &Principal,
        peer: &Address,
        name: Option<Option<String>>,
        chosen: Option<bool>,
    ) -> HubResult<()> {
        if let Some(Some(name)) = &name
            && name.chars().count() > 100
        {
            return Err(HubError::InvalidInput(
                "a contact's name must have at most 100 characters".into(),
            ));
        }
        self.change_pair(principal, peer, |pair| {
            if !pair.mine_existed {
                return Err(HubError::NotFound(format!(
                    "{} is not in your contacts",
                    pair.mine.peer
                )));
            }
            if let Some(name) = name {
                pair.mine.name = name;
            }
            if let Some(chosen) = chosen {
                pair.mine.chosen = chosen;
            }
            Ok(())
        })
        .await
    }

    /// Blocks an address: it gets nothing from the principal (no presence, no messages, no
    /// requests), on every line.
    pub async fn block(&self, principal: &Principal, peer: &Address) -> HubResult<()> {
        self.set_blocked(principal, peer, true).await
    }

    pub async fn unblock(&self, principal: &Principal, peer: &Address) -> HubResult<()> {
        self.set_blocked(principal, peer, false).await
    }

    async fn set_blocked(
        &self,
        principal: &Principal,
        peer: &Address,
        blocked: bool,
    ) -> HubResult<()> {
        let (owner, peer_text) = (principal.user, peer.clone());
        let change = if blocked {
            Change::Block {
                owner,
                peer: peer_text,
            }
        } else {
            Change::Unblock {
                owner,
                peer: peer_text,
            }
        };
        self.inner
            .journal()
            .submit(JournalEntry::Changes {
                changes: vec![change],
                events: vec![],
            })
            .await?;
        self.block_changed(principal.user, peer, blocked);
        Ok(())
    }

    pub async fn blocked(&self, principal: &Principal) -> HubResult<Vec<Address>> {
        Ok(self.inner.store.blocks_of(principal.user).await?)
    }

    /// Reads both entries, lets `change` edit them, and commits what changed with an event to
    /// each side.
    async fn change_pair(
        &self,
        principal: &Principal,
        peer: &Address,
        change: impl FnOnce(&mut Pair) -> HubResult<()>,
    ) -> HubResult<()> {
        if peer == &principal.address {
            return Err(HubError::InvalidInput(
                "you cannot add yourself as a contact".into(),
            ));
        }
        let _guard = self.inner.contact_lock.lock().await;
        let store = &self.inner.store;
        let account = if self.inner.config.serves(peer.realm_str()) {
            Some(
                store
                    .account_by_address(peer)
                    .await?
                    .ok_or_else(|| HubError::NotFound(format!("there is no user {peer}")))?,
            )
        } else {
            return Err(HubError::NotFound(format!(
                "the realm {} is not reachable from this server",
                peer.realm_str()
            )));
        };
        let existing = store.contact(principal.user, peer).await?;
        let mine_existed = existing.is_some();
        let mine = existing.unwrap_or_else(|| Contact::new(principal.user, peer.clone()));
        let mut theirs = None;
        let mut blocked_by_peer = false;
        if let Some(account) = &account {
            blocked_by_peer = store.is_blocked(account.id, &principal.address).await?;
            let existing = store.contact(account.id, &principal.address).await?;
            let existed = existing.is_some();
            theirs = Some((
                existing.unwrap_or_else(|| Contact::new(account.id, principal.address.clone())),
                existed,
            ));
        }
        let before_mine = mine.clone();
        let before_theirs = theirs.as_ref().map(|(c, _)| c.clone());
        let mut pair = Pair {
            mine,
            mine_existed,
            theirs,
            blocked_by_peer,
        };
        change(&mut pair)?;
        let mut changes = Vec::new();
        let mut events = Vec::new();
        let mut changed = Vec::new();
        if pair.mine != before_mine || !pair.mine_existed {
            changes.push(Change::PutContact(pair.mine.clone()));
            events.push((pair.mine.owner, event_for(&pair.mine, false)));
            changed.push(pair.mine.clone());
        }
        if let Some((theirs, existed)) = pair.theirs
            && !blocked_by_peer
            && (Some(&theirs) != before_theirs.as_ref() || !existed)
            && (theirs.to != SubState::None || theirs.from != SubState::None || existed)
        {
            changes.push(Change::PutContact(theirs.clone()));
            events.push((theirs.owner, event_for(&theirs, false)));
            changed.push(theirs);
        }
        if changes.is_empty() {
            return Ok(());
        }
        self.inner
            .journal()
            .submit(JournalEntry::Changes { changes, events })
            .await?;
        for contact in &changed {
            self.contact_changed(contact, false);
        }
        Ok(())
    }
}

fn require_existing(pair: &Pair) -> HubResult<()> {
    if pair.mine_existed {
        Ok(())
    } else {
        Err(HubError::NotFound(format!(
            "{} is not in your contacts",
            pair.mine.peer
        )))
    }
}

/// Both people see each other's presence.
fn grant_both(pair: &mut Pair) {
    pair.mine.from = SubState::Accepted;
    pair.mine.to = SubState::Accepted;
    if let Some((theirs, _)) = &mut pair.theirs {
        theirs.from = SubState::Accepted;
        theirs.to = SubState::Accepted;
    }
}
