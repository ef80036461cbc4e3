//! SASL (RFC 6120 §6) over the hub's accounts: SCRAM against the stored verifiers, PLAIN
//! only inside TLS. A successful exchange becomes a hub login of kind `xmpp`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use switchboard_core::hub::Principal;
use switchboard_core::{Address, HubError};
use switchboard_xmpp_proto::Element;

use crate::Line;
use crate::sasl::{self, Mechanism, SaslError, ScramServer};
use crate::session::{Incoming, Transport};
use crate::stanza::NS_SASL;

/// The negotiation every transport goes through once it carries a secure stream: stream
/// opening with SASL features, the exchange, the restart with the features of a logged-in
/// stream. Returns the principal, or `None` when the stream ended (it was answered already).
pub async fn negotiate<T: Transport>(line: &Line, t: &mut T, client: &str) -> Option<Principal> {
    let outcome = tokio::time::timeout(line.config.negotiation_timeout, async {
        expect_open(line, t).await?;
        let secure = t.secure();
        let mut mechanisms = Element::new("mechanisms", NS_SASL);
        for m in Mechanism::ALL
            .into_iter()
            .filter(|m| secure || *m != Mechanism::Plain)
        {
            mechanisms.append_child(Element::new("mechanism", NS_SASL).with_text(m.name()));
        }
        let features =
            Element::new("features", switchboard_xmpp_proto::NS_STREAMS).with_child(mechanisms);
        t.open(Some(features)).await.ok()?;
        let mut exchange = Exchange::default();
        let mut failures = 0;
        let principal = loop {
            let el = match t.read().await {
                Incoming::Stanza(el) if el.ns() == NS_SASL => el,
                Incoming::Stanza(_) => {
                    t.close(Some((
                        "not-authorized",
                        Some("authenticate with SASL first"),
                    )))
                    .await;
                    return None;
                }
                Incoming::Open { .. } => {
                    t.close(Some(("bad-format", Some("the stream was already opened"))))
                        .await;
                    return None;
                }
                Incoming::Close => {
                    t.close(None).await;
                    return None;
                }
                Incoming::Gone => return None,
                Incoming::Tick => continue,
                Incoming::Error(e) => {
                    t.close(Some((e.condition(), Some(e.text())))).await;
                    return None;
                }
            };
            match exchange.step(line, &el, secure, client).await {
                Step::Continue(reply) => t.write(&[reply.to_xml()]).await.ok()?,
                Step::Success(reply, principal) => {
                    t.restart();
                    if t.write(&[reply.to_xml()]).await.is_err() {
                        let _ = line.hub.logout(&principal).await;
                        return None;
                    }
                    break principal;
                }
                Step::Failure(reply) => {
                    t.write(&[reply.to_xml()]).await.ok()?;
                    failures += 1;
                    if failures >= 5 {
                        t.close(Some(("policy-violation", Some("too many failed attempts"))))
                            .await;
                        return None;
                    }
                }
            }
        };
        let reopened = expect_open(line, t).await.is_some()
            && t.open(Some(crate::session::features_after_auth()))
                .await
                .is_ok();
        if !reopened {
            let _ = line.hub.logout(&principal).await;
            return None;
        }
        Some(principal)
    })
    .await;
    match outcome {
        Ok(outcome) => outcome,
        Err(_) => {
            t.close(Some((
                "connection-timeout",
                Some("authentication took too long"),
            )))
            .await;
            None
        }
    }
}

/// Reads the client's stream opening and checks it is for this server.
async fn expect_open<T: Transport>(line: &Line, t: &mut T) -> Option<()> {
    let mut incoming = t.read().await;
    while matches!(incoming, Incoming::Tick) {
        incoming = t.read().await;
    }
    let problem = match incoming {
        Incoming::Open { to } => match to {
            Some(to) if !line.hub.config().serves(&to.to_ascii_lowercase()) => {
                ("host-unknown", format!("this server does not serve {to}"))
            }
            _ => return Some(()),
        },
        Incoming::Gone | Incoming::Close | Incoming::Tick => return None,
        Incoming::Error(e) => (e.condition(), e.text().to_string()),
        Incoming::Stanza(_) => ("bad-format", "the stream must be opened first".to_string()),
    };
    // The client gets a stream to read the error in.
    let _ = t.open(None).await;
    t.close(Some((problem.0, Some(&problem.1)))).await;
    None
}

/// What the connection sends after one SASL element from the client.
pub enum Step {
    /// Send this element and wait for the client's next one.
    Continue(Element),
    /// Authenticated: send `<success/>` and restart the stream.
    Success(Element, Principal),
    /// Send this `<failure/>`; the client may try again.
    Failure(Element),
}

/// One SASL negotiation on one connection.
#[derive(Default)]
pub struct Exchange {
    scram: Option<(ScramServer, Option<Address>)>,
}

fn failure(error: &SaslError) -> Element {
    let mut el =
        Element::new("failure", NS_SASL).with_child(Element::new(error.condition(), NS_SASL));
    if let Some(text) = error.text() {
        el.append_child(Element::new("text", NS_SASL).with_text(text));
    }
    el
}

fn decode(el: &Element) -> Result<Vec<u8>, SaslError> {
    let text = el.text();
    let text = text.trim();
    if text == "=" {
        return Ok(Vec::new());
    }
    STANDARD
        .decode(text)
        .map_err(|_| SaslError::MalformedRequest("the SASL data is not valid base64".into()))
}

fn hub_failure(error: HubError) -> SaslError {
    match error {
        HubError::RateLimited(text) => SaslError::MalformedRequest(text),
        HubError::BadCredentials => SaslError::NotAuthorized,
        other => {
            tracing::warn!(error = %other, "SASL could not reach the hub");
            SaslError::NotAuthorized
        }
    }
}

impl Exchange {
    /// Handles `<auth/>`, `<response/>` or `<abort/>`. `secure` tells whether the stream
    /// runs inside TLS; `client` is the client's address, for login throttling.
    pub async fn step(&mut self, line: &Line, el: &Element, secure: bool, client: &str) -> Step {
        match self.try_step(line, el, secure, client).await {
            Ok(step) => step,
            Err(error) => {
                self.scram = None;
                if error == SaslError::NotAuthorized {
                    line.hub.sasl_failed();
                }
                Step::Failure(failure(&error))
            }
        }
    }

    async fn try_step(
        &mut self,
        line: &Line,
        el: &Element,
        secure: bool,
        client: &str,
    ) -> Result<Step, SaslError> {
        match el.name() {
            "abort" => {
                self.scram = None;
                Ok(Step::Failure(
                    Element::new("failure", NS_SASL).with_child(Element::new("aborted", NS_SASL)),
                ))
            }
            "auth" => {
                self.scram = None;
                let name = el.attr("mechanism").unwrap_or_default();
                let mechanism = Mechanism::parse(name).ok_or_else(|| {
                    SaslError::InvalidMechanism(format!("the mechanism {name:?} is not offered"))
                })?;
                let data = decode(el)?;
                match mechanism {
                    // PLAIN shows the password to whoever reads the stream; SCRAM proves it
                    // without sending it, so it is fine without TLS (BOSH or WebSocket behind
                    // a proxy on loopback).
                    Mechanism::Plain if !secure => Err(SaslError::EncryptionRequired),
                    Mechanism::Plain => {
                        let plain = sasl::parse_plain(&data)?;
                        check_authzid(line, plain.authzid.as_deref(), &plain.username)?;
                        let login = line
                            .hub
                            .login(
                                &plain.username,
                                &plain.password,
                                switchboard_core::model::LoginKind::Xmpp,
                                client,
                                None,
                            )
                            .await
                            .map_err(hub_failure)?;
                        Ok(Step::Success(
                            Element::new("success", NS_SASL),
                            login.principal,
                        ))
                    }
                    Mechanism::ScramSha1 | Mechanism::ScramSha256 => {
                        let first = sasl::parse_client_first(&data)?;
                        check_authzid(line, first.authzid.as_deref(), &first.username)?;
                        let lookup = line
                            .hub
                            .scram_lookup(&first.username, client)
                            .await
                            .map_err(hub_failure)?;
                        let verifier = if mechanism == Mechanism::ScramSha1 {
                            lookup.credentials.scram_sha1
                        } else {
                            lookup.credentials.scram_sha256
                        };
                        let (server, challenge) = ScramServer::start(mechanism, first, verifier)?;
                        self.scram = Some((server, lookup.address));
                        Ok(Step::Continue(
                            Element::new("challenge", NS_SASL)
                                .with_text(STANDARD.encode(challenge)),
                        ))
                    }
                }
            }
            "response" => {
                let (server, address) = self.scram.take().ok_or_else(|| {
                    SaslError::MalformedRequest("a response without an exchange in progress".into())
                })?;
                let data = decode(el)?;
                let server_final = server.finish(&data)?;
                let address = address.ok_or(SaslError::NotAuthorized)?;
                let principal = line
                    .hub
                    .sasl_login(&address, None)
                    .await
                    .map_err(hub_failure)?;
                Ok(Step::Success(
                    Element::new("success", NS_SASL).with_text(STANDARD.encode(server_final)),
                    principal,
                ))
            }
            other => Err(SaslError::MalformedRequest(format!(
                "<{other}/> is not a SASL element"
            ))),
        }
    }
}

/// An authorization identity may only name the authenticating user themselves.
fn check_authzid(line: &Line, authzid: Option<&str>, username: &str) -> Result<(), SaslError> {
    let Some(authzid) = authzid else {
        return Ok(());
    };
    let wanted = line.hub.parse_address(authzid);
    let user = line.hub.parse_address(username);
    match (wanted, user) {
        (Ok(a), Ok(b)) if a == b => Ok(()),
        _ => Err(SaslError::InvalidAuthzid(
            "you can only act as yourself".into(),
        )),
    }
}
