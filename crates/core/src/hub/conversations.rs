//! Conversations and messages: one path for every message (policy, store, acknowledgement,
//! routing). A message is acknowledged only once the store has it; a confidential
//! conversation keeps nothing and says so.

use std::sync::Arc;

use crate::address::Address;
use crate::bus::{Delivery, Recipients};
use crate::error::{HubError, HubResult};
use crate::model::*;

use super::{ConvInfo, Hub, Principal, SessionSlot};

/// The longest client-chosen message id accepted.
const MAX_CLIENT_ID: usize = 128;
/// The longest conversation title accepted, in characters.
const MAX_TITLE_CHARS: usize = 200;

/// A conversation as one member sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationView {
    pub conversation: Conversation,
    pub members: Vec<Member>,
    /// The newest message's number (0 when there is none).
    pub last_seq: Seq,
}

/// Which endpoints a message is from and to, where the line knows (XMPP resources).
#[derive(Debug, Clone, Copy, Default)]
pub struct Endpoints<'a> {
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    /// No copies to the person's other endpoints (XEP-0280 `<private/>`).
    pub private: bool,
}

/// The acknowledgement a sender gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendAck {
    pub id: MessageId,
    pub conversation: ConversationId,
    /// The message's number and journal position; absent for a confidential conversation.
    pub seq: Option<Seq>,
    pub pos: Option<Pos>,
    pub sent_at: Millis,
    /// False for a confidential conversation: relayed, not stored.
    pub stored: bool,
    /// The same client id was sent before; this is the earlier message.
    pub duplicate: bool,
}

impl Hub {
    /// The direct conversation between the principal and a peer, created on first use when
    /// the peer accepts conversations from the principal.
    pub async fn open_direct(
        &self,
        principal: &Principal,
        peer: &Address,
    ) -> HubResult<ConversationView> {
        if peer == &principal.address {
            return Err(HubError::InvalidInput(
                "a direct conversation needs another person".into(),
            ));
        }
        let id = ConversationId::direct(&principal.address, peer);
        if self.conversation_info(id).await?.is_none() {
            let peer_id = self.may_start(principal, peer).await?;
            let conversation = Conversation {
                id,
                kind: ConversationKind::Direct,
                title: None,
                confidential: false,
                created_by: principal.address.clone(),
                created_at: now_millis(),
            };
            self.inner
                .journal()
                .submit(JournalEntry::Changes {
                    changes: vec![Change::CreateConversation {
                        conversation,
                        members: vec![
                            (principal.user, principal.address.clone()),
                            (peer_id, peer.clone()),
                        ],
                    }],
                    events: vec![
                        (principal.user, AccountEvent::Joined { conversation: id }),
                        (peer_id, AccountEvent::Joined { conversation: id }),
                    ],
                })
                .await?;
        }
        self.conversation(principal, id).await
    }

    /// Creates a group conversation. Every member must accept conversations from the
    /// creator. A confidential one lives only in memory: nothing about it is ever stored.
    pub async fn create_group(
        &self,
        principal: &Principal,
        title: Option<String>,
        members: &[Address],
        confidential: bool,
    ) -> HubResult<ConversationView> {
        if let Some(title) = &title
            && title.chars().count() > MAX_TITLE_CHARS
        {
            return Err(HubError::InvalidInput(format!(
                "the title must have at most {MAX_TITLE_CHARS} characters"
            )));
        }
        if members.len() + 1 > self.inner.config.max_group_members {
            return Err(HubError::TooLarge(format!(
                "a group may have at most {} members",
                self.inner.config.max_group_members
            )));
        }
        let mut audience = vec![(principal.user, principal.address.clone())];
        for member in members {
            if audience.iter().any(|(_, a)| a == member) {
                continue;
            }
            let id = self.may_start(principal, member).await?;
            audience.push((id, member.clone()));
        }
        let conversation = Conversation {
            id: ConversationId::random(),
            kind: ConversationKind::Group,
            title,
            confidential,
            created_by: principal.address.clone(),
            created_at: now_millis(),
        };
        let id = conversation.id;
        if confidential {
            let info = Arc::new(ConvInfo {
                conversation: conversation.clone(),
                members: audience.clone(),
            });
            self.inner
                .conversations
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, info.clone());
            self.inner.bus.send(Delivery::Event {
                to: Recipients::Users(info.member_ids()),
                event: Event::Confidential(Arc::new(conversation)),
            });
        } else {
            let events = audience
                .iter()
                .map(|(u, _)| (*u, AccountEvent::Joined { conversation: id }))
                .collect();
            self.inner
                .journal()
                .submit(JournalEntry::Changes {
                    changes: vec![Change::CreateConversation {
                        conversation,
                        members: audience,
                    }],
                    events,
                })
                .await?;
        }
        self.conversation(principal, id).await
    }

    /// One conversation the principal is a member of.
    pub async fn conversation(
        &self,
        principal: &Principal,
        id: ConversationId,
    ) -> HubResult<ConversationView> {
        let info = self.member_of(principal, id).await?;
        if info.conversation.confidential {
            return Ok(ConversationView {
                conversation: info.conversation.clone(),
                members: info
                    .members
                    .iter()
                    .map(|(user, address)| Member {
                        user: *user,
                        address: address.clone(),
                        delivered: Seq(0),
                        read: Seq(0),
                    })
                    .collect(),
                last_seq: Seq(0),
            });
        }
        let members = self.inner.store.members(id).await?;
        let last_seq = self
            .inner
            .store
            .history(id, None, 1)
            .await?
            .last()
            .map(|m| m.seq)
            .unwrap_or_default();
        Ok(ConversationView {
            conversation: info.conversation.clone(),
            members,
            last_seq,
        })
    }

    /// Every conversation of the principal, stored and confidential.
    pub async fn conversations(&self, principal: &Principal) -> HubResult<Vec<ConversationEntry>> {
        let mut list = self.inner.store.conversations_of(principal.user).await?;
        let confidential: Vec<ConversationEntry> = self
            .inner
            .conversations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|c| c.conversation.confidential && c.is_member(principal.user))
            .map(|c| ConversationEntry {
                conversation: c.conversation.clone(),
                me: Member {
                    user: principal.user,
                    address: principal.address.clone(),
                    delivered: Seq(0),
                    read: Seq(0),
                },
                last_seq: Seq(0),
            })
            .collect();
        list.extend(confidential);
        Ok(list)
    }

    /// Up to `limit` messages before `before` (or the newest), oldest first.
    pub async fn history(
        &self,
        principal: &Principal,
        id: ConversationId,
        before: Option<Seq>,
        limit: usize,
    ) -> HubResult<Vec<StoredMessage>> {
        let info = self.member_of(principal, id).await?;
        if info.conversation.confidential {
            return Ok(Vec::new());
        }
        Ok(self
            .inner
            .store
            .history(id, before, limit.clamp(1, 500))
            .await?)
    }

    /// Sends a message. Returns once the message is durable (or relayed, for a confidential
    /// conversation). A resend with the same client id returns the first acknowledgement.
    pub async fn send(
        &self,
        principal: &Principal,
        id: ConversationId,
        client_id: &str,
        body: &str,
    ) -> HubResult<SendAck> {
        self.send_from(principal, None, id, client_id, body).await
    }

    /// Sends a message from a session. Every session of every member gets it, except the
    /// origin, which gets the acknowledgement instead (it carries the same number and
    /// position).
    pub async fn send_from(
        &self,
        principal: &Principal,
        origin: Option<&SessionSlot>,
        id: ConversationId,
        client_id: &str,
        body: &str,
    ) -> HubResult<SendAck> {
        self.send_addressed(principal, origin, id, client_id, body, Endpoints::default())
            .await
    }

    /// Like [`Hub::send_from`], for a message addressed to one endpoint of the recipient (an
    /// XMPP full address): live delivery tells the recipient's sessions which one was meant.
    pub async fn send_addressed(
        &self,
        principal: &Principal,
        origin: Option<&SessionSlot>,
        id: ConversationId,
        client_id: &str,
        body: &str,
        endpoints: Endpoints<'_>,
    ) -> HubResult<SendAck> {
        if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID {
            return Err(HubError::InvalidInput(format!(
                "the client id must have 1 to {MAX_CLIENT_ID} bytes"
            )));
        }
        if body.is_empty() {
            return Err(HubError::InvalidInput("the message body is empty".into()));
        }
        if body.len() > self.inner.config.max_message_bytes {
            return Err(HubError::TooLarge(format!(
                "the message has {} bytes; the limit is {}",
                body.len(),
                self.inner.config.max_message_bytes
            )));
        }
        if !self.inner.message_limiter.check(&principal.user) {
            return Err(HubError::RateLimited(
                "too many messages; slow down and try again".into(),
            ));
        }
        let info = self.member_of(principal, id).await?;
        if info.conversation.kind == ConversationKind::Direct {
            for (user, _) in info.members.iter().filter(|(u, _)| *u != principal.user) {
                if self.blocks(*user, &principal.address).await? {
                    return Err(HubError::RecipientUnavailable);
                }
            }
        }
        let message_id = MessageId::random();
        let sent_at = now_millis();
        if info.conversation.confidential {
            self.inner.metrics.messages_in.inc();
            self.inner.bus.send(Delivery::Event {
                to: Recipients::Users(info.member_ids()),
                event: Event::Relayed(Arc::new(RelayedMessage {
                    id: message_id,
                    conversation: id,
                    sender: principal.address.clone(),
                    client_id: client_id.to_string(),
                    body: body.to_string(),
                    sent_at,
                })),
            });
            return Ok(SendAck {
                id: message_id,
                conversation: id,
                seq: None,
                pos: None,
                sent_at,
                stored: false,
                duplicate: false,
            });
        }
        let outcome = self
            .inner
            .journal()
            .submit_from(
                JournalEntry::Message(NewMessage {
                    id: message_id,
                    conversation: id,
                    sender: principal.user,
                    sender_address: principal.address.clone(),
                    client_id: client_id.to_string(),
                    body: body.to_string(),
                    sent_at,
                    to_endpoint: endpoints.to.map(str::to_string),
                    from_endpoint: endpoints.from.map(str::to_string),
                    private: endpoints.private,
                }),
                origin.map(|s| s.id.clone()),
            )
            .await?;
        let JournalOutcome::Message(appended) = outcome else {
            return Err(HubError::Store(crate::store::StoreError::Corrupt(
                "the journal answered a message with something else".into(),
            )));
        };
        if appended.duplicate {
            self.inner.metrics.messages_duplicate.inc();
        } else {
            self.inner.metrics.messages_in.inc();
        }
        let m = appended.message;
        Ok(SendAck {
            id: m.id,
            conversation: id,
            seq: Some(m.seq),
            pos: Some(m.pos),
            sent_at: m.sent_at,
            stored: true,
            duplicate: appended.duplicate,
        })
    }

    /// The principal's messages in all their conversations after a journal position, oldest
    /// first, at most `limit` (an archive read across conversations).
    pub async fn archive_after(
        &self,
        principal: &Principal,
        after: Pos,
        limit: usize,
    ) -> HubResult<Vec<StoredMessage>> {
        let limit = limit.clamp(1, 500);
        let mut out = Vec::new();
        let mut from = after;
        loop {
            let page = self.inner.store.replay(principal.user, from, 500).await?;
            let full = page.len() == 500;
            for item in page {
                from = item.pos();
                if let Replayed::Message(m) = item {
                    out.push(m);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if !full {
                return Ok(out);
            }
        }
    }

    /// The principal has read everything up to `upto`: stores the read cursor and tells the
    /// other members (and the principal's other sessions).
    pub async fn mark_read(
        &self,
        principal: &Principal,
        id: ConversationId,
        upto: Seq,
    ) -> HubResult<()> {
        let info = self.member_of(principal, id).await?;
        if info.conversation.confidential {
            return Ok(());
        }
        self.inner
            .store
            .advance_cursors(vec![CursorUpdate {
                conversation: id,
                user: principal.user,
                delivered: Some(upto),
                read: Some(upto),
            }])
            .await?;
        self.inner
            .send_receipt(id, &principal.address, ReceiptKind::Read, upto);
        Ok(())
    }

    /// Tells the other members the principal is typing (or stopped).
    pub async fn typing(
        &self,
        principal: &Principal,
        id: ConversationId,
        state: Typing,
    ) -> HubResult<()> {
        let info = self.member_of(principal, id).await?;
        let others: Vec<UserId> = info
            .member_ids()
            .into_iter()
            .filter(|u| *u != principal.user)
            .collect();
        self.inner.bus.send(Delivery::Event {
            to: Recipients::Users(others),
            event: Event::Typing(Arc::new(TypingUpdate {
                conversation: id,
                from: principal.address.clone(),
                state,
            })),
        });
        Ok(())
    }

    /// The conversation, if the principal is a member. Not being a member reads the same as
    /// the conversation not existing.
    async fn member_of(
        &self,
        principal: &Principal,
        id: ConversationId,
    ) -> HubResult<Arc<ConvInfo>> {
        match self.conversation_info(id).await? {
            Some(info) if info.is_member(principal.user) => Ok(info),
            _ => Err(HubError::NotFound(format!("there is no conversation {id}"))),
        }
    }

    pub(crate) async fn conversation_info(
        &self,
        id: ConversationId,
    ) -> HubResult<Option<Arc<ConvInfo>>> {
        if let Some(info) = self
            .inner
            .conversations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(Some(info.clone()));
        }
        let Some(conversation) = self.inner.store.conversation(id).await? else {
            return Ok(None);
        };
        let members = self
            .inner
            .store
            .members(id)
            .await?
            .into_iter()
            .map(|m| (m.user, m.address))
            .collect();
        let info = Arc::new(ConvInfo {
            conversation,
            members,
        });
        self.inner
            .conversations
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, info.clone());
        Ok(Some(info))
    }

    /// Whether `owner` blocks `peer`, from memory when the owner is online.
    async fn blocks(&self, owner: UserId, peer: &Address) -> HubResult<bool> {
        if let Some(person) = self.inner.person(owner) {
            return Ok(person
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .blocked
                .contains(peer));
        }
        Ok(self.inner.store.is_blocked(owner, peer).await?)
    }

    /// The stranger policy: whether `peer` accepts a new conversation from the principal.
    /// Returns the peer's account id. Refusal and non-existence read the same.
    async fn may_start(&self, principal: &Principal, peer: &Address) -> HubResult<UserId> {
        let store = &self.inner.store;
        let account = store
            .account_by_address(peer)
            .await?
            .ok_or(HubError::RecipientUnavailable)?;
        if self.blocks(account.id, &principal.address).await? {
            return Err(HubError::RecipientUnavailable);
        }
        if account.settings.message_policy == MessagePolicy::Anyone {
            return Ok(account.id);
        }
        // The peer knows the principal: they added them (or accepted them) as a contact.
        if let Some(c) = store.contact(account.id, &principal.address).await?
            && (c.to != SubState::None || c.from == SubState::Accepted)
        {
            return Ok(account.id);
        }
        // The peer wrote to the principal first.
        let direct = ConversationId::direct(&principal.address, peer);
        if store.has_written(account.id, direct).await? {
            return Ok(account.id);
        }
        if store.share_group(account.id, principal.user).await? {
            return Ok(account.id);
        }
        Err(HubError::RecipientUnavailable)
    }
}
