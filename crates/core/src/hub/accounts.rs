//! Accounts, logins and the account information service (MISSION T6).

use crate::address::{Address, Realm};
use crate::bus::{Delivery, Recipients};
use crate::credentials::{self, check_password, derive_credentials};
use crate::error::{HubError, HubResult};
use crate::model::*;

use super::Hub;

/// Who is making a request: the result of checking a login token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: UserId,
    pub address: Address,
    /// The login's public id.
    pub login: String,
    pub kind: LoginKind,
    pub csrf_hash: Option<Vec<u8>>,
}

impl Principal {
    /// Whether `token` is this browser login's CSRF token.
    pub fn csrf_matches(&self, token: &str) -> bool {
        match &self.csrf_hash {
            Some(hash) => credentials::constant_time_eq(hash, &credentials::token_hash(token)),
            None => false,
        }
    }
}

/// A login just made: the secrets are shown to the client once and never stored.
#[derive(Debug, Clone)]
pub struct NewLogin {
    pub token: String,
    pub csrf: Option<String>,
    pub principal: Principal,
}

/// What a SCRAM exchange is checked against. `address` is `None` for an unknown user, whose
/// verifiers are made up.
#[derive(Debug, Clone)]
pub struct ScramLookup {
    pub address: Option<Address>,
    pub credentials: Credentials,
}

/// The minimum password length for new passwords.
const MIN_PASSWORD_CHARS: usize = 8;
const MAX_PASSWORD_BYTES: usize = 1024;

fn check_new_password(password: &str) -> HubResult<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(HubError::InvalidInput(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(HubError::InvalidInput(format!(
            "the password must have at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

impl Hub {
    /// Creates an account. The password becomes SCRAM verifiers off the async workers.
    pub async fn add_user(&self, address: &Address, password: &str) -> HubResult<Account> {
        if !self.inner.config.serves(address.realm_str()) {
            return Err(HubError::InvalidInput(format!(
                "this server does not serve the realm {:?}",
                address.realm_str()
            )));
        }
        check_new_password(password)?;
        let credentials = self.derive(password).await?;
        let account = self
            .inner
            .store
            .create_account(NewAccount {
                address: address.clone(),
                credentials,
                settings: AccountSettings {
                    visibility: Visibility::Contacts,
                    message_policy: self.inner.config.default_message_policy,
                    display_name: None,
                },
            })
            .await
            .map_err(|e| match e {
                crate::store::StoreError::AlreadyExists(_) => {
                    HubError::Conflict(format!("the user {address} already exists"))
                }
                other => other.into(),
            })?;
        tracing::info!(user = %address, "account created");
        Ok(account)
    }

    /// Creates an account for a visitor, when the realm allows self-registration.
    pub async fn register(&self, address: &Address, password: &str) -> HubResult<Account> {
        if !self.inner.config.open_registration {
            return Err(HubError::Forbidden(
                "self-registration is off on this server; ask an administrator for an account"
                    .into(),
            ));
        }
        self.add_user(address, password).await
    }

    /// Whether the principal may use the administration API.
    pub fn is_admin(&self, principal: &Principal) -> bool {
        self.inner.config.admins.contains(&principal.address)
    }

    async fn derive(&self, password: &str) -> HubResult<Credentials> {
        let cost = self.inner.config.hash_cost;
        let password = password.to_string();
        tokio::task::spawn_blocking(move || derive_credentials(&password, cost))
            .await
            .map_err(|_| HubError::ShuttingDown)
    }

    pub async fn list_users(&self, realm: Option<&Realm>) -> HubResult<Vec<Account>> {
        Ok(self.inner.store.list_accounts(realm).await?)
    }

    pub async fn account(&self, address: &Address) -> HubResult<Option<Account>> {
        Ok(self.inner.store.account_by_address(address).await?)
    }

    async fn require_account(&self, address: &Address) -> HubResult<Account> {
        self.account(address)
            .await?
            .ok_or_else(|| HubError::NotFound(format!("there is no user {address}")))
    }

    /// Removes an account with its history. Its sessions end at once and its logins stop
    /// working.
    pub async fn remove_user(&self, address: &Address) -> HubResult<()> {
        let account = self.require_account(address).await?;
        self.end_sessions(account.id, None);
        self.forget_logins(account.id);
        self.drop_from_contact_lists(&account).await?;
        self.inner.store.delete_account(account.id).await?;
        self.inner
            .conversations
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, c| !c.is_member(account.id));
        tracing::info!(user = %address, "account removed");
        Ok(())
    }

    /// Removes a departing account from the contact lists of the people it knew, with a
    /// contact event to each, so their clients drop it at once (and see it go offline).
    async fn drop_from_contact_lists(&self, account: &Account) -> HubResult<()> {
        let _guard = self.inner.contact_lock.lock().await;
        let store = &self.inner.store;
        let mut changes = Vec::new();
        let mut events = Vec::new();
        let mut dropped = Vec::new();
        for mine in store.contacts_of(account.id).await? {
            let Some(peer) = store.account_by_address(&mine.peer).await? else {
                continue;
            };
            if let Some(theirs) = store.contact(peer.id, &account.address).await? {
                changes.push(Change::DeleteContact {
                    owner: peer.id,
                    peer: account.address.clone(),
                });
                events.push((peer.id, super::contacts::event_for(&theirs, true)));
                dropped.push(theirs);
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        self.inner
            .journal()
            .submit(JournalEntry::Changes { changes, events })
            .await?;
        for contact in &dropped {
            self.contact_changed(contact, true);
        }
        Ok(())
    }

    /// Sets a new password (administrator). Every login of the account is revoked and its
    /// sessions end.
    pub async fn set_password(&self, address: &Address, password: &str) -> HubResult<()> {
        check_new_password(password)?;
        let account = self.require_account(address).await?;
        let credentials = self.derive(password).await?;
        self.inner
            .store
            .set_credentials(account.id, credentials)
            .await?;
        self.inner.store.delete_logins_of(account.id).await?;
        self.forget_logins(account.id);
        self.end_sessions(account.id, None);
        tracing::info!(user = %address, "password changed; logins revoked");
        Ok(())
    }

    /// A user changes their own password; their other logins are revoked, this one stays.
    pub async fn change_password(
        &self,
        principal: &Principal,
        old: &str,
        new: &str,
    ) -> HubResult<()> {
        check_new_password(new)?;
        let account = self.require_account(&principal.address).await?;
        if !self.verify(&account.credentials, old).await? {
            return Err(HubError::BadCredentials);
        }
        let credentials = self.derive(new).await?;
        self.inner
            .store
            .set_credentials(account.id, credentials)
            .await?;
        for login in self.inner.store.logins_of(account.id).await? {
            if login.id != principal.login {
                self.revoke_login(principal, &login.id).await?;
            }
        }
        Ok(())
    }

    async fn verify(&self, credentials: &Credentials, password: &str) -> HubResult<bool> {
        let credentials = credentials.clone();
        let password = password.to_string();
        tokio::task::spawn_blocking(move || check_password(&credentials, &password))
            .await
            .map_err(|_| HubError::ShuttingDown)
    }

    /// Checks a password and makes a login. Attempts are throttled per account and per client
    /// address; a wrong user name and a wrong password read the same.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        kind: LoginKind,
        client: &str,
        user_agent: Option<&str>,
    ) -> HubResult<NewLogin> {
        let address = self
            .parse_address(user)
            .map_err(|_| HubError::BadCredentials)?;
        self.check_login_rate(&address, client)?;
        let account = self.inner.store.account_by_address(&address).await?;
        let ok = match &account {
            Some(account) => self.verify(&account.credentials, password).await?,
            None => {
                // Spend the same work as a real check so timing does not tell who exists.
                let dummy = self.derive("not a password").await?;
                self.verify(&dummy, password).await?;
                false
            }
        };
        let account = match (ok, account) {
            (true, Some(account)) => account,
            _ => {
                self.inner.metrics.logins_failed.inc();
                return Err(HubError::BadCredentials);
            }
        };
        self.record_login(account, kind, user_agent).await
    }

    fn check_login_rate(&self, address: &Address, client: &str) -> HubResult<()> {
        if !self
            .inner
            .login_limiter_account
            .check(&address.as_str().to_string())
            || !self.inner.login_limiter_client.check(&client.to_string())
        {
            return Err(HubError::RateLimited(
                "too many login attempts; wait a minute and try again".into(),
            ));
        }
        Ok(())
    }

    /// The first step of a SASL SCRAM exchange: the verifiers to challenge the client with.
    /// Attempts are throttled like password logins. An unknown user gets made-up verifiers
    /// whose salt is stable per name, so the challenge does not tell who exists; the client's
    /// proof then simply fails.
    pub async fn scram_lookup(&self, user: &str, client: &str) -> HubResult<ScramLookup> {
        let address = self
            .parse_address(user)
            .map_err(|_| HubError::BadCredentials)?;
        self.check_login_rate(&address, client)?;
        if let Some(account) = self.inner.store.account_by_address(&address).await? {
            return Ok(ScramLookup {
                address: Some(account.address),
                credentials: account.credentials,
            });
        }
        let made_up = |tag: &[u8], len: usize| -> ScramVerifier {
            let salt =
                credentials::keyed_digest(&self.inner.secret, &[tag, address.as_str().as_bytes()]);
            ScramVerifier {
                salt: salt[..16].to_vec(),
                iterations: self.inner.config.hash_cost.iterations,
                stored_key: credentials::random_bytes::<32>()[..len].to_vec(),
                server_key: credentials::random_bytes::<32>()[..len].to_vec(),
            }
        };
        Ok(ScramLookup {
            address: None,
            credentials: Credentials {
                scram_sha1: made_up(b"sha1", 20),
                scram_sha256: made_up(b"sha256", 32),
            },
        })
    }

    /// A SASL exchange proved the client is `address`: records an XMPP login for it. The
    /// login ends with the client's session ([`Hub::logout`]).
    pub async fn sasl_login(
        &self,
        address: &Address,
        user_agent: Option<&str>,
    ) -> HubResult<Principal> {
        let account = self
            .inner
            .store
            .account_by_address(address)
            .await?
            .ok_or(HubError::BadCredentials)?;
        Ok(self
            .record_login(account, LoginKind::Xmpp, user_agent)
            .await?
            .principal)
    }

    /// Counts a failed SASL exchange.
    pub fn sasl_failed(&self) {
        self.inner.metrics.logins_failed.inc();
    }

    async fn record_login(
        &self,
        account: Account,
        kind: LoginKind,
        user_agent: Option<&str>,
    ) -> HubResult<NewLogin> {
        let token = credentials::new_token();
        let csrf = (kind == LoginKind::Browser).then(credentials::new_token);
        let now = now_millis();
        let record = LoginRecord {
            id: credentials::new_public_id(),
            user: account.id,
            kind,
            token_hash: credentials::token_hash(&token),
            csrf_hash: csrf.as_deref().map(credentials::token_hash),
            created_at: now,
            last_used: now,
            user_agent: user_agent.map(|s| s.chars().take(200).collect()),
        };
        self.inner.store.create_login(record.clone()).await?;
        let principal = Principal {
            user: account.id,
            address: account.address,
            login: record.id,
            kind,
            csrf_hash: record.csrf_hash,
        };
        Ok(NewLogin {
            token,
            csrf,
            principal,
        })
    }

    /// Checks a login token.
    pub async fn authenticate(&self, token: &str) -> HubResult<Principal> {
        let hash = credentials::token_hash(token);
        if let Some(p) = self
            .inner
            .principals
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
        {
            return Ok(p.clone());
        }
        let login = self
            .inner
            .store
            .login_by_token_hash(&hash)
            .await?
            .ok_or(HubError::Unauthenticated)?;
        let account = self
            .inner
            .store
            .account(login.user)
            .await?
            .ok_or(HubError::Unauthenticated)?;
        self.inner
            .store
            .touch_login(&login.id, now_millis())
            .await?;
        let principal = Principal {
            user: account.id,
            address: account.address,
            login: login.id,
            kind: login.kind,
            csrf_hash: login.csrf_hash,
        };
        let mut cache = self
            .inner
            .principals
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(hash, principal.clone());
        Ok(principal)
    }

    /// Ends this login (sign out) and its sessions.
    pub async fn logout(&self, principal: &Principal) -> HubResult<()> {
        self.revoke_login(principal, &principal.login).await
    }

    pub async fn logins(&self, principal: &Principal) -> HubResult<Vec<LoginRecord>> {
        Ok(self.inner.store.logins_of(principal.user).await?)
    }

    /// Revokes one of the principal's own logins; the sessions made with it end at once.
    pub async fn revoke_login(&self, principal: &Principal, login: &str) -> HubResult<()> {
        let owned = self
            .inner
            .store
            .logins_of(principal.user)
            .await?
            .iter()
            .any(|l| l.id == login);
        if !owned || !self.inner.store.delete_login(login).await? {
            return Err(HubError::NotFound(format!("there is no login {login:?}")));
        }
        self.inner
            .principals
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, p| p.login != login);
        self.end_sessions(principal.user, Some(login.to_string()));
        Ok(())
    }

    fn forget_logins(&self, user: UserId) {
        self.inner
            .principals
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, p| p.user != user);
    }

    /// Ends sessions of a person everywhere (all of them, or those of one login).
    pub(crate) fn end_sessions(&self, user: UserId, login: Option<String>) {
        self.inner.bus.send(Delivery::EndSessions {
            to: Recipients::Users(vec![user]),
            login,
        });
    }

    /// The account's own settings.
    pub async fn settings(&self, principal: &Principal) -> HubResult<AccountSettings> {
        Ok(self.require_account(&principal.address).await?.settings)
    }

    /// Changes presence visibility, the stranger policy or the display name.
    pub async fn update_settings(
        &self,
        principal: &Principal,
        settings: AccountSettings,
    ) -> HubResult<AccountSettings> {
        if let Some(name) = &settings.display_name
            && name.chars().count() > 100
        {
            return Err(HubError::InvalidInput(
                "the display name must have at most 100 characters".into(),
            ));
        }
        let event = AccountEvent::Settings {
            visibility: settings.visibility,
            message_policy: settings.message_policy,
            display_name: settings.display_name.clone(),
        };
        self.inner
            .journal()
            .submit(JournalEntry::Changes {
                changes: vec![Change::PutSettings {
                    user: principal.user,
                    settings: settings.clone(),
                }],
                events: vec![(principal.user, event)],
            })
            .await?;
        self.settings_changed(principal.user, settings.clone());
        Ok(settings)
    }
}
