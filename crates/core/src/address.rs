//! Addresses: `local@realm`, normalized once at the edge.
//!
//! `Alice` typed in the web client and `alice` sent by an XMPP app must be the same person, so
//! every line parses user input through [`Address::parse`] and the hub only ever sees the
//! normalized form. The rules follow XMPP's localpart rules (RFC 7622, PRECIS
//! UsernameCaseMapped) closely enough for this server: case-folded, no spaces or control
//! characters, none of `"&'/:<>@`, at most 1023 bytes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a piece of text is not a valid address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("the user name is empty")]
    EmptyLocal,
    #[error("the user name is longer than 1023 bytes")]
    LocalTooLong,
    #[error("the user name contains {0:?}, which is not allowed")]
    ForbiddenChar(char),
    #[error("the realm is empty")]
    EmptyRealm,
    #[error("the realm is longer than 253 bytes")]
    RealmTooLong,
    #[error("the realm {0:?} is not a valid domain name")]
    BadRealm(String),
    #[error("the resource is empty or longer than 1023 bytes")]
    BadResource,
}

/// A realm (domain) users belong to, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Realm(String);

impl Realm {
    pub fn parse(text: &str) -> Result<Realm, AddressError> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        if lower.is_empty() {
            return Err(AddressError::EmptyRealm);
        }
        if lower.len() > 253 {
            return Err(AddressError::RealmTooLong);
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !lower.split('.').all(label_ok) {
            return Err(AddressError::BadRealm(text.to_string()));
        }
        Ok(Realm(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Realm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Realm {
    type Error = AddressError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Realm::parse(&value)
    }
}

impl From<Realm> for String {
    fn from(r: Realm) -> String {
        r.0
    }
}

/// A person's address: `local@realm`, normalized. This is the bare JID in XMPP terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Address {
    /// The whole normalized text, `local@realm`; kept whole because it is what every line
    /// prints and every index keys on.
    text: String,
    at: usize,
}

const FORBIDDEN_IN_LOCAL: &[char] = &['"', '&', '\'', '/', ':', '<', '>', '@'];

fn normalize_local(local: &str) -> Result<String, AddressError> {
    if local.is_empty() {
        return Err(AddressError::EmptyLocal);
    }
    if let Some(c) = local
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || FORBIDDEN_IN_LOCAL.contains(c))
    {
        return Err(AddressError::ForbiddenChar(c));
    }
    let folded = local.to_lowercase();
    if folded.len() > 1023 {
        return Err(AddressError::LocalTooLong);
    }
    Ok(folded)
}

impl Address {
    /// Builds an address from its two parts, normalizing the local part.
    pub fn new(local: &str, realm: &Realm) -> Result<Address, AddressError> {
        let local = normalize_local(local)?;
        let at = local.len();
        Ok(Address {
            text: format!("{local}@{realm}"),
            at,
        })
    }

    /// Parses `alice` (in `default_realm`) or `alice@realm`. A trailing `/resource` is refused:
    /// callers that accept full addresses use [`FullAddress::parse`].
    pub fn parse(text: &str, default_realm: &Realm) -> Result<Address, AddressError> {
        match text.rsplit_once('@') {
            Some((local, realm)) => Address::new(local, &Realm::parse(realm)?),
            None => Address::new(text, default_realm),
        }
    }

    /// Parses a complete `local@realm` (no default realm).
    pub fn parse_full(text: &str) -> Result<Address, AddressError> {
        match text.rsplit_once('@') {
            Some((local, realm)) => Address::new(local, &Realm::parse(realm)?),
            None => Err(AddressError::EmptyRealm),
        }
    }

    pub fn local(&self) -> &str {
        &self.text[..self.at]
    }

    pub fn realm(&self) -> Realm {
        Realm(self.text[self.at + 1..].to_string())
    }

    pub fn realm_str(&self) -> &str {
        &self.text[self.at + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for Address {
    type Error = AddressError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Address::parse_full(&value)
    }
}

impl From<Address> for String {
    fn from(a: Address) -> String {
        a.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn localhost() -> Realm {
        Realm::parse("localhost").unwrap()
    }

    #[test]
    fn case_is_folded_so_one_person_has_one_address() {
        let a = Address::parse("Alice", &localhost()).unwrap();
        let b = Address::parse("alice@LocalHost", &localhost()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "alice@localhost");
        assert_eq!(a.local(), "alice");
        assert_eq!(a.realm_str(), "localhost");
    }

    #[test]
    fn forbidden_characters_are_named() {
        let err = Address::parse("al ice", &localhost()).unwrap_err();
        assert_eq!(err, AddressError::ForbiddenChar(' '));
        let err = Address::parse("a<b", &localhost()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the user name contains '<', which is not allowed"
        );
        assert_eq!(
            Address::parse("", &localhost()).unwrap_err(),
            AddressError::EmptyLocal
        );
        assert!(Address::parse("bob@exa mple.org", &localhost()).is_err());
        assert!(Address::parse("bob@-bad.org", &localhost()).is_err());
    }

    #[test]
    fn serde_round_trip_normalizes() {
        let a: Address = serde_json::from_str("\"Bob@Example.ORG\"").unwrap();
        assert_eq!(a.as_str(), "bob@example.org");
        assert!(serde_json::from_str::<Address>("\"nobody\"").is_err());
    }
}
