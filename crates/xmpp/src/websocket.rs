//! XMPP over WebSocket (RFC 7395) at `/xmpp-websocket` on the HTTP port, for browser XMPP
//! clients. Each WebSocket message is one complete element; the stream is opened and closed
//! with the framing elements `<open/>` and `<close/>` instead of a stream header.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::response::Response;
use switchboard_xmpp_proto::{Element, Frame, StreamError, StreamParser, escape};

use crate::Line;
use crate::auth;
use crate::session::{self, Incoming, Transport};
use crate::stanza::{StreamPrefix, features_xml, stream_error_xml};

pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

pub async fn upgrade(
    State(line): State<Arc<Line>>,
    Extension(peer): Extension<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let limit = line.config.max_stanza_bytes;
    ws.protocols(["xmpp"])
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            let _open = line.connection();
            let mut t = WsTransport::new(&line, socket);
            if let Some(principal) = auth::negotiate(&line, &mut t, &peer.ip().to_string()).await {
                session::run(line, &mut t, principal).await;
            }
        })
}

pub struct WsTransport {
    socket: WebSocket,
    parser: StreamParser,
    domain: String,
    secure: bool,
    /// Elements parsed from a message that held more than one.
    pending: std::collections::VecDeque<Element>,
}

impl WsTransport {
    fn new(line: &Line, socket: WebSocket) -> WsTransport {
        WsTransport {
            socket,
            // One parser for the whole connection: RFC 7395 §3.3.3 stanzas carry their
            // namespace anyway, and the limits apply per element.
            parser: StreamParser::for_elements(line.config.limits()),
            domain: line.domain().to_string(),
            secure: line.config.http_secure,
            pending: Default::default(),
        }
    }

    fn element(el: Element) -> Incoming {
        if el.ns() == NS_FRAMING {
            return match el.name() {
                "open" => Incoming::Open {
                    to: el.attr("to").map(str::to_string),
                },
                "close" => Incoming::Close,
                other => Incoming::Error(StreamError::BadFormat(format!(
                    "<{other}/> is not a framing element"
                ))),
            };
        }
        Incoming::Stanza(el)
    }
}

impl Transport for WsTransport {
    async fn read(&mut self) -> Incoming {
        if let Some(el) = self.pending.pop_front() {
            return Self::element(el);
        }
        loop {
            let text = match self.socket.recv().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Binary(_))) => {
                    return Incoming::Error(StreamError::BadFormat(
                        "XMPP over WebSocket uses text messages".into(),
                    ));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Incoming::Gone,
            };
            self.parser.feed(text.as_bytes());
            loop {
                match self.parser.next() {
                    Ok(Some(Frame::Stanza(el))) => self.pending.push_back(el),
                    Ok(Some(_)) => {
                        return Incoming::Error(StreamError::BadFormat(
                            "a WebSocket message must hold elements, not a stream header".into(),
                        ));
                    }
                    Ok(None) => break,
                    Err(e) => return Incoming::Error(e),
                }
            }
            if self.parser.buffered() > 0 && self.pending.is_empty() {
                return Incoming::Error(StreamError::BadFormat(
                    "a WebSocket message must hold one complete XML element".into(),
                ));
            }
            if let Some(el) = self.pending.pop_front() {
                return Self::element(el);
            }
        }
    }

    async fn write(&mut self, items: &[String]) -> io::Result<()> {
        for item in items {
            self.socket
                .send(Message::Text(item.as_str().into()))
                .await
                .map_err(io::Error::other)?;
        }
        Ok(())
    }

    async fn open(&mut self, features: Option<Element>) -> io::Result<()> {
        let open = format!(
            "<open xmlns='{NS_FRAMING}' from='{}' id='{}' version='1.0' xml:lang='en'/>",
            escape(&self.domain, true),
            switchboard_core::credentials::new_public_id()
        );
        let mut items = vec![open];
        if let Some(features) = features {
            items.push(features_xml(&features, StreamPrefix::Standalone));
        }
        self.write(&items).await
    }

    fn restart(&mut self) {
        // A new `<open/>` is just the next element: nothing to reset.
    }

    fn secure(&self) -> bool {
        self.secure
    }

    async fn close(&mut self, error: Option<(&str, Option<&str>)>) {
        let mut items = Vec::new();
        if let Some((condition, text)) = error {
            items.push(stream_error_xml(StreamPrefix::Standalone, condition, text));
        }
        items.push(format!("<close xmlns='{NS_FRAMING}'/>"));
        let _ = self.write(&items).await;
        let _ = self
            .socket
            .send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "".into(),
            })))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::NS_CLIENT;

    #[test]
    fn framing_elements_become_stream_events() {
        let open = Element::new("open", NS_FRAMING).with_attr("to", "localhost");
        assert!(
            matches!(WsTransport::element(open), Incoming::Open { to: Some(t) } if t == "localhost")
        );
        let close = Element::new("close", NS_FRAMING);
        assert!(matches!(WsTransport::element(close), Incoming::Close));
        let message = Element::new("message", NS_CLIENT);
        assert!(matches!(WsTransport::element(message), Incoming::Stanza(_)));
    }
}
