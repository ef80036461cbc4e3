//! Presence: per session, combined per person (the most available session wins), and
//! delivered only to contacts the person lets see it (Architecture invariant: presence never
//! reaches someone who is not allowed to see it).

use std::sync::{Arc, Mutex};

use crate::address::Address;
use crate::bus::{Delivery, Recipients};
use crate::error::{HubError, HubResult};
use crate::model::*;

use super::{Hub, HubInner, Person, SessionSlot};

const MAX_STATUS_CHARS: usize = 500;

/// Whether `person` lets `viewer` see their presence.
pub(super) fn visible_to(person: &Person, viewer: &Address) -> bool {
    if person.blocked.contains(viewer) {
        return false;
    }
    match (person.settings.visibility, person.audience.get(viewer)) {
        (Visibility::Nobody, _) | (_, None) => false,
        (Visibility::Contacts, Some(_)) => true,
        (Visibility::Chosen, Some(chosen)) => *chosen,
    }
}

/// The presence `viewer` sees of `person` (offline when not allowed).
fn seen_by(person: &Person, viewer: &Address) -> Presence {
    if visible_to(person, viewer) {
        person.presence.clone()
    } else {
        Presence::offline()
    }
}

fn combine(sessions: &[Arc<SessionSlot>]) -> Presence {
    sessions
        .iter()
        .map(|s| s.presence())
        .filter(|p| p.show != Availability::Offline)
        .min_by_key(|p| p.show)
        .unwrap_or_else(Presence::offline)
}

impl Hub {
    /// Sets one session's presence; the person's combined presence goes to those allowed.
    pub fn set_presence(&self, slot: &Arc<SessionSlot>, presence: Presence) -> HubResult<()> {
        if let Some(status) = &presence.status
            && status.chars().count() > MAX_STATUS_CHARS
        {
            return Err(HubError::InvalidInput(format!(
                "the status text must have at most {MAX_STATUS_CHARS} characters"
            )));
        }
        slot.lock().presence = presence.clone();
        let store = self.inner.store.clone();
        let id = slot.id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.set_session_presence(&id, &presence).await {
                tracing::warn!(error = %e, "could not store a session's presence");
            }
        });
        if let Some(person) = self.inner.person(slot.user) {
            self.inner.refresh_presence(&person);
        }
        Ok(())
    }

    /// The presence of one person as the principal may see it.
    pub fn presence_of(&self, viewer: &Address, person: &Address) -> Presence {
        match self
            .inner
            .online_user(person)
            .and_then(|u| self.inner.person(u))
        {
            Some(p) => seen_by(&p.lock().unwrap_or_else(|e| e.into_inner()), viewer),
            None => Presence::offline(),
        }
    }

    /// Applies changed settings to the in-memory person and tells contacts who gain or lose
    /// sight of their presence.
    pub(crate) fn settings_changed(&self, user: UserId, settings: AccountSettings) {
        if let Some(person) = self.inner.person(user) {
            self.inner.update_person(&person, |p| p.settings = settings);
        }
    }

    /// Applies a contact list change of `owner` to their in-memory state, if online.
    pub(crate) fn contact_changed(&self, contact: &Contact, removed: bool) {
        if let Some(person) = self.inner.person(contact.owner) {
            let peer = contact.peer.clone();
            self.inner.update_person(&person, |p| {
                if !removed && contact.from == SubState::Accepted {
                    p.audience.insert(peer.clone(), contact.chosen);
                } else {
                    p.audience.remove(&peer);
                }
                if !removed && contact.to == SubState::Accepted {
                    p.watching.insert(peer.clone());
                } else {
                    p.watching.remove(&peer);
                }
            });
        }
    }

    pub(crate) fn block_changed(&self, owner: UserId, peer: &Address, blocked: bool) {
        if let Some(person) = self.inner.person(owner) {
            self.inner.update_person(&person, |p| {
                if blocked {
                    p.blocked.insert(peer.clone());
                } else {
                    p.blocked.remove(peer);
                }
            });
        }
    }
}

impl HubInner {
    /// Changes a person's state and sends each online contact whose view of their presence
    /// changed the presence they now see.
    pub(crate) fn update_person(
        &self,
        person: &Arc<Mutex<Person>>,
        change: impl FnOnce(&mut Person),
    ) {
        let mut p = person.lock().unwrap_or_else(|e| e.into_inner());
        let mut viewers: Vec<Address> = p.audience.keys().cloned().collect();
        let before: Vec<Presence> = viewers.iter().map(|v| seen_by(&p, v)).collect();
        change(&mut p);
        for v in p.audience.keys() {
            if !viewers.contains(v) {
                viewers.push(v.clone());
            }
        }
        let from = p.address.clone();
        let changes: Vec<(Address, Presence)> = viewers
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let now = seen_by(&p, &v);
                let was = before.get(i).cloned().unwrap_or_else(Presence::offline);
                (now != was).then_some((v, now))
            })
            .collect();
        drop(p);
        for (viewer, presence) in changes {
            self.send_presence(&viewer, &from, presence);
        }
    }

    /// Recomputes a person's combined presence from their sessions and tells those allowed
    /// when it changed. A person with no sessions left is forgotten.
    pub(crate) fn refresh_presence(&self, person: &Arc<Mutex<Person>>) {
        let (sessions, user, address) = {
            let p = person.lock().unwrap_or_else(|e| e.into_inner());
            (p.sessions.clone(), p.user, p.address.clone())
        };
        let combined = combine(&sessions);
        let changed = {
            let p = person.lock().unwrap_or_else(|e| e.into_inner());
            p.presence != combined
        };
        if changed {
            self.update_person(person, |p| p.presence = combined);
        }
        if sessions.is_empty() {
            let mut people = self.people.write().unwrap_or_else(|e| e.into_inner());
            // Only forget them if no session attached meanwhile.
            let empty = people.get(&user).is_some_and(|p| {
                p.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .sessions
                    .is_empty()
            });
            if empty {
                people.remove(&user);
                self.by_address
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&address);
            }
        }
    }

    fn send_presence(&self, viewer: &Address, from: &Address, presence: Presence) {
        if let Some(user) = self.online_user(viewer) {
            self.bus.send(Delivery::Event {
                to: Recipients::Users(vec![user]),
                event: Event::Presence(Arc::new(PresenceUpdate {
                    from: from.clone(),
                    presence,
                })),
            });
        }
    }

    /// The presence of everyone the person watches and may see, for a session that attaches.
    pub(crate) fn presence_snapshot(&self, person: &Arc<Mutex<Person>>) -> Vec<Event> {
        let (me, watching) = {
            let p = person.lock().unwrap_or_else(|e| e.into_inner());
            (
                p.address.clone(),
                p.watching.iter().cloned().collect::<Vec<_>>(),
            )
        };
        watching
            .into_iter()
            .filter_map(|peer| {
                let other = self.person(self.online_user(&peer)?)?;
                let presence = seen_by(&other.lock().unwrap_or_else(|e| e.into_inner()), &me);
                (presence.show != Availability::Offline).then(|| {
                    Event::Presence(Arc::new(PresenceUpdate {
                        from: peer,
                        presence,
                    }))
                })
            })
            .collect()
    }
}
