//! Message archive management (XEP-0313) over the hub's history.
//!
//! An archive id is `<position>-<number>`: the journal position orders a person's whole
//! archive (queries without a peer walk it forward), and the message's number in its
//! conversation pages one conversation's history both ways.

use switchboard_core::hub::Principal;
use switchboard_core::model::{ConversationId, Pos, Seq, StoredMessage};
use switchboard_core::{Address, Hub, HubError};
use switchboard_xmpp_proto::Element;

use crate::jid::{self, Target};
use crate::stanza::*;

/// Most results in one page, whatever the client asks for.
const MAX_PAGE: usize = 100;
/// How far one forward page may scan through a conversation with gaps in its numbering.
const MAX_WINDOWS: usize = 20;

pub fn archive_id(m: &StoredMessage) -> String {
    format!("{}-{}", m.pos.0, m.seq.0)
}

fn parse_id(id: &str) -> Option<(Pos, Seq)> {
    let (p, s) = id.split_once('-')?;
    Some((Pos(p.parse().ok()?), Seq(s.parse().ok()?)))
}

/// A failed query: the error condition and a text saying what was wrong.
pub type QueryError = (Condition, String);

fn bad(text: impl Into<String>) -> QueryError {
    (Condition::BadRequest, text.into())
}

/// What a query asks for, parsed from its data form and result set management element.
#[derive(Debug, Default)]
struct Query {
    with: Option<String>,
    start: Option<i64>,
    end: Option<i64>,
    after: Option<(Pos, Seq)>,
    /// `Some(None)`: the last page.
    before: Option<Option<(Pos, Seq)>>,
    max: usize,
}

fn parse_query(q: &Element) -> Result<Query, QueryError> {
    let mut query = Query {
        max: MAX_PAGE,
        ..Query::default()
    };
    if let Some(form) = q.get_child("x", NS_DATA) {
        for field in form.children().filter(|f| f.name() == "field") {
            let value = field
                .get_child("value", NS_DATA)
                .map(|v| v.text())
                .unwrap_or_default();
            let time = |v: &str| {
                parse_timestamp(v).ok_or_else(|| bad(format!("{v:?} is not an XEP-0082 date-time")))
            };
            match field.attr("var").unwrap_or_default() {
                "with" => query.with = Some(value),
                "start" => query.start = Some(time(&value)?),
                "end" => query.end = Some(time(&value)?),
                "after-id" => {
                    query.after = Some(parse_id(&value).ok_or_else(|| {
                        (
                            Condition::ItemNotFound,
                            format!("no archived message has the id {value:?}"),
                        )
                    })?)
                }
                "before-id" => {
                    query.before = Some(Some(parse_id(&value).ok_or_else(|| {
                        (
                            Condition::ItemNotFound,
                            format!("no archived message has the id {value:?}"),
                        )
                    })?))
                }
                _ => {}
            }
        }
    }
    if let Some(set) = q.get_child("set", NS_RSM) {
        if let Some(max) = set.get_child("max", NS_RSM) {
            query.max = max
                .text()
                .trim()
                .parse::<usize>()
                .map_err(|_| bad("<max/> must be a number"))?
                .min(MAX_PAGE);
        }
        if let Some(after) = set.get_child("after", NS_RSM) {
            let id = after.text();
            query.after = Some(parse_id(id.trim()).ok_or_else(|| {
                (
                    Condition::ItemNotFound,
                    format!("no archived message has the id {id:?}"),
                )
            })?);
        }
        if let Some(before) = set.get_child("before", NS_RSM) {
            let id = before.text();
            let id = id.trim();
            query.before = Some(if id.is_empty() {
                None
            } else {
                Some(parse_id(id).ok_or_else(|| {
                    (
                        Condition::ItemNotFound,
                        format!("no archived message has the id {id:?}"),
                    )
                })?)
            });
        }
    }
    Ok(query)
}

fn in_time(q: &Query, m: &StoredMessage) -> bool {
    q.start.is_none_or(|s| m.sent_at >= s) && q.end.is_none_or(|e| m.sent_at <= e)
}

fn hub_error(e: HubError) -> QueryError {
    match e {
        HubError::NotFound(text) => (Condition::ItemNotFound, text),
        other => (Condition::InternalServerError, other.to_string()),
    }
}

/// One page of one conversation: (messages oldest first, whether the page reaches the end of
/// the archive in the direction of paging).
async fn conversation_page(
    hub: &Hub,
    principal: &Principal,
    id: ConversationId,
    q: &Query,
) -> Result<(Vec<StoredMessage>, bool), QueryError> {
    let max = q.max;
    if max == 0 {
        return Ok((Vec::new(), false));
    }
    if let Some(before) = &q.before {
        // Backwards: the newest `max` before the anchor (or the newest of all).
        let mut anchor = before.map(|(_, seq)| seq);
        let mut page: Vec<StoredMessage> = Vec::new();
        loop {
            let batch = hub
                .history(principal, id, anchor, max)
                .await
                .map_err(hub_error)?;
            let exhausted = batch.len() < max;
            anchor = batch.first().map(|m| m.seq);
            let mut kept: Vec<StoredMessage> = batch
                .into_iter()
                .filter(|m| in_time(q, m) && q.after.is_none_or(|(_, s)| m.seq > s))
                .collect();
            kept.append(&mut page);
            page = kept;
            if page.len() >= max || exhausted || anchor.is_none() {
                let complete = page.len() <= max && exhausted;
                let skip = page.len().saturating_sub(max);
                return Ok((page.split_off(skip), complete));
            }
        }
    }
    // Forwards from the anchor (or the beginning): windows of numbers, since the store pages
    // backwards from a number.
    let mut after = q.after.map(|(_, seq)| seq.0).unwrap_or(0);
    let last = hub
        .conversation(principal, id)
        .await
        .map_err(hub_error)?
        .last_seq
        .0;
    let mut page = Vec::new();
    for _ in 0..MAX_WINDOWS {
        if after >= last || page.len() >= max {
            break;
        }
        let want = (max - page.len()) as i64;
        let window_end = (after + want + 1).min(last + 1);
        let batch = hub
            .history(principal, id, Some(Seq(window_end)), want as usize)
            .await
            .map_err(hub_error)?;
        page.extend(
            batch
                .into_iter()
                .filter(|m| m.seq.0 > after && in_time(q, m)),
        );
        after = window_end - 1;
    }
    page.truncate(max);
    let complete = page.last().is_none_or(|m| m.seq.0 >= last) && after >= last;
    Ok((page, complete))
}

/// Where a message appears to come from and go to in an archive result.
fn addresses(
    hub: &Hub,
    me: &Address,
    peer: Option<&Address>,
    m: &StoredMessage,
) -> (String, String, &'static str) {
    match peer {
        Some(peer) if &m.sender == me => (me.to_string(), peer.to_string(), "chat"),
        Some(_) => (m.sender.to_string(), me.to_string(), "chat"),
        None => {
            let room = jid::room_jid(hub, m.conversation);
            (
                format!("{room}/{}", m.sender.local()),
                me.to_string(),
                "groupchat",
            )
        }
    }
}

fn is_own_archive(target: &Target, me: &Address) -> bool {
    match target {
        Target::Server => true,
        Target::Bare(a) => a == me,
        _ => false,
    }
}

/// Answers a MAM query IQ: the result messages, then the IQ result with `<fin/>`.
pub async fn query(
    hub: &Hub,
    principal: &Principal,
    full_jid: &str,
    iq: &Element,
    q: &Element,
    target: &Target,
) -> Result<Vec<Element>, QueryError> {
    let query = parse_query(q)?;
    let me = &principal.address;
    let (messages, complete, scope_peer): (Vec<StoredMessage>, bool, Option<Option<Address>>) =
        match target {
            Target::Room(id, None) => {
                let (m, c) = conversation_page(hub, principal, *id, &query).await?;
                (m, c, Some(None))
            }
            t if is_own_archive(t, me) => match &query.with {
                Some(with) => {
                    let peer = match jid::parse_target(hub, Some(with)) {
                        Target::Bare(a) | Target::Full(a, _) => a,
                        _ => return Err(bad(format!("{with:?} is not a person on this server"))),
                    };
                    let id = ConversationId::direct(me, &peer);
                    match conversation_page(hub, principal, id, &query).await {
                        Ok((m, c)) => (m, c, Some(Some(peer))),
                        Err((Condition::ItemNotFound, _))
                            if query.after.is_none() && query.before.is_none() =>
                        {
                            (Vec::new(), true, Some(Some(peer)))
                        }
                        Err(e) => return Err(e),
                    }
                }
                None => {
                    if query.before.is_some() {
                        return Err((
                            Condition::FeatureNotImplemented,
                            "paging backwards through the whole archive is not supported; \
                             name a peer with the 'with' field"
                                .into(),
                        ));
                    }
                    let after = query.after.map(|(p, _)| p).unwrap_or(Pos(0));
                    let mut found = hub
                        .archive_after(principal, after, query.max.max(1) + 1)
                        .await
                        .map_err(hub_error)?;
                    found.retain(|m| in_time(&query, m));
                    let complete = found.len() <= query.max;
                    found.truncate(query.max);
                    (found, complete, None)
                }
            },
            _ => {
                return Err((
                    Condition::ServiceUnavailable,
                    "there is no archive at this address".into(),
                ));
            }
        };
    let queryid = q.attr("queryid");
    let mut out = Vec::with_capacity(messages.len() + 1);
    for m in &messages {
        let peer: Option<Address> = match &scope_peer {
            Some(p) => p.clone(),
            None => {
                // Across conversations: a direct one is with whoever is not me.
                hub.conversation(principal, m.conversation)
                    .await
                    .ok()
                    .filter(|v| {
                        v.conversation.kind == switchboard_core::model::ConversationKind::Direct
                    })
                    .and_then(|v| v.members.into_iter().map(|mb| mb.address).find(|a| a != me))
            }
        };
        let (from, to, kind) = addresses(hub, me, peer.as_ref(), m);
        let original = Element::new("message", NS_CLIENT)
            .with_attr("from", from)
            .with_attr("to", to)
            .with_attr("type", kind)
            .with_attr("id", m.client_id.as_str())
            .with_child(Element::new("body", NS_CLIENT).with_text(m.body.as_str()));
        let mut result = Element::new("result", NS_MAM).with_attr("id", archive_id(m));
        if let Some(queryid) = queryid {
            result.set_attr("queryid", queryid);
        }
        result.append_child(
            Element::new("forwarded", NS_FORWARD)
                .with_child(
                    Element::new("delay", NS_DELAY).with_attr("stamp", timestamp(m.sent_at)),
                )
                .with_child(original),
        );
        let mut wrapper = Element::new("message", NS_CLIENT).with_attr("to", full_jid);
        if let Some(from) = iq.attr("to") {
            wrapper.set_attr("from", from);
        }
        wrapper.append_child(result);
        out.push(wrapper);
    }
    let mut set = Element::new("set", NS_RSM);
    if let (Some(first), Some(last)) = (messages.first(), messages.last()) {
        set.append_child(Element::new("first", NS_RSM).with_text(archive_id(first)));
        set.append_child(Element::new("last", NS_RSM).with_text(archive_id(last)));
    }
    let mut fin = Element::new("fin", NS_MAM).with_child(set);
    if complete {
        fin.set_attr("complete", "true");
    }
    out.push(iq_result(iq).with_child(fin));
    Ok(out)
}

/// The MAM form the client can fill in (a `get` of the query).
pub fn form() -> Element {
    let field = |var: &str, kind: &str| {
        Element::new("field", NS_DATA)
            .with_attr("var", var)
            .with_attr("type", kind)
    };
    Element::new("query", NS_MAM).with_child(
        Element::new("x", NS_DATA)
            .with_attr("type", "form")
            .with_child(
                field("FORM_TYPE", "hidden")
                    .with_child(Element::new("value", NS_DATA).with_text(NS_MAM)),
            )
            .with_child(field("with", "jid-single"))
            .with_child(field("start", "text-single"))
            .with_child(field("end", "text-single"))
            .with_child(field("after-id", "text-single"))
            .with_child(field("before-id", "text-single")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_ids_round_trip_and_garbage_is_refused() {
        assert_eq!(parse_id("42-7"), Some((Pos(42), Seq(7))));
        assert_eq!(parse_id("42"), None);
        assert_eq!(parse_id("a-b"), None);
    }

    #[test]
    fn rsm_and_form_fields_are_read() {
        let q = Element::new("query", NS_MAM)
            .with_child(
                Element::new("x", NS_DATA)
                    .with_attr("type", "submit")
                    .with_child(
                        Element::new("field", NS_DATA)
                            .with_attr("var", "with")
                            .with_child(Element::new("value", NS_DATA).with_text("bob@localhost")),
                    ),
            )
            .with_child(
                Element::new("set", NS_RSM)
                    .with_child(Element::new("max", NS_RSM).with_text("5"))
                    .with_child(Element::new("before", NS_RSM)),
            );
        let query = parse_query(&q).unwrap();
        assert_eq!(query.with.as_deref(), Some("bob@localhost"));
        assert_eq!(query.max, 5);
        assert_eq!(query.before, Some(None));
        let bad = Element::new("query", NS_MAM).with_child(
            Element::new("set", NS_RSM).with_child(Element::new("max", NS_RSM).with_text("lots")),
        );
        assert!(parse_query(&bad).is_err());
    }
}
