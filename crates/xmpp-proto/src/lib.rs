//! Pure XMPP XML stream codec for Switchboard's XMPP line.
//!
//! Bytes in, values out: no sockets, no async runtime. [`StreamParser`] turns
//! the bytes of one direction of an RFC 6120 stream into [`Frame`]s (the
//! stream header, each top-level stanza as an [`Element`] tree, the stream
//! close), enforcing restricted XML (no DTD, entities, comments or processing
//! instructions) and the size/depth [`Limits`] so that memory stays bounded
//! whatever a peer sends. Errors carry their RFC 6120 stream error condition;
//! [`stream_error_xml`] renders the `<stream:error>` to send before closing.
//!
//! ```
//! use switchboard_xmpp_proto::{Frame, StreamParser};
//!
//! let mut parser = StreamParser::default();
//! parser.feed(b"<stream:stream xmlns='jabber:client' \
//!     xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>");
//! parser.feed(b"<message to='juliet@example.com'><body>hi &amp; bye</bo");
//! let Some(Frame::StreamOpen(open)) = parser.next().unwrap() else { panic!() };
//! assert_eq!(open.to.as_deref(), Some("example.com"));
//! assert_eq!(parser.next().unwrap(), None); // the message is not complete yet
//! parser.feed(b"dy></message>");
//! let Some(Frame::Stanza(msg)) = parser.next().unwrap() else { panic!() };
//! assert_eq!(msg.get_child("body", "jabber:client").unwrap().text(), "hi & bye");
//!
//! parser.feed(b"<!DOCTYPE x>");
//! let err = parser.next().unwrap_err();
//! assert_eq!(err.condition(), "restricted-xml");
//! let _reply = err.to_xml(); // send, then `</stream:stream>`, then close
//! ```
//!
//! Fuzzing: `RUSTC_BOOTSTRAP=1 cargo fuzz run stream_parser` from the
//! repository root (`fuzz/` is its own workspace); inputs that crash go into
//! `crates/xmpp-proto/tests/corpus/`, which `cargo test` replays.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod element;
mod stream;

pub use element::{Attribute, Element, NS_XML, Node, escape, escape_into};
pub use stream::{
    Frame, Limits, NS_CLIENT, NS_COMPONENT, NS_SERVER, NS_STREAM_ERRORS, NS_STREAMS, StreamError,
    StreamOpen, StreamParser, parse_element, stream_error_xml,
};
