//! Namespaces and small builders for the stanzas the line sends.

use switchboard_xmpp_proto::Element;

pub const NS_CLIENT: &str = "jabber:client";
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub const NS_SM: &str = "urn:xmpp:sm:3";
pub const NS_ROSTER: &str = "jabber:iq:roster";
pub const NS_PING: &str = "urn:xmpp:ping";
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";
pub const NS_CARBONS: &str = "urn:xmpp:carbons:2";
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";
pub const NS_MAM: &str = "urn:xmpp:mam:2";
pub const NS_RSM: &str = "http://jabber.org/protocol/rsm";
pub const NS_DATA: &str = "jabber:x:data";
pub const NS_DELAY: &str = "urn:xmpp:delay";
pub const NS_SID: &str = "urn:xmpp:sid:0";
pub const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
pub const NS_RECEIPTS: &str = "urn:xmpp:receipts";
pub const NS_MARKERS: &str = "urn:xmpp:chat-markers:0";
pub const NS_BLOCKING: &str = "urn:xmpp:blocking";
pub const NS_CSI: &str = "urn:xmpp:csi:0";
pub const NS_VERSION: &str = "jabber:iq:version";
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_HINTS: &str = "urn:xmpp:hints";

/// Where the `stream:` prefix of stream features and stream errors is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamPrefix {
    /// Inside a TCP stream, whose header declared it.
    Declared,
    /// Standing alone (a WebSocket message, a BOSH body's child): declared on the element.
    Standalone,
}

impl StreamPrefix {
    fn open(self, name: &str) -> String {
        match self {
            StreamPrefix::Declared => format!("<stream:{name}>"),
            StreamPrefix::Standalone => format!(
                "<stream:{name} xmlns:stream='{}'>",
                switchboard_xmpp_proto::NS_STREAMS
            ),
        }
    }
}

/// `<stream:features>` with the children of `features`.
pub fn features_xml(features: &Element, prefix: StreamPrefix) -> String {
    let inner: String = features.children().map(|c| c.to_xml()).collect();
    format!("{}{inner}</stream:features>", prefix.open("features"))
}

/// `<stream:error>` with a condition and optional text.
pub fn stream_error_xml(prefix: StreamPrefix, condition: &str, text: Option<&str>) -> String {
    let error = switchboard_xmpp_proto::stream_error_xml(condition, text);
    match prefix {
        StreamPrefix::Declared => error,
        StreamPrefix::Standalone => error.replacen("<stream:error>", &prefix.open("error"), 1),
    }
}

/// An RFC 6120 §8.3 stanza error: its type and condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    BadRequest,
    FeatureNotImplemented,
    Forbidden,
    ItemNotFound,
    NotAcceptable,
    NotAllowed,
    PolicyViolation,
    ResourceConstraint,
    ServiceUnavailable,
    InternalServerError,
}

impl Condition {
    fn name(self) -> &'static str {
        match self {
            Condition::BadRequest => "bad-request",
            Condition::FeatureNotImplemented => "feature-not-implemented",
            Condition::Forbidden => "forbidden",
            Condition::ItemNotFound => "item-not-found",
            Condition::NotAcceptable => "not-acceptable",
            Condition::NotAllowed => "not-allowed",
            Condition::PolicyViolation => "policy-violation",
            Condition::ResourceConstraint => "resource-constraint",
            Condition::ServiceUnavailable => "service-unavailable",
            Condition::InternalServerError => "internal-server-error",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Condition::BadRequest | Condition::NotAcceptable => "modify",
            Condition::FeatureNotImplemented | Condition::ServiceUnavailable => "cancel",
            Condition::Forbidden | Condition::NotAllowed => "auth",
            Condition::ItemNotFound => "cancel",
            Condition::PolicyViolation => "modify",
            Condition::ResourceConstraint => "wait",
            Condition::InternalServerError => "cancel",
        }
    }
}

/// The `<error/>` child for a condition, with optional human-readable text.
pub fn error_child(condition: Condition, text: Option<&str>) -> Element {
    let mut error = Element::new("error", NS_CLIENT)
        .with_attr("type", condition.kind())
        .with_child(Element::new(condition.name(), NS_STANZAS));
    if let Some(text) = text {
        error.append_child(Element::new("text", NS_STANZAS).with_text(text));
    }
    error
}

/// The error reply to a stanza: same name and id, addresses swapped, `type='error'`.
pub fn error_reply(stanza: &Element, condition: Condition, text: Option<&str>) -> Element {
    let mut reply = Element::new(stanza.name(), NS_CLIENT).with_attr("type", "error");
    if let Some(id) = stanza.attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(from) = stanza.attr("to") {
        reply.set_attr("from", from);
    }
    reply.append_child(error_child(condition, text));
    reply
}

/// An empty IQ result for a request.
pub fn iq_result(request: &Element) -> Element {
    let mut reply = Element::new("iq", NS_CLIENT).with_attr("type", "result");
    if let Some(id) = request.attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(from) = request.attr("to") {
        reply.set_attr("from", from);
    }
    reply
}

/// An XEP-0082 timestamp for milliseconds since the Unix epoch (UTC).
pub fn timestamp(millis: i64) -> String {
    let secs = millis.div_euclid(1000);
    let ms = millis.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant's published algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!("{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

/// Parses an XEP-0082 date-time (`2026-11-22T05:33:03Z`, with optional fraction and
/// offset) into milliseconds since the epoch.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let (clock, offset_secs) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else {
        let i = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (
            c,
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
        )
    };
    let mut c = clock.splitn(3, ':');
    let h: i64 = c.next()?.parse().ok()?;
    let m: i64 = c.next()?.parse().ok()?;
    let sec_text = c.next()?;
    let (s, frac) = sec_text.split_once('.').unwrap_or((sec_text, ""));
    let s: i64 = s.parse().ok()?;
    let ms: i64 = format!("{:0<3}", frac.get(..3.min(frac.len()))?)
        .parse()
        .ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days-from-civil, the inverse of `timestamp`.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + m * 60 + s - offset_secs) * 1000) + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_795_325_583_123), "2026-11-22T05:33:03.123Z");
        assert_eq!(
            parse_timestamp("2026-11-22T05:33:03.123Z"),
            Some(1_795_325_583_123)
        );
        assert_eq!(
            parse_timestamp("2026-11-22T07:33:03+02:00"),
            Some(1_795_325_583_000)
        );
        assert_eq!(parse_timestamp("2026-13-22T07:33:03Z"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn error_replies_swap_addresses_and_keep_the_id() {
        let iq = Element::new("iq", NS_CLIENT)
            .with_attr("id", "x1")
            .with_attr("to", "localhost")
            .with_attr("type", "get");
        let reply = error_reply(&iq, Condition::ServiceUnavailable, None);
        assert_eq!(
            reply.to_xml_in(NS_CLIENT),
            "<iq type=\"error\" id=\"x1\" from=\"localhost\"><error type=\"cancel\">\
             <service-unavailable xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></error></iq>"
        );
    }
}
