//! SASL (RFC 6120 §6) over the hub's accounts: SCRAM against the stored verifiers, PLAIN
//! only inside TLS. A successful exchange becomes a hub login of kind `xmpp`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use switchboard_core::hub::Principal;
use switchboard_core::{Address, HubError};
use switchboard_xmpp_proto::Element;

use crate::Line;
use crate::sasl::{self, Mechanism, SaslError, ScramServer};
use crate::stanza::NS_SASL;

/// The mechanisms offered, strongest first.
pub const MECHANISMS: [Mechanism; 3] = [
    Mechanism::ScramSha256,
    Mechanism::ScramSha1,
    Mechanism::Plain,
];

/// The `<mechanisms/>` stream feature.
pub fn mechanisms_feature() -> Element {
    let mut el = Element::new("mechanisms", NS_SASL);
    for m in MECHANISMS {
        el.append_child(Element::new("mechanism", NS_SASL).with_text(m.name()));
    }
    el
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
                if !secure {
                    return Err(SaslError::EncryptionRequired);
                }
                let data = decode(el)?;
                match mechanism {
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
