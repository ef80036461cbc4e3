//! The sans-IO stream parser: bytes in, [`Frame`]s out.

use std::fmt;

use rxml::error::EndOrError;
use rxml::parser::CommentMode;
use rxml::{Error as XmlError, Options, Parse, RawEvent, RawParser, RawQName, WithOptions};

use crate::element::{Attribute, Element, NS_XML, escape_into};

/// `xmlns:stream` namespace of the stream element.
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
/// Content namespace of client-to-server streams.
pub const NS_CLIENT: &str = "jabber:client";
/// Content namespace of server-to-server streams.
pub const NS_SERVER: &str = "jabber:server";
/// Content namespace of external components (XEP-0114).
pub const NS_COMPONENT: &str = "jabber:component:accept";
/// Namespace of the stream error condition elements.
pub const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";

/// Resource limits enforced by the parser. Memory held by the parser is
/// bounded by these (plus the bytes handed to [`StreamParser::feed`] and not
/// yet drained by [`StreamParser::next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum bytes of one top-level stanza (also of the stream header and
    /// of any run of bytes between two frames). Default 256 KiB.
    pub max_stanza_bytes: usize,
    /// Maximum element nesting inside a stanza (the stanza itself is depth 1). Default 64.
    pub max_depth: usize,
    /// Maximum attributes (namespace declarations included) on one element. Default 64.
    pub max_attributes: usize,
    /// Maximum bytes of one element name, attribute name or attribute value
    /// (longer text is simply split). The XML lexer reserves a buffer of this
    /// size per parser, so it is kept well below `max_stanza_bytes`. Default 8 KiB.
    pub max_token_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 64,
            max_attributes: 64,
            max_token_bytes: 8 * 1024,
        }
    }
}

/// The `<stream:stream>` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOpen {
    /// `to` attribute.
    pub to: Option<String>,
    /// `from` attribute.
    pub from: Option<String>,
    /// `version` attribute (`"1.0"` for RFC 6120 streams).
    pub version: Option<String>,
    /// `xml:lang` attribute.
    pub lang: Option<String>,
    /// `id` attribute.
    pub id: Option<String>,
    /// Content (default) namespace: `jabber:client`, `jabber:server` or `jabber:component:accept`.
    pub namespace: String,
}

/// One thing read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The stream header (first frame, and again after each [`StreamParser::reset`]).
    StreamOpen(StreamOpen),
    /// A complete top-level child of the stream.
    Stanza(Element),
    /// `</stream:stream>`.
    StreamClose,
}

/// A fatal stream error; the stream must be answered with
/// [`stream_error_xml`] and closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// Malformed XML.
    NotWellFormed(String),
    /// A construct restricted-XML forbids (DTD, entity, comment, PI).
    RestrictedXml(String),
    /// A configured limit was exceeded.
    PolicyViolation(String),
    /// Wrong stream namespace or unsupported content namespace.
    InvalidNamespace(String),
    /// Well-formed XML that is not a valid stream (e.g. text at stream level).
    BadFormat(String),
    /// An XML declaration naming an encoding other than UTF-8.
    UnsupportedEncoding(String),
}

impl StreamError {
    /// The RFC 6120 §4.9.3 stream error condition name.
    pub fn condition(&self) -> &'static str {
        match self {
            StreamError::NotWellFormed(_) => "not-well-formed",
            StreamError::RestrictedXml(_) => "restricted-xml",
            StreamError::PolicyViolation(_) => "policy-violation",
            StreamError::InvalidNamespace(_) => "invalid-namespace",
            StreamError::BadFormat(_) => "bad-format",
            StreamError::UnsupportedEncoding(_) => "unsupported-encoding",
        }
    }

    /// Human-readable detail.
    pub fn text(&self) -> &str {
        match self {
            StreamError::NotWellFormed(t)
            | StreamError::RestrictedXml(t)
            | StreamError::PolicyViolation(t)
            | StreamError::InvalidNamespace(t)
            | StreamError::BadFormat(t)
            | StreamError::UnsupportedEncoding(t) => t,
        }
    }

    /// The `<stream:error>` element to send for this error.
    pub fn to_xml(&self) -> String {
        stream_error_xml(self.condition(), Some(self.text()))
    }

    fn from_xml(e: XmlError, limits: &Limits) -> Self {
        match e {
            XmlError::RestrictedXml(msg) if msg.contains("long") => {
                StreamError::PolicyViolation(format!(
                    "name or attribute value exceeds max_token_bytes ({} bytes)",
                    limits.max_token_bytes
                ))
            }
            XmlError::RestrictedXml(msg) if msg.contains("encoding") => {
                StreamError::UnsupportedEncoding(msg.to_string())
            }
            XmlError::RestrictedXml(msg) => StreamError::RestrictedXml(msg.to_string()),
            // rxml reports any `<!` other than `<!--` and `<![CDATA[` this way:
            // what remains are DTD markup declarations (<!DOCTYPE, <!ENTITY, ...).
            XmlError::InvalidSyntax(msg) if msg.contains("cdata or comment section start") => {
                StreamError::RestrictedXml(format!(
                    "DTD markup declarations (<!DOCTYPE, <!ENTITY ...) are not allowed ({msg})"
                ))
            }
            XmlError::UndeclaredEntity => {
                StreamError::RestrictedXml("reference to an undeclared entity".into())
            }
            other => StreamError::NotWellFormed(other.to_string()),
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.condition(), self.text())
    }
}

impl std::error::Error for StreamError {}

/// Parses one complete standalone element (see [`StreamParser::for_elements`]).
pub fn parse_element(bytes: &[u8], limits: Limits) -> Result<Element, StreamError> {
    let mut parser = StreamParser::for_elements(limits);
    parser.feed(bytes);
    match parser.next()? {
        Some(Frame::Stanza(el)) => Ok(el),
        _ => Err(StreamError::BadFormat(
            "expected one complete element".into(),
        )),
    }
}

/// `<stream:error>` with `condition` (an RFC 6120 condition name such as
/// `policy-violation`) and optional text, ready to send before `</stream:stream>`.
pub fn stream_error_xml(condition: &str, text: Option<&str>) -> String {
    let mut out = String::from("<stream:error><");
    escape_into(condition, false, &mut out);
    out.push_str(" xmlns='");
    out.push_str(NS_STREAM_ERRORS);
    out.push_str("'/>");
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        out.push_str("<text xmlns='");
        out.push_str(NS_STREAM_ERRORS);
        out.push_str("'>");
        escape_into(text, false, &mut out);
        out.push_str("</text>");
    }
    out.push_str("</stream:error>");
    out
}

/// Namespace declarations made on one element.
#[derive(Debug, Default)]
struct Scope {
    default: Option<String>,
    prefixes: Vec<(String, String)>,
}

/// An element whose head is being read.
#[derive(Debug)]
struct PendingHead {
    name: RawQName,
    attrs: Vec<(RawQName, String)>,
}

/// Incremental, sans-IO parser for one direction of an XMPP stream.
///
/// Feed bytes as they arrive with [`feed`](Self::feed), then call
/// [`next`](Self::next) until it returns `Ok(None)`. After the first error
/// the parser stays failed and returns that error again.
#[derive(Debug)]
pub struct StreamParser {
    limits: Limits,
    raw: RawParser,
    buf: Vec<u8>,
    pos: usize,
    /// Bytes consumed since the last frame boundary.
    since_boundary: usize,
    scopes: Vec<Scope>,
    head: Option<PendingHead>,
    /// Open elements of the stanza under construction.
    open: Vec<Element>,
    stream_open: bool,
    closed: bool,
    failed: Option<StreamError>,
}

impl Default for StreamParser {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

fn new_raw(limits: &Limits) -> RawParser {
    let options = Options {
        // rxml reserves this much up front, per parser.
        max_token_length: limits
            .max_token_bytes
            .min(limits.max_stanza_bytes.saturating_add(1))
            .max(64),
        context: None,
        comments: CommentMode::Reject,
    };
    let mut raw = <RawParser as WithOptions>::with_options(options);
    // Emit text as it arrives: whitespace keepalives then count as frame
    // boundaries and stray text is reported without waiting for more input.
    raw.set_text_buffering(false);
    raw
}

impl StreamParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        StreamParser {
            raw: new_raw(&limits),
            limits,
            buf: Vec::new(),
            pos: 0,
            since_boundary: 0,
            scopes: Vec::new(),
            head: None,
            open: Vec::new(),
            stream_open: false,
            closed: false,
            failed: None,
        }
    }

    /// A parser for elements that stand alone (a WebSocket message, a BOSH body, a stored
    /// payload): as if inside an open `jabber:client` stream, so each element parses as a
    /// stanza and elements without a namespace declaration are `jabber:client`.
    pub fn for_elements(limits: Limits) -> Self {
        let mut parser = StreamParser::new(limits);
        parser.feed(
            b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
        );
        // Well-formed and within every limit: its frame is the opening, which is dropped.
        let _ = parser.next();
        parser
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether the stream header has been read (and the stream not closed).
    pub fn is_open(&self) -> bool {
        self.stream_open && !self.closed
    }

    /// Start over for a new stream (after STARTTLS or SASL success): a fresh
    /// XML parser expecting a new header. Bytes buffered but not yet parsed
    /// are discarded: anything a peer pipelined before the restart must not
    /// be read as part of the new stream.
    pub fn reset(&mut self) {
        *self = StreamParser::new(self.limits);
    }

    /// Hand bytes read from the peer to the parser.
    ///
    /// Bytes are only buffered here; call [`next`](Self::next) until it
    /// returns `Ok(None)` after each call to keep memory bounded.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_some() || self.closed {
            return;
        }
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes fed but not yet consumed by the XML parser.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed (or the
    /// stream has been closed), or the fatal stream error.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Frame>, StreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.next_inner() {
            Ok(f) => Ok(f),
            Err(e) => {
                self.failed = Some(e.clone());
                self.buf = Vec::new();
                self.pos = 0;
                self.open = Vec::new();
                self.head = None;
                Err(e)
            }
        }
    }

    fn next_inner(&mut self) -> Result<Option<Frame>, StreamError> {
        loop {
            if self.closed {
                return Ok(None);
            }
            let budget = self
                .limits
                .max_stanza_bytes
                .saturating_sub(self.since_boundary);
            let avail = self.buf.len() - self.pos;
            let take = avail.min(budget);
            let mut slice = &self.buf[self.pos..self.pos + take];
            let before = slice.len();
            let result = self.raw.parse(&mut slice, false);
            let consumed = before - slice.len();
            self.pos += consumed;
            self.since_boundary += consumed;
            match result {
                Ok(Some(ev)) => {
                    if let Some(frame) = self.handle(ev)? {
                        self.since_boundary = 0;
                        return Ok(Some(frame));
                    }
                }
                Ok(None) => return Ok(None),
                Err(EndOrError::NeedMoreData) => {
                    if self.since_boundary >= self.limits.max_stanza_bytes {
                        return Err(StreamError::PolicyViolation(format!(
                            "stanza exceeds max_stanza_bytes ({} bytes)",
                            self.limits.max_stanza_bytes
                        )));
                    }
                    if consumed > 0 && self.pos < self.buf.len() {
                        continue;
                    }
                    if self.pos == self.buf.len() {
                        self.buf.clear();
                        self.pos = 0;
                    }
                    return Ok(None);
                }
                Err(EndOrError::Error(e)) => return Err(StreamError::from_xml(e, &self.limits)),
            }
        }
    }

    /// Depth of the element whose head is open: 0 = stream element, 1 = stanza.
    fn depth(&self) -> usize {
        self.scopes.len()
    }

    fn handle(&mut self, ev: RawEvent) -> Result<Option<Frame>, StreamError> {
        match ev {
            RawEvent::XmlDeclaration(..) => Ok(None),
            RawEvent::ElementHeadOpen(_, name) => {
                if self.depth() > self.limits.max_depth {
                    return Err(StreamError::PolicyViolation(format!(
                        "element nesting exceeds max_depth ({})",
                        self.limits.max_depth
                    )));
                }
                self.head = Some(PendingHead {
                    name,
                    attrs: Vec::new(),
                });
                Ok(None)
            }
            RawEvent::Attribute(_, name, value) => {
                let max = self.limits.max_attributes;
                let head = self.head.as_mut().ok_or_else(|| {
                    StreamError::NotWellFormed("attribute outside element head".into())
                })?;
                if head.attrs.len() >= max {
                    return Err(StreamError::PolicyViolation(format!(
                        "element has more than max_attributes ({max}) attributes"
                    )));
                }
                head.attrs.push((name, value));
                Ok(None)
            }
            RawEvent::ElementHeadClose(_) => {
                let head = self.head.take().ok_or_else(|| {
                    StreamError::NotWellFormed("element head close without open".into())
                })?;
                self.open_element(head)
            }
            RawEvent::ElementFoot(_) => self.close_element(),
            RawEvent::Text(_, text) => {
                if let Some(parent) = self.open.last_mut() {
                    parent.append_text(text.as_str());
                    Ok(None)
                } else if text.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n')) {
                    // Whitespace between stanzas (keepalives): a frame boundary.
                    self.since_boundary = 0;
                    Ok(None)
                } else {
                    Err(StreamError::BadFormat(
                        "character data at stream level".into(),
                    ))
                }
            }
        }
    }

    fn lookup(&self, prefix: Option<&str>) -> Option<&str> {
        match prefix {
            None => {
                for s in self.scopes.iter().rev() {
                    if let Some(d) = &s.default {
                        return Some(d.as_str());
                    }
                }
                Some("")
            }
            Some("xml") => Some(NS_XML),
            Some(p) => {
                for s in self.scopes.iter().rev() {
                    if let Some((_, ns)) = s.prefixes.iter().find(|(q, _)| q == p) {
                        return Some(ns.as_str());
                    }
                }
                None
            }
        }
    }

    fn open_element(&mut self, head: PendingHead) -> Result<Option<Frame>, StreamError> {
        let mut scope = Scope::default();
        let mut plain = Vec::with_capacity(head.attrs.len());
        for ((prefix, local), value) in head.attrs {
            match prefix.as_deref().map(|p| p.as_str()) {
                Some("xmlns") => {
                    let local = local.as_str();
                    if local == "xmlns" || (local == "xml") != (value == NS_XML) {
                        return Err(StreamError::NotWellFormed(format!(
                            "reserved namespace prefix misuse: xmlns:{local}"
                        )));
                    }
                    if value.is_empty() {
                        return Err(StreamError::NotWellFormed(format!(
                            "empty namespace for prefix {local}"
                        )));
                    }
                    if scope.prefixes.iter().any(|(p, _)| p == local) {
                        return Err(StreamError::NotWellFormed(format!(
                            "duplicate attribute xmlns:{local}"
                        )));
                    }
                    scope.prefixes.push((local.to_string(), value.to_string()));
                }
                None if local.as_str() == "xmlns" => {
                    if scope.default.is_some() {
                        return Err(StreamError::NotWellFormed(
                            "duplicate attribute xmlns".into(),
                        ));
                    }
                    scope.default = Some(value.to_string());
                }
                _ => plain.push(((prefix, local), value)),
            }
        }
        self.scopes.push(scope);
        let (prefix, local) = head.name;
        let ns = self
            .lookup(prefix.as_deref().map(|p| p.as_str()))
            .ok_or_else(|| {
                StreamError::NotWellFormed(format!(
                    "undeclared namespace prefix on element {local}"
                ))
            })?
            .to_string();
        let mut el = Element::new(local.as_str(), ns);
        let mut seen: Vec<(Option<String>, String)> = Vec::with_capacity(plain.len());
        for ((prefix, local), value) in plain {
            let ans = match prefix.as_deref().map(|p| p.as_str()) {
                None => None,
                Some(p) => Some(
                    self.lookup(Some(p))
                        .ok_or_else(|| {
                            StreamError::NotWellFormed(format!(
                                "undeclared namespace prefix {p} on attribute {local}"
                            ))
                        })?
                        .to_string(),
                ),
            };
            let key = (ans, local.as_str().to_string());
            if seen.contains(&key) {
                return Err(StreamError::NotWellFormed(format!(
                    "duplicate attribute {}",
                    key.1
                )));
            }
            seen.push(key.clone());
            el.push_attribute(Attribute {
                ns: key.0,
                name: key.1,
                value: value.to_string(),
            });
        }

        if self.scopes.len() == 1 {
            return self.stream_header(el).map(Some);
        }
        self.open.push(el);
        Ok(None)
    }

    fn stream_header(&mut self, el: Element) -> Result<Frame, StreamError> {
        if el.ns() != NS_STREAMS {
            return Err(StreamError::InvalidNamespace(format!(
                "stream element must be in namespace {NS_STREAMS}, got '{}'",
                el.ns()
            )));
        }
        if el.name() != "stream" {
            return Err(StreamError::InvalidNamespace(format!(
                "root element must be stream:stream, got '{}'",
                el.name()
            )));
        }
        let namespace = self.scopes[0].default.clone().unwrap_or_default();
        if ![NS_CLIENT, NS_SERVER, NS_COMPONENT].contains(&namespace.as_str()) {
            return Err(StreamError::InvalidNamespace(format!(
                "unsupported content namespace '{namespace}'"
            )));
        }
        self.stream_open = true;
        let get = |n: &str| el.attr(n).map(str::to_string);
        Ok(Frame::StreamOpen(StreamOpen {
            to: get("to"),
            from: get("from"),
            version: get("version"),
            lang: el.attr_ns(NS_XML, "lang").map(str::to_string),
            id: get("id"),
            namespace,
        }))
    }

    fn close_element(&mut self) -> Result<Option<Frame>, StreamError> {
        self.scopes.pop();
        if self.scopes.is_empty() {
            self.closed = true;
            self.stream_open = false;
            self.buf = Vec::new();
            self.pos = 0;
            return Ok(Some(Frame::StreamClose));
        }
        let el = self
            .open
            .pop()
            .ok_or_else(|| StreamError::NotWellFormed("unbalanced end tag".into()))?;
        match self.open.last_mut() {
            Some(parent) => {
                parent.append_child(el);
                Ok(None)
            }
            None => Ok(Some(Frame::Stanza(el))),
        }
    }
}
