//! The server side of SASL for the XMPP line: SCRAM-SHA-256 (RFC 7677), SCRAM-SHA-1
//! (RFC 5802) and PLAIN (RFC 4616).
//!
//! This module is pure: no I/O, no clock, no async. The stream code feeds it the decoded
//! payloads of `<auth/>` and `<response/>` and sends back what it returns, so the protocol can be
//! tested byte for byte against the RFC examples.
//!
//! The server holds only SCRAM verifiers (salt, iterations, StoredKey, ServerKey), never a
//! password, so a SCRAM exchange is checked without ever learning the password. PLAIN hands the
//! caller the password it received; checking it against the verifier is the hub's job
//! (`switchboard_core::credentials::check_password`), which must be offered only over TLS.
//!
//! For a user that does not exist the caller runs the exchange anyway with a made-up verifier
//! (the hub's SCRAM lookup supplies one), so that it fails at the proof like a wrong password
//! instead of telling at the first message which accounts exist.
//!
//! Usernames are returned as the client sent them (saslname-decoded); normalizing them
//! (case folding, stringprep) is the hub's job, which does it once for every line.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use switchboard_core::credentials::{constant_time_eq, random_bytes};
use switchboard_core::model::ScramVerifier;

/// Longest user name accepted, in bytes: the longest possible JID (RFC 7622 §3.1), so that a
/// client sending a full bare JID as its user name still fits, while a megabyte of name does not.
const MAX_USERNAME_LEN: usize = 3071;

/// Longest PLAIN password accepted, in bytes. Bounds the work done hashing it.
const MAX_PASSWORD_LEN: usize = 1024;

/// Longest client nonce accepted, in bytes. Real clients send 16 to 64 characters; the nonce is
/// echoed back and hashed, so an unbounded one would be free amplification.
const MAX_NONCE_LEN: usize = 512;

/// A SASL mechanism this server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    ScramSha256,
    ScramSha1,
    Plain,
}

impl Mechanism {
    /// Every mechanism, strongest first: the order to advertise them in. PLAIN must only be
    /// advertised once the stream is encrypted; that decision belongs to the caller.
    pub const ALL: [Mechanism; 3] = [
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// The registered IANA name, as sent in `<mechanism/>` and `<auth mechanism=…/>`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// Mechanism names are upper case by definition (RFC 4422 §3.1); anything else, including
    /// the `-PLUS` channel-binding variants we do not offer, is unknown.
    pub fn parse(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether this mechanism runs the SCRAM exchange (and so needs a verifier).
    pub fn is_scram(self) -> bool {
        self.scram_hash().is_some()
    }

    fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha256 => Some(ScramHash::Sha256),
            Mechanism::ScramSha1 => Some(ScramHash::Sha1),
            Mechanism::Plain => None,
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an exchange failed. Each variant is one RFC 6120 §6.5 `<failure/>` condition; the strings
/// are human-readable explanations meant for the failure's `<text/>` element, so they never
/// contain secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslError {
    /// The payload does not follow the mechanism's grammar.
    MalformedRequest(String),
    /// The credentials are wrong (or the user does not exist; the two are not told apart).
    NotAuthorized,
    /// The authorization identity is not one this user may act as.
    InvalidAuthzid(String),
    /// The mechanism may only be used over an encrypted stream. Not produced here: the caller
    /// knows whether the stream is encrypted.
    EncryptionRequired,
    /// The mechanism is unknown or not offered.
    InvalidMechanism(String),
}

impl SaslError {
    /// The RFC 6120 §6.5 condition element name.
    pub fn condition(&self) -> &'static str {
        match self {
            SaslError::MalformedRequest(_) => "malformed-request",
            SaslError::NotAuthorized => "not-authorized",
            SaslError::InvalidAuthzid(_) => "invalid-authzid",
            SaslError::EncryptionRequired => "encryption-required",
            SaslError::InvalidMechanism(_) => "invalid-mechanism",
        }
    }

    /// The explanation for the `<text/>` element, if there is one.
    pub fn text(&self) -> Option<&str> {
        match self {
            SaslError::MalformedRequest(text)
            | SaslError::InvalidAuthzid(text)
            | SaslError::InvalidMechanism(text) => Some(text),
            SaslError::NotAuthorized | SaslError::EncryptionRequired => None,
        }
    }
}

impl fmt::Display for SaslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text() {
            Some(text) => write!(f, "SASL {}: {text}", self.condition()),
            None => write!(f, "SASL {}", self.condition()),
        }
    }
}

impl std::error::Error for SaslError {}

fn malformed(text: impl Into<String>) -> SaslError {
    SaslError::MalformedRequest(text.into())
}

/// The hash a SCRAM variant is built on. The SCRAM logic is written once against this; only
/// these two primitives differ between SHA-1 and SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        macro_rules! hmac_with {
            ($hash:ty) => {{
                // HMAC accepts keys of any length, so this cannot fail; falling back to an empty
                // MAC instead of panicking keeps the module panic-free regardless.
                match <Hmac<$hash> as KeyInit>::new_from_slice(key) {
                    Ok(mut mac) => {
                        mac.update(data);
                        mac.finalize().into_bytes().to_vec()
                    }
                    Err(_) => Vec::new(),
                }
            }};
        }
        match self {
            ScramHash::Sha1 => hmac_with!(Sha1),
            ScramHash::Sha256 => hmac_with!(Sha256),
        }
    }
}

/// Decodes an RFC 5802 saslname: `=2C` is `,`, `=3D` is `=`, and any other `=` (or a bare `,`)
/// is malformed, because it would make the encoding ambiguous.
fn decode_saslname(raw: &str, what: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find(['=', ',']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if tail.starts_with("=2C") {
            out.push(',');
        } else if tail.starts_with("=3D") {
            out.push('=');
        } else {
            return Err(malformed(format!(
                "the {what} contains an '=' or ',' that is not escaped as =2C or =3D"
            )));
        }
        rest = &tail[3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(malformed(format!("the {what} is empty")));
    }
    if out.contains('\0') {
        return Err(malformed(format!("the {what} contains a NUL character")));
    }
    if out.len() > MAX_USERNAME_LEN {
        return Err(malformed(format!("the {what} is too long")));
    }
    Ok(out)
}

/// `printable` in RFC 5802: visible ASCII except `,`.
fn is_printable_nonce(nonce: &str) -> bool {
    nonce
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Checks an optional extension attribute (`attr-val` in RFC 5802): one letter, `=`, a value.
fn check_extension(part: &str, message: &str) -> Result<(), SaslError> {
    let mut chars = part.chars();
    match (chars.next(), chars.next()) {
        (Some(name), Some('=')) if name.is_ascii_alphabetic() => Ok(()),
        _ => Err(malformed(format!(
            "the {message} has an attribute that is not of the form x=value"
        ))),
    }
}

/// The parsed client-first-message. It comes apart from the rest of the exchange because the
/// server must learn the user name before it can look up that user's verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The authentication identity, saslname-decoded.
    pub username: String,
    /// The authorization identity from the GS2 header, if the client sent one.
    pub authzid: Option<String>,
    /// The GS2 header exactly as sent (`n,,`, `y,,`, `n,a=…,`): the client-final's `c=` must
    /// carry it back, which is how a downgrade of channel binding is detected.
    gs2_header: String,
    client_nonce: String,
    /// Everything after the GS2 header, verbatim: the first part of the AuthMessage.
    bare: String,
}

/// Parses a client-first-message: `gs2-cbind-flag "," [authzid] "," [reserved-mext ","]
/// username "," nonce ["," extensions]`.
pub fn parse_client_first(data: &[u8]) -> Result<ClientFirst, SaslError> {
    let text = std::str::from_utf8(data)
        .map_err(|_| malformed("the client-first-message is not UTF-8"))?;

    // GS2 header: the channel-binding flag, then the optional authzid, each followed by ','.
    let (flag, rest) = text
        .split_once(',')
        .ok_or_else(|| malformed("the client-first-message has no GS2 header"))?;
    match flag {
        // 'y' means "I support channel binding but think you do not": true, we offer no -PLUS
        // mechanism, so it is not a downgrade.
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(malformed("channel binding is not supported")),
        _ => {
            return Err(malformed(
                "the GS2 channel-binding flag must be 'n', 'y' or 'p=…'",
            ));
        }
    }
    let (authzid_part, bare) = rest
        .split_once(',')
        .ok_or_else(|| malformed("the GS2 header is not terminated by ','"))?;
    let authzid = match authzid_part {
        "" => None,
        a => match a.strip_prefix("a=") {
            Some(name) => Some(decode_saslname(name, "authorization identity")?),
            None => {
                return Err(malformed(
                    "the GS2 header's second field must be empty or a=authzid",
                ));
            }
        },
    };
    let gs2_header = &text[..text.len() - bare.len()];

    let mut parts = bare.split(',');
    let mut first = parts.next().unwrap_or_default();
    if first.starts_with("m=") {
        return Err(malformed(
            "mandatory SCRAM extensions (m=) are not supported",
        ));
    }
    let username_raw = first
        .strip_prefix("n=")
        .ok_or_else(|| malformed("the client-first-message has no user name (n=)"))?;
    let username = decode_saslname(username_raw, "user name")?;

    first = parts
        .next()
        .ok_or_else(|| malformed("the client-first-message has no nonce (r=)"))?;
    let client_nonce = first
        .strip_prefix("r=")
        .ok_or_else(|| malformed("the client-first-message has no nonce (r=)"))?;
    if client_nonce.is_empty() {
        return Err(malformed("the client nonce is empty"));
    }
    if client_nonce.len() > MAX_NONCE_LEN {
        return Err(malformed("the client nonce is too long"));
    }
    if !is_printable_nonce(client_nonce) {
        return Err(malformed(
            "the client nonce contains characters other than printable ASCII",
        ));
    }
    for extension in parts {
        check_extension(extension, "client-first-message")?;
    }

    Ok(ClientFirst {
        username,
        authzid,
        gs2_header: gs2_header.to_owned(),
        client_nonce: client_nonce.to_owned(),
        bare: bare.to_owned(),
    })
}

/// A SCRAM exchange between the server-first-message and the client-final-message.
#[derive(Debug)]
pub struct ScramServer {
    hash: ScramHash,
    first: ClientFirst,
    server_first: String,
    /// Client nonce followed by server nonce: what the client-final's `r=` must repeat.
    nonce: String,
    verifier: ScramVerifier,
}

impl ScramServer {
    /// Starts the exchange: returns the server and the server-first-message
    /// `r=<client nonce + server nonce>,s=<base64 salt>,i=<iterations>`.
    ///
    /// The server nonce is 18 random bytes in base64: printable, free of `,`, and 144 bits, well
    /// above what RFC 5802 asks for a value that must never repeat.
    pub fn start(
        mechanism: Mechanism,
        first: ClientFirst,
        verifier: ScramVerifier,
    ) -> Result<(ScramServer, Vec<u8>), SaslError> {
        let server_nonce = STANDARD.encode(random_bytes::<18>());
        Self::start_with_nonce(mechanism, first, verifier, &server_nonce)
    }

    /// `start` with a chosen server nonce, so that tests can replay the RFC examples.
    fn start_with_nonce(
        mechanism: Mechanism,
        first: ClientFirst,
        verifier: ScramVerifier,
        server_nonce: &str,
    ) -> Result<(ScramServer, Vec<u8>), SaslError> {
        let hash = mechanism.scram_hash().ok_or_else(|| {
            SaslError::InvalidMechanism(format!("{mechanism} is not a SCRAM mechanism"))
        })?;
        let nonce = format!("{}{server_nonce}", first.client_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&verifier.salt),
            verifier.iterations
        );
        let reply = server_first.clone().into_bytes();
        Ok((
            ScramServer {
                hash,
                first,
                server_first,
                nonce,
                verifier,
            },
            reply,
        ))
    }

    /// Checks the client-final-message `c=<base64 GS2 header>,r=<nonce>[,ext…],p=<base64 proof>`
    /// and, if the proof is right, returns the server-final-message `v=<base64 ServerSignature>`
    /// that lets the client check the server knew its verifier too.
    ///
    /// The proof is checked the only way a verifier allows: ClientSignature =
    /// HMAC(StoredKey, AuthMessage), ClientKey = proof XOR ClientSignature, then
    /// H(ClientKey) must equal StoredKey, compared in constant time.
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, SaslError> {
        let text = std::str::from_utf8(client_final)
            .map_err(|_| malformed("the client-final-message is not UTF-8"))?;

        // The proof is always the last attribute, and base64 has no ',', so the message
        // without the proof (which goes into the AuthMessage) ends at the last ','.
        let (without_proof, proof_part) = text
            .rsplit_once(',')
            .ok_or_else(|| malformed("the client-final-message has no proof (p=)"))?;
        let proof_b64 = proof_part
            .strip_prefix("p=")
            .ok_or_else(|| malformed("the client-final-message does not end with a proof (p=)"))?;

        let mut parts = without_proof.split(',');
        let binding_b64 = parts
            .next()
            .and_then(|p| p.strip_prefix("c="))
            .ok_or_else(|| malformed("the client-final-message does not start with c="))?;
        let nonce = parts
            .next()
            .and_then(|p| p.strip_prefix("r="))
            .ok_or_else(|| malformed("the client-final-message has no nonce (r=)"))?;
        for extension in parts {
            check_extension(extension, "client-final-message")?;
        }

        let binding = STANDARD
            .decode(binding_b64)
            .map_err(|_| malformed("the channel binding (c=) is not valid base64"))?;
        // Without channel binding the c= attribute carries back exactly the GS2 header; a
        // difference means the header was tampered with (e.g. 'y' turned into 'n').
        if binding != self.first.gs2_header.as_bytes() {
            return Err(malformed(
                "the channel binding (c=) does not match the GS2 header of the first message",
            ));
        }
        if nonce != self.nonce {
            return Err(malformed(
                "the nonce (r=) does not match the one this exchange started with",
            ));
        }
        let proof = STANDARD
            .decode(proof_b64)
            .map_err(|_| malformed("the proof (p=) is not valid base64"))?;
        if proof.len() != self.hash.output_len() {
            return Err(malformed("the proof (p=) has the wrong length"));
        }

        let auth_message = format!("{},{},{without_proof}", self.first.bare, self.server_first);
        let client_signature = self
            .hash
            .hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let candidate = self.hash.digest(&client_key);
        if !constant_time_eq(&candidate, &self.verifier.stored_key) {
            return Err(SaslError::NotAuthorized);
        }

        let server_signature = self
            .hash
            .hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }

    /// The authentication identity the client claimed (proved only once `finish` succeeds).
    pub fn username(&self) -> &str {
        &self.first.username
    }

    /// The authorization identity from the GS2 header, which the caller must check (XMPP allows
    /// only the user's own bare JID) and answer with `InvalidAuthzid` otherwise.
    pub fn authzid(&self) -> Option<&str> {
        self.first.authzid.as_deref()
    }

    /// Which SCRAM variant this exchange runs.
    pub fn mechanism(&self) -> Mechanism {
        match self.hash {
            ScramHash::Sha1 => Mechanism::ScramSha1,
            ScramHash::Sha256 => Mechanism::ScramSha256,
        }
    }
}

/// A parsed PLAIN message (RFC 4616): `[authzid] NUL authcid NUL passwd`.
#[derive(Clone, PartialEq, Eq)]
pub struct Plain {
    pub authzid: Option<String>,
    pub username: String,
    pub password: String,
}

/// Hand-written so the password never reaches a log line through `{:?}`.
impl fmt::Debug for Plain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plain")
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Parses a PLAIN message. An empty authzid means "the same as the user" and becomes `None`.
pub fn parse_plain(data: &[u8]) -> Result<Plain, SaslError> {
    let text =
        std::str::from_utf8(data).map_err(|_| malformed("the PLAIN message is not UTF-8"))?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(username), Some(password)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "the PLAIN message must be authzid NUL username NUL password",
        ));
    };
    if parts.next().is_some() {
        return Err(malformed(
            "the PLAIN message contains a NUL character inside a field",
        ));
    }
    if username.is_empty() {
        return Err(malformed("the PLAIN user name is empty"));
    }
    if username.len() > MAX_USERNAME_LEN {
        return Err(malformed("the PLAIN user name is too long"));
    }
    if authzid.len() > MAX_USERNAME_LEN {
        return Err(malformed("the PLAIN authorization identity is too long"));
    }
    if password.is_empty() {
        return Err(malformed("the PLAIN password is empty"));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(malformed(format!(
            "the PLAIN password is longer than {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(Plain {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PBKDF2 with a single output block (enough for SHA-1 and SHA-256 key lengths), written out
    /// here because pbkdf2 is not a dependency of this crate.
    fn salted_password(hash: ScramHash, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut block = salt.to_vec();
        block.extend_from_slice(&1u32.to_be_bytes());
        let mut u = hash.hmac(password.as_bytes(), &block);
        let mut out = u.clone();
        for _ in 1..iterations {
            u = hash.hmac(password.as_bytes(), &u);
            out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
        }
        out
    }

    fn verifier(hash: ScramHash, password: &str, salt_b64: &str, iterations: u32) -> ScramVerifier {
        let salt = STANDARD.decode(salt_b64).unwrap();
        let salted = salted_password(hash, password, &salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        ScramVerifier {
            salt,
            iterations,
            stored_key: hash.digest(&client_key),
            server_key: hash.hmac(&salted, b"Server Key"),
        }
    }

    /// What a client computes for its proof, to drive exchanges beyond the RFC examples.
    fn client_proof(
        hash: ScramHash,
        password: &str,
        salt: &[u8],
        iterations: u32,
        auth_message: &str,
    ) -> String {
        let salted = salted_password(hash, password, salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        let stored_key = hash.digest(&client_key);
        let signature = hash.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        STANDARD.encode(proof)
    }

    const RFC7677_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC7677_SNONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC7677_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";

    fn rfc7677_server() -> ScramServer {
        let first = parse_client_first(RFC7677_FIRST.as_bytes()).unwrap();
        let v = verifier(
            ScramHash::Sha256,
            "pencil",
            "W22ZaJ0SNY7soEsUEjb6gQ==",
            4096,
        );
        let (server, reply) =
            ScramServer::start_with_nonce(Mechanism::ScramSha256, first, v, RFC7677_SNONCE)
                .unwrap();
        assert_eq!(
            String::from_utf8(reply).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        server
    }

    #[test]
    fn rfc7677_scram_sha256_exchange() {
        let server = rfc7677_server();
        assert_eq!(server.username(), "user");
        assert_eq!(server.authzid(), None);
        assert_eq!(server.mechanism(), Mechanism::ScramSha256);
        let reply = server.finish(RFC7677_FINAL.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(reply).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn rfc5802_scram_sha1_exchange() {
        let first = parse_client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
        let v = verifier(ScramHash::Sha1, "pencil", "QSXCR+Q6sek8bf92", 4096);
        let (server, reply) =
            ScramServer::start_with_nonce(Mechanism::ScramSha1, first, v, "3rfcNHYJY1ZVvWVs7j")
                .unwrap();
        assert_eq!(
            String::from_utf8(reply).unwrap(),
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
        );
        let reply = server
            .finish(
                b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(reply).unwrap(),
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ="
        );
    }

    #[test]
    fn random_server_nonce_is_printable_and_extends_client_nonce() {
        let first = parse_client_first(RFC7677_FIRST.as_bytes()).unwrap();
        let v = verifier(ScramHash::Sha256, "pencil", "W22ZaJ0SNY7soEsUEjb6gQ==", 16);
        let (server, reply) = ScramServer::start(Mechanism::ScramSha256, first, v).unwrap();
        let reply = String::from_utf8(reply).unwrap();
        let nonce = reply
            .strip_prefix("r=")
            .and_then(|r| r.split(',').next())
            .unwrap();
        assert!(nonce.starts_with("rOprNGfwEbeRWgbNEkqO"));
        assert_eq!(nonce.len(), "rOprNGfwEbeRWgbNEkqO".len() + 24);
        assert!(is_printable_nonce(nonce));
        assert_eq!(server.nonce, nonce);
    }

    #[test]
    fn full_exchange_with_computed_proof_and_authzid() {
        let first_msg = "y,a=alice@example.org,n=al=2Cice=3D,r=abc";
        let first = parse_client_first(first_msg.as_bytes()).unwrap();
        assert_eq!(first.username, "al,ice=");
        assert_eq!(first.authzid.as_deref(), Some("alice@example.org"));
        let v = verifier(ScramHash::Sha1, "secret", "c2FsdHNhbHQ=", 32);
        let salt = v.salt.clone();
        let (server, reply) =
            ScramServer::start_with_nonce(Mechanism::ScramSha1, first, v, "XYZ").unwrap();
        let server_first = String::from_utf8(reply).unwrap();
        let without_proof = format!("c={},r=abcXYZ", STANDARD.encode("y,a=alice@example.org,"));
        let auth_message = format!("n=al=2Cice=3D,r=abc,{server_first},{without_proof}");
        let proof = client_proof(ScramHash::Sha1, "secret", &salt, 32, &auth_message);
        assert_eq!(server.authzid(), Some("alice@example.org"));
        server
            .finish(format!("{without_proof},p={proof}").as_bytes())
            .unwrap();
    }

    #[test]
    fn wrong_proof_is_not_authorized() {
        let server = rfc7677_server();
        let bad = RFC7677_FINAL.replace("p=dHzb", "p=dHzc");
        assert_eq!(server.finish(bad.as_bytes()), Err(SaslError::NotAuthorized));

        // Right proof for the wrong password.
        let first = parse_client_first(RFC7677_FIRST.as_bytes()).unwrap();
        let v = verifier(ScramHash::Sha256, "pencil", "W22ZaJ0SNY7soEsUEjb6gQ==", 16);
        let salt = v.salt.clone();
        let (server, reply) =
            ScramServer::start_with_nonce(Mechanism::ScramSha256, first, v, "S").unwrap();
        let server_first = String::from_utf8(reply).unwrap();
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqOS";
        let auth_message = format!("n=user,r=rOprNGfwEbeRWgbNEkqO,{server_first},{without_proof}");
        let proof = client_proof(ScramHash::Sha256, "pen", &salt, 16, &auth_message);
        assert_eq!(
            server.finish(format!("{without_proof},p={proof}").as_bytes()),
            Err(SaslError::NotAuthorized)
        );
    }

    #[test]
    fn changed_nonce_is_rejected() {
        let server = rfc7677_server();
        let bad = RFC7677_FINAL.replace("k0,p=", "k1,p=");
        let err = server.finish(bad.as_bytes()).unwrap_err();
        assert_eq!(err.condition(), "malformed-request");
        assert!(err.text().unwrap().contains("nonce"));
    }

    #[test]
    fn gs2_header_mismatch_is_rejected() {
        // The client said "y" (supports channel binding) but c= claims "n,,".
        let first = parse_client_first(b"y,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let v = verifier(ScramHash::Sha256, "pencil", "W22ZaJ0SNY7soEsUEjb6gQ==", 16);
        let (server, _) =
            ScramServer::start_with_nonce(Mechanism::ScramSha256, first, v, RFC7677_SNONCE)
                .unwrap();
        let err = server.finish(RFC7677_FINAL.as_bytes()).unwrap_err();
        assert!(err.text().unwrap().contains("channel binding"));

        let server = rfc7677_server();
        let bad = RFC7677_FINAL.replace("c=biws", "c=!!!");
        assert!(matches!(
            server.finish(bad.as_bytes()),
            Err(SaslError::MalformedRequest(_))
        ));
    }

    #[test]
    fn plain_is_not_a_scram_mechanism() {
        let first = parse_client_first(RFC7677_FIRST.as_bytes()).unwrap();
        let v = verifier(ScramHash::Sha256, "pencil", "W22ZaJ0SNY7soEsUEjb6gQ==", 1);
        let err = ScramServer::start(Mechanism::Plain, first, v).unwrap_err();
        assert_eq!(err.condition(), "invalid-mechanism");
    }

    #[test]
    fn saslname_escapes() {
        let parse = |s: &str| parse_client_first(s.as_bytes()).map(|f| f.username);
        assert_eq!(parse("n,,n=a=2Cb=3Dc,r=x").unwrap(), "a,b=c");
        assert_eq!(parse("n,,n==3D=2C,r=x").unwrap(), "=,");
        assert_eq!(parse("n,,n=héllo,r=x").unwrap(), "héllo");
        for bad in [
            "n,,n=a=2cb,r=x", // escapes are upper case
            "n,,n=a=3,r=x",
            "n,,n=a=,r=x",
            "n,,n==41,r=x",
            "n,,n=a=b,r=x",
            "n,,n=,r=x",
            "n,,n=a\0b,r=x",
        ] {
            assert!(
                matches!(parse(bad), Err(SaslError::MalformedRequest(_))),
                "{bad:?} should be malformed"
            );
        }
        let first = parse_client_first(b"n,a=b=3Dc,n=u,r=x").unwrap();
        assert_eq!(first.authzid.as_deref(), Some("b=c"));
    }

    #[test]
    fn client_first_grammar() {
        let ok = |s: &str| parse_client_first(s.as_bytes()).unwrap();
        let f = ok("n,,n=user,r=abc,x=ext");
        assert_eq!(
            (f.gs2_header.as_str(), f.bare.as_str()),
            ("n,,", "n=user,r=abc,x=ext")
        );
        assert_eq!(ok("y,,n=u,r=a").gs2_header, "y,,");

        let err = |s: &[u8]| parse_client_first(s).unwrap_err();
        assert_eq!(
            err(b"p=tls-unique,,n=user,r=abc"),
            malformed("channel binding is not supported")
        );
        assert!(err(b"n,,m=ext,n=user,r=abc").text().unwrap().contains("m="));
        assert!(err(b"n,,n=user").text().unwrap().contains("nonce"));
        assert!(err(b"n,,n=user,r=").text().unwrap().contains("empty"));
        assert!(err(b"n,,n=user,x=abc").text().unwrap().contains("nonce"));
        assert!(err(b"n,,n=,r=abc").text().unwrap().contains("empty"));
        assert!(err(b"n,,r=abc").text().unwrap().contains("user name"));
        assert!(err(b"n,,n=u\xff,r=abc").text().unwrap().contains("UTF-8"));
        assert!(
            err(b"n,,n=u,r=a\x7fb")
                .text()
                .unwrap()
                .contains("printable")
        );
        assert!(err(b"n,,n=u,r=a,bad").text().unwrap().contains("attribute"));
        assert!(err(b"x,,n=u,r=a").text().unwrap().contains("flag"));
        assert!(err(b"n,b=x,n=u,r=a").text().unwrap().contains("authzid"));
        assert!(err(b"n,a=,n=u,r=a").text().unwrap().contains("empty"));
        assert!(err(b"n").text().unwrap().contains("GS2"));
        assert!(err(b"n,").text().unwrap().contains("GS2"));
        let long = format!("n,,n={},r=a", "u".repeat(MAX_USERNAME_LEN + 1));
        assert!(err(long.as_bytes()).text().unwrap().contains("too long"));
    }

    #[test]
    fn mechanism_names_round_trip() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::parse(m.name()), Some(m));
        }
        assert_eq!(Mechanism::parse("scram-sha-256"), None);
        assert_eq!(Mechanism::parse("SCRAM-SHA-256-PLUS"), None);
        assert_eq!(Mechanism::parse("DIGEST-MD5"), None);
        assert!(Mechanism::ScramSha1.is_scram() && !Mechanism::Plain.is_scram());
    }

    #[test]
    fn error_conditions_and_display() {
        assert_eq!(SaslError::NotAuthorized.condition(), "not-authorized");
        assert_eq!(SaslError::NotAuthorized.text(), None);
        assert_eq!(
            SaslError::EncryptionRequired.condition(),
            "encryption-required"
        );
        let e = SaslError::InvalidAuthzid("not yours".into());
        assert_eq!(
            (e.condition(), e.text()),
            ("invalid-authzid", Some("not yours"))
        );
        assert_eq!(e.to_string(), "SASL invalid-authzid: not yours");
        assert_eq!(
            SaslError::InvalidMechanism("x".into()).condition(),
            "invalid-mechanism"
        );
        assert_eq!(malformed("x").condition(), "malformed-request");
    }

    #[test]
    fn plain_parsing() {
        let p = parse_plain(b"\0alice\0secret").unwrap();
        assert_eq!(
            (p.authzid, p.username.as_str(), p.password.as_str()),
            (None, "alice", "secret")
        );
        let p = parse_plain("admin@example.org\0alice\0pässwörd".as_bytes()).unwrap();
        assert_eq!(p.authzid.as_deref(), Some("admin@example.org"));
        assert_eq!(p.password, "pässwörd");
        assert!(!format!("{p:?}").contains("pässwörd"));

        let long = format!("\0alice\0{}", "x".repeat(MAX_PASSWORD_LEN));
        assert!(parse_plain(long.as_bytes()).is_ok());
        let too_long = format!("\0alice\0{}", "x".repeat(MAX_PASSWORD_LEN + 1));
        let err = |s: &[u8]| parse_plain(s).unwrap_err().text().unwrap().to_owned();
        assert!(err(too_long.as_bytes()).contains("longer"));
        assert!(err(b"alice\0secret").contains("NUL"));
        assert!(err(b"").contains("NUL"));
        assert!(err(b"\0\0secret").contains("user name is empty"));
        assert!(err(b"\0alice\0").contains("password is empty"));
        assert!(err(b"\0alice\0sec\0ret").contains("inside"));
        assert!(err(b"\0alice\0sec\xffret").contains("UTF-8"));
    }

    /// Every prefix and many corruptions of valid messages must come back as an error or a
    /// success, never a panic.
    #[test]
    fn garbage_never_panics() {
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        let seeds: [&[u8]; 6] = [
            RFC7677_FIRST.as_bytes(),
            RFC7677_FINAL.as_bytes(),
            b"y,a=x=2Cy,n=u=3D,r=abc,e=1",
            b"\0alice\0secret",
            "n,,n=\u{e9}\u{1f600},r=\u{e9}".as_bytes(),
            b"=,=,=\0\xff\xfe,p=,c=,r=",
        ];
        for seed in seeds {
            for end in 0..=seed.len() {
                inputs.push(seed[..end].to_vec());
                inputs.push(seed[end..].to_vec());
                for byte in [0u8, b',', b'=', b'\0', 0xff, 0x80, b'p', b'n'] {
                    let mut changed = seed.to_vec();
                    if end < changed.len() {
                        changed[end] = byte;
                    } else {
                        changed.push(byte);
                    }
                    inputs.push(changed);
                }
            }
        }
        // A few deterministic pseudo-random byte strings.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..200 {
            let bytes = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    b",=nrpcay\0\xffA0"[(state % 12) as usize]
                })
                .collect();
            inputs.push(bytes);
        }

        let v = verifier(ScramHash::Sha256, "pencil", "W22ZaJ0SNY7soEsUEjb6gQ==", 1);
        for input in &inputs {
            let _ = parse_plain(input);
            let _ = Mechanism::parse(&String::from_utf8_lossy(input));
            if let Ok(first) = parse_client_first(input) {
                for mechanism in Mechanism::ALL {
                    let _ = ScramServer::start(mechanism, first.clone(), v.clone());
                }
            }
            let first = parse_client_first(RFC7677_FIRST.as_bytes()).unwrap();
            for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha1] {
                let (server, _) = ScramServer::start_with_nonce(
                    mechanism,
                    first.clone(),
                    v.clone(),
                    RFC7677_SNONCE,
                )
                .unwrap();
                let _ = server.finish(input);
            }
        }
    }
}
