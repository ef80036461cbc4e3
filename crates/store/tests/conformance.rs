//! One conformance suite for every backend: each case is written once against
//! `Arc<dyn Store>` and run on SQLite (a temporary file) and on PostgreSQL (a fresh schema).
//!
//! PostgreSQL is found through `SWITCHBOARD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it cannot be reached the PostgreSQL cases
//! fail with a message saying so: a backend that was not tested must not look as if it passed.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use switchboard_core::address::{Address, Realm};
use switchboard_core::model::*;
use switchboard_core::store::{Store, StoreError};
use switchboard_store::{PostgresStore, SqliteOptions, SqliteStore};

// --- harness ---

/// Where a backend keeps its data between opens, so that a case can close the store and open
/// the same data again.
enum Harness {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        url: String,
        schema: String,
    },
}

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

impl Harness {
    fn sqlite() -> Harness {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("store.sqlite");
        Harness::Sqlite { _dir: dir, path }
    }

    fn postgres() -> Harness {
        let url = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_string());
        let schema = format!("sbtest_{}", uuid::Uuid::new_v4().simple());
        Harness::Postgres { url, schema }
    }

    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Harness::Sqlite { path, .. } => {
                let path = path.clone();
                let store = tokio::task::spawn_blocking(move || {
                    SqliteStore::open(
                        &path,
                        SqliteOptions {
                            synchronous_full: false,
                            readers: 2,
                        },
                    )
                })
                .await
                .expect("the open task")
                .expect("opening the SQLite store");
                Arc::new(store)
            }
            Harness::Postgres { url, schema } => {
                match PostgresStore::connect_with_schema(url, schema, 2).await {
                    Ok(store) => Arc::new(store),
                    Err(e) => panic!(
                        "PostgreSQL is not reachable at {url} ({e}). These tests need it: start \
                         PostgreSQL or point SWITCHBOARD_TEST_POSTGRES_URL at one."
                    ),
                }
            }
        }
    }

    /// Removes what the case left behind (the temporary directory goes by itself).
    async fn finish(self) {
        if let Harness::Postgres { url, schema } = self {
            let Ok((client, connection)) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await
            else {
                return;
            };
            tokio::spawn(connection);
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await;
        }
    }
}

/// Runs a case on its own task, so that a failing case (a panic) still lets the harness clean
/// up before the failure is passed on.
async fn run_case<F>(harness: Harness, case: impl FnOnce(Arc<Harness>) -> F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let harness = Arc::new(harness);
    let outcome = tokio::spawn(case(harness.clone())).await;
    if let Ok(harness) = Arc::try_unwrap(harness) {
        harness.finish().await;
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Generates one test per case and backend. Cases under `store:` take the store; cases under
/// `harness:` take the harness (to close and reopen the store).
macro_rules! conformance {
    (store: [$($case:ident),* $(,)?], harness: [$($hcase:ident),* $(,)?] $(,)?) => {
        conformance!(@backend sqlite, Harness::sqlite(), [$($case),*], [$($hcase),*]);
        conformance!(@backend postgres, Harness::postgres(), [$($case),*], [$($hcase),*]);
    };
    (@backend $backend:ident, $harness:expr, [$($case:ident),*], [$($hcase:ident),*]) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    run_case($harness, |h| async move {
                        let store = h.open().await;
                        super::$case(store).await;
                    })
                    .await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $hcase() {
                    run_case($harness, |h| async move { super::$hcase(&h).await }).await;
                }
            )*
        }
    };
}

conformance!(
    store: [
        case_accounts,
        case_delete_account_cascades,
        case_logins,
        case_contacts_and_blocks,
        case_conversations,
        case_append_assigns_numbers_and_dedups,
        case_failed_entries_fail_alone,
        case_history_pages,
        case_replay,
        case_replay_every_starting_point,
        case_undelivered,
        case_cursors_only_move_forward,
        case_sessions,
        case_concurrent_appends,
        case_personal_items,
    ],
    harness: [case_reopen_keeps_everything],
);

// --- helpers ---

fn addr(text: &str) -> Address {
    Address::parse_full(text).expect("a valid test address")
}

fn verifier(seed: u8) -> ScramVerifier {
    ScramVerifier {
        salt: vec![seed; 16],
        iterations: 4096,
        stored_key: vec![seed.wrapping_add(1); 32],
        server_key: vec![seed.wrapping_add(2); 32],
    }
}

fn credentials(seed: u8) -> Credentials {
    Credentials {
        scram_sha1: ScramVerifier {
            stored_key: vec![seed; 20],
            server_key: vec![seed; 20],
            ..verifier(seed)
        },
        scram_sha256: verifier(seed),
    }
}

fn settings() -> AccountSettings {
    AccountSettings {
        visibility: Visibility::Contacts,
        message_policy: MessagePolicy::Contacts,
        display_name: None,
    }
}

async fn user(store: &Arc<dyn Store>, address: &str) -> Account {
    store
        .create_account(NewAccount {
            address: addr(address),
            credentials: credentials(7),
            settings: settings(),
        })
        .await
        .expect("creating an account")
}

fn new_message(conversation: ConversationId, sender: &Account, client_id: &str) -> NewMessage {
    NewMessage {
        id: MessageId::random(),
        conversation,
        sender: sender.id,
        sender_address: sender.address.clone(),
        client_id: client_id.to_string(),
        body: format!("body of {client_id}"),
        sent_at: 1_700_000_000_000,
        to_endpoint: None,
        from_endpoint: None,
        private: false,
    }
}

async fn append_one(store: &Arc<dyn Store>, entry: JournalEntry) -> JournalOutcome {
    let mut results = store.append(vec![entry]).await.expect("the append");
    assert_eq!(results.len(), 1);
    results.pop().unwrap().expect("the entry")
}

async fn send(
    store: &Arc<dyn Store>,
    conversation: ConversationId,
    sender: &Account,
    client_id: &str,
) -> StoredMessage {
    match append_one(
        store,
        JournalEntry::Message(new_message(conversation, sender, client_id)),
    )
    .await
    {
        JournalOutcome::Message(appended) => {
            assert!(!appended.duplicate, "{client_id} was not sent before");
            appended.message
        }
        other => panic!("a message append returned {other:?}"),
    }
}

async fn changes(
    store: &Arc<dyn Store>,
    changes: Vec<Change>,
    events: Vec<(UserId, AccountEvent)>,
) -> Vec<StoredAccountEvent> {
    match append_one(store, JournalEntry::Changes { changes, events }).await {
        JournalOutcome::Changes(events) => events,
        other => panic!("a change append returned {other:?}"),
    }
}

fn conversation_record(
    kind: ConversationKind,
    creator: &Account,
    title: Option<&str>,
) -> Conversation {
    Conversation {
        id: ConversationId::random(),
        kind,
        title: title.map(str::to_string),
        confidential: false,
        created_by: creator.address.clone(),
        created_at: 1_700_000_000_000,
    }
}

async fn group(store: &Arc<dyn Store>, creator: &Account, members: &[&Account]) -> ConversationId {
    let conversation = conversation_record(ConversationKind::Group, creator, Some("a group"));
    let id = conversation.id;
    changes(
        store,
        vec![Change::CreateConversation {
            conversation,
            members: members.iter().map(|a| (a.id, a.address.clone())).collect(),
        }],
        vec![],
    )
    .await;
    id
}

async fn direct(store: &Arc<dyn Store>, a: &Account, b: &Account) -> ConversationId {
    let mut conversation = conversation_record(ConversationKind::Direct, a, None);
    conversation.id = ConversationId::direct(&a.address, &b.address);
    let id = conversation.id;
    changes(
        store,
        vec![Change::CreateConversation {
            conversation,
            members: vec![(a.id, a.address.clone()), (b.id, b.address.clone())],
        }],
        vec![],
    )
    .await;
    id
}

fn joined(conversation: ConversationId) -> AccountEvent {
    AccountEvent::Joined { conversation }
}

fn seqs(messages: &[StoredMessage]) -> Vec<i64> {
    messages.iter().map(|m| m.seq.0).collect()
}

fn session_record(id: &str, user: &Account, last_seen: Millis) -> SessionRecord {
    SessionRecord {
        id: SessionId(id.to_string()),
        user: user.id,
        login: format!("login-of-{id}"),
        node: "node-1".to_string(),
        created_at: 1_000,
        last_seen,
        presence: Presence::available(),
        acked: Pos(0),
    }
}

fn login_record(id: &str, user: &Account, token: &[u8]) -> LoginRecord {
    LoginRecord {
        id: id.to_string(),
        user: user.id,
        kind: LoginKind::Browser,
        token_hash: token.to_vec(),
        csrf_hash: Some(vec![9; 32]),
        created_at: 1_000,
        last_used: 1_000,
        user_agent: Some("test agent".to_string()),
    }
}

// --- cases ---

async fn case_accounts(store: Arc<dyn Store>) {
    assert!(!store.backend().is_empty());
    let alice = user(&store, "Alice@Example.org").await;
    let bob = user(&store, "bob@example.org").await;
    let carol = user(&store, "carol@other.net").await;
    assert_eq!(alice.address.as_str(), "alice@example.org");
    assert_eq!(alice.credentials, credentials(7));
    assert_eq!(
        BTreeSet::from([alice.id, bob.id, carol.id]).len(),
        3,
        "account numbers are distinct"
    );

    let duplicate = store
        .create_account(NewAccount {
            address: addr("alice@example.org"),
            credentials: credentials(1),
            settings: settings(),
        })
        .await;
    assert!(
        matches!(duplicate, Err(StoreError::AlreadyExists(_))),
        "a second alice is refused: {duplicate:?}"
    );

    assert_eq!(store.account(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(
        store
            .account_by_address(&addr("bob@example.org"))
            .await
            .unwrap(),
        Some(bob.clone())
    );
    assert_eq!(
        store
            .account_by_address(&addr("nobody@example.org"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.account(UserId(987_654)).await.unwrap(), None);

    let everyone: Vec<String> = store
        .list_accounts(None)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.address.to_string())
        .collect();
    assert_eq!(
        everyone,
        ["alice@example.org", "bob@example.org", "carol@other.net"]
    );
    let realm = Realm::parse("example.org").unwrap();
    let in_realm: Vec<UserId> = store
        .list_accounts(Some(&realm))
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(in_realm, [alice.id, bob.id]);
    let empty = Realm::parse("empty.example").unwrap();
    assert!(store.list_accounts(Some(&empty)).await.unwrap().is_empty());

    store
        .set_credentials(alice.id, credentials(42))
        .await
        .unwrap();
    let updated = store.account(alice.id).await.unwrap().unwrap();
    assert_eq!(updated.credentials, credentials(42));
    assert_eq!(updated.settings, alice.settings);
    assert!(matches!(
        store.set_credentials(UserId(987_654), credentials(1)).await,
        Err(StoreError::NotFound(_))
    ));

    let new_settings = AccountSettings {
        visibility: Visibility::Chosen,
        message_policy: MessagePolicy::Anyone,
        display_name: Some("Alice A.".to_string()),
    };
    changes(
        &store,
        vec![Change::PutSettings {
            user: alice.id,
            settings: new_settings.clone(),
        }],
        vec![],
    )
    .await;
    assert_eq!(
        store.account(alice.id).await.unwrap().unwrap().settings,
        new_settings
    );
}

async fn case_delete_account_cascades(store: Arc<dyn Store>) {
    let alice = user(&store, "alice@example.org").await;
    let bob = user(&store, "bob@example.org").await;
    let carol = user(&store, "carol@example.org").await;

    changes(
        &store,
        vec![
            Change::PutContact(Contact::new(alice.id, bob.address.clone())),
            Change::PutContact(Contact::new(bob.id, alice.address.clone())),
            Change::PutContact(Contact::new(bob.id, carol.address.clone())),
            Change::PutContact(Contact::new(carol.id, alice.address.clone())),
            Change::Block {
                owner: alice.id,
                peer: addr("spam@elsewhere.example"),
            },
        ],
        vec![(alice.id, joined(ConversationId::random()))],
    )
    .await;
    store
        .create_login(login_record("alice-login", &alice, b"alice-token"))
        .await
        .unwrap();
    store
        .put_session(session_record("alice-session", &alice, 5))
        .await
        .unwrap();
    store
        .put_session(session_record("bob-session", &bob, 5))
        .await
        .unwrap();

    let dm = direct(&store, &alice, &bob).await;
    send(&store, dm, &alice, "dm-1").await;
    send(&store, dm, &bob, "dm-2").await;
    let room = group(&store, &carol, &[&alice, &bob, &carol]).await;
    send(&store, room, &bob, "g-1").await;
    send(&store, room, &alice, "g-2").await;
    send(&store, room, &carol, "g-3").await;
    let last_alice = send(&store, room, &alice, "g-4").await;
    let pos_before = store.last_pos().await.unwrap();
    assert_eq!(pos_before, last_alice.pos);

    assert!(store.delete_account(alice.id).await.unwrap());
    assert!(
        !store.delete_account(alice.id).await.unwrap(),
        "already gone"
    );

    assert_eq!(store.account(alice.id).await.unwrap(), None);
    assert_eq!(
        store.account_by_address(&alice.address).await.unwrap(),
        None
    );
    assert!(store.logins_of(alice.id).await.unwrap().is_empty());
    assert_eq!(
        store.login_by_token_hash(b"alice-token").await.unwrap(),
        None
    );
    assert!(store.sessions_of(alice.id).await.unwrap().is_empty());
    assert_eq!(
        store
            .session(&SessionId("alice-session".into()))
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .session(&SessionId("bob-session".into()))
            .await
            .unwrap()
            .is_some()
    );
    assert!(store.contacts_of(alice.id).await.unwrap().is_empty());
    assert!(store.blocks_of(alice.id).await.unwrap().is_empty());
    let bobs: Vec<Address> = store
        .contacts_of(bob.id)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.peer)
        .collect();
    assert_eq!(
        bobs,
        vec![carol.address.clone()],
        "bob's entry for alice is gone"
    );
    assert!(store.contacts_of(carol.id).await.unwrap().is_empty());
    assert!(
        store
            .replay(alice.id, Pos(0), 100)
            .await
            .unwrap()
            .is_empty()
    );

    // The direct conversation went with both sides' messages.
    assert_eq!(store.conversation(dm).await.unwrap(), None);
    assert!(store.history(dm, None, 100).await.unwrap().is_empty());
    assert!(store.members(dm).await.unwrap().is_empty());

    // The group stays, without alice and without what she wrote.
    let members: Vec<UserId> = store
        .members(room)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.user)
        .collect();
    assert_eq!(members, [bob.id, carol.id]);
    let left: Vec<String> = store
        .history(room, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.client_id)
        .collect();
    assert_eq!(left, ["g-1", "g-3"]);
    assert!(!store.has_written(alice.id, room).await.unwrap());

    // Numbers are never reused: the group's next message follows the deleted one, and the
    // journal keeps growing past the deleted positions.
    let entry = store
        .conversations_of(bob.id)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.conversation.id == room)
        .unwrap();
    assert_eq!(entry.last_seq, Seq(4));
    assert!(store.last_pos().await.unwrap() >= pos_before);
    let next = send(&store, room, &bob, "g-5").await;
    assert_eq!(next.seq, Seq(5));
    assert!(next.pos > pos_before);

    // The address can be registered again, as a new person.
    let again = user(&store, "alice@example.org").await;
    assert_ne!(again.id, alice.id);
    assert!(store.conversations_of(again.id).await.unwrap().is_empty());
}

async fn case_logins(store: Arc<dyn Store>) {
    let alice = user(&store, "alice@example.org").await;
    let bob = user(&store, "bob@example.org").await;
    let first = login_record("login-1", &alice, b"token-1");
    let mut second = login_record("login-2", &alice, b"token-2");
    second.kind = LoginKind::Bearer;
    second.csrf_hash = None;
    second.user_agent = None;
    second.created_at = 2_000;
    store.create_login(first.clone()).await.unwrap();
    store.create_login(second.clone()).await.unwrap();
    store
        .create_login(login_record("login-3", &bob, b"token-3"))
        .await
        .unwrap();

    assert!(matches!(
        store
            .create_login(login_record("login-1", &alice, b"other"))
            .await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        store
            .create_login(login_record("login-9", &alice, b"token-2"))
            .await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        store
            .create_login(LoginRecord {
                user: UserId(987_654),
                ..login_record("login-x", &alice, b"token-x")
            })
            .await,
        Err(StoreError::NotFound(_))
    ));

    assert_eq!(
        store.login_by_token_hash(b"token-1").await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store.login_by_token_hash(b"token-2").await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(store.login_by_token_hash(b"nope").await.unwrap(), None);

    store.touch_login("login-1", 5_000).await.unwrap();
    let touched = store
        .login_by_token_hash(b"token-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(touched.last_used, 5_000);
    assert_eq!(touched.created_at, 1_000);
    // Touching a login that does not exist (revoked meanwhile) is not an error.
    store.touch_login("no-such-login", 5_000).await.unwrap();

    let ids: Vec<String> = store
        .logins_of(alice.id)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(ids, ["login-1", "login-2"]);

    assert!(store.delete_login("login-1").await.unwrap());
    assert!(!store.delete_login("login-1").await.unwrap());
    assert_eq!(store.login_by_token_hash(b"token-1").await.unwrap(), None);

    store.delete_logins_of(alice.id).await.unwrap();
    assert!(store.logins_of(alice.id).await.unwrap().is_empty());
    assert_eq!(
        store.logins_of(bob.id).await.unwrap().len(),
        1,
        "bob's login stays"
    );
}

async fn case_contacts_and_blocks(store: Arc<dyn Store>) {
    let alice = user(&store, "alice@example.org").await;
    let remote = addr("dave@remote.example");
    let bob = addr("bob@example.org");

    let mut contact = Contact::new(alice.id, remote.clone());
    contact.to = SubState::Pending;
    let event = AccountEvent::Contact {
        peer: remote.clone(),
        to: SubState::Pending,
        from: SubState::None,
        name: None,
        chosen: false,
        removed: false,
    };
    let stored = changes(
        &store,
        vec![
            Change::PutContact(contact.clone()),
            Change::PutContact(Contact::new(alice.id, bob.clone())),
        ],
        vec![(alice.id, event.clone())],
    )
    .await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].user, alice.id);
    assert_eq!(stored[0].event, event);
    assert_eq!(stored[0].pos, store.last_pos().await.unwrap());

    assert_eq!(
        store.contact(alice.id, &remote).await.unwrap(),
        Some(contact.clone())
    );
    assert_eq!(
        store.contact(alice.id, &addr("x@y.example")).await.unwrap(),
        None
    );

    // An upsert replaces the entry.
    let accepted = Contact {
        to: SubState::Accepted,
        from: SubState::Accepted,
        name: Some("Dave".to_string()),
        chosen: true,
        ..contact.clone()
    };
    changes(&store, vec![Change::PutContact(accepted.clone())], vec![]).await;
    assert_eq!(
        store.contact(alice.id, &remote).await.unwrap(),
        Some(accepted.clone())
    );
    let all = store.contacts_of(alice.id).await.unwrap();
    assert_eq!(all, vec![Contact::new(alice.id, bob.clone()), accepted]);

    changes(
        &store,
        vec![Change::DeleteContact {
            owner: alice.id,
            peer: bob.clone(),
        }],
        vec![],
    )
    .await;
    assert_eq!(store.contact(alice.id, &bob).await.unwrap(), None);
    assert_eq!(store.contacts_of(alice.id).await.unwrap().len(), 1);

    assert!(!store.is_blocked(alice.id, &bob).await.unwrap());
    let block = |peer: &Address| Change::Block {
        owner: alice.id,
        peer: peer.clone(),
    };
    changes(
        &store,
        vec![block(&bob), block(&remote), block(&bob)],
        vec![],
    )
    .await;
    assert!(store.is_blocked(alice.id, &bob).await.unwrap());
    assert!(store.is_blocked(alice.id, &remote).await.unwrap());
    assert_eq!(
        store.blocks_of(alice.id).await.unwrap(),
        vec![bob.clone(), remote.clone()]
    );
    changes(
        &store,
        vec![Change::Unblock {
            owner: alice.id,
            peer: bob.clone(),
        }],
        vec![],
    )
    .await;
    assert!(!store.is_blocked(alice.id, &bob).await.unwrap());
    assert_eq!(store.blocks_of(alice.id).await.unwrap(), vec![remote]);
}

async fn case_conversations(store: Arc<dyn Store>) {
    let alice = user(&store, "alice@example.org").await;
    let bob = user(&store, "bob@example.org").await;
    let carol = user(&store, "carol@example.org").await;
    let dave = user(&store, "dave@example.org").await;

    let record = conversation_record(ConversationKind::Group, &alice, Some("plans"));
    let room = record.id;
    let events = changes(
        &store,
        vec![Change::CreateConversation {
            conversation: record.clone(),
            members: vec![
                (alice.id, alice.address.clone()),
                (bob.id, bob.address.clone()),
            ],
        }],
        vec![(alice.id, joined(room)), (bob.id, joined(room))],
    )
    .await;
    assert_eq!(events.len(), 2);
    assert!(events[0].pos < events[1].pos);
    assert_eq!(
        store.conversation(room).await.unwrap(),
        Some(record.clone())
    );

    // Creating it again is a no-op that adds the members that are missing.
    let mut again = record.clone();
    again.title = Some("another title".to_string());
    changes(
        &store,
        vec![Change::CreateConversation {
            conversation: again,
            members: vec![
                (alice.id, alice.address.clone()),
                (bob.id, bob.address.clone()),
                (carol.id, carol.address.clone()),
            ],
        }],
        vec![],
    )
    .await;
    assert_eq!(
        store.conversation(room).await.unwrap(),
        Some(record.clone())
    );
    let members = store.members(room).await.unwrap();
    assert_eq!(
        members.iter().map(|m| m.user).collect::<Vec<_>>(),
        [alice.id, bob.id, carol.id]
    );
    assert!(
        members
            .iter()
            .all(|m| m.delivered == Seq(0) && m.read == Seq(0))
    );
    assert_eq!(members[1].address, bob.address);

    assert!(!store.has_written(alice.id, room).await.unwrap());
    send(&store, room, &alice, "m1").await;
    send(&store, room, &bob, "m2").await;
    assert!(store.has_written(alice.id, room).await.unwrap());
    assert!(!store.has_written(carol.id, room).await.unwrap());

    let dm = direct(&store, &alice, &dave).await;
    let list = store.conversations_of(alice.id).await.unwrap();
    assert_eq!(list.len(), 2);
    let entry = list.iter().find(|e| e.conversation.id == room).unwrap();
    assert_eq!(entry.conversation, record);
    assert_eq!(entry.last_seq, Seq(2));
    assert_eq!(entry.me.user, alice.id);
    assert_eq!(entry.me.address, alice.address);
    let dm_entry = list.iter().find(|e| e.conversation.id == dm).unwrap();
    assert_eq!(dm_entry.conversation.kind, ConversationKind::Direct);
    assert_eq!(dm_entry.last_seq, Seq(0));
    assert!(
        store
            .conversations_of(UserId(987_654))
            .await
            .unwrap()
            .is_empty()
    );

    assert!(store.share_group(alice.id, carol.id).await.unwrap());
    assert!(store.share_group(carol.id, bob.id).await.unwrap());
    assert!(
        !store.share_group(alice.id, dave.id).await.unwrap(),
        "a direct conversation is not a group"
    );

    // A member added later starts at the conversation's end: what came before is not
    // undelivered to them.
    changes(
        &store,
        vec![Change::AddMember {
            conversation: room,
            user: dave.id,
            address: dave.address.clone(),
        }],
        vec![(dave.id, joined(room))],
    )
    .await;
    let dave_member = store
        .members(room)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.user == dave.id)
        .unwrap();
    assert_eq!((dave_member.delivered, dave_member.read), (Seq(2), Seq(2)));
    assert!(store.undelivered(dave.id, 10).await.unwrap().is_empty());
    assert!(store.share_group(alice.id, dave.id).await.unwrap());

    changes(
        &store,
        vec![Change::RemoveMember {
            conversation: room,
            user: carol.id,
        }],
        vec![],
    )
    .await;
    assert!(!store.share_group(alice.id, carol.id).await.unwrap());
    assert!(store.conversations_of(carol.id).await.unwrap().is_empty());

    let missing = ConversationId::random();
    let results = store
        .append(vec![JournalEntry::Changes {
            changes: vec![Change::AddMember {
                conversation: missing,
                user: alice.id,
                address: alice.address.clone(),
            }],
            events: vec![],
        }])
        .await
        .unwrap();
    assert!(matches!(results[0], Err(StoreError::NotFound(_))));
    assert_eq!(store.conversation(missing).await.unwrap(), None);
}

async fn case_append_assigns_numbers_and_dedups(store: Arc<dyn Store>) {
    let alice = user(&store, "alice@example.org").await;
    let bob = user(&store, "bob@example.org").await;
    assert_eq!(store.last_pos().await.unwrap(), Pos(0), "an empty journal");
    let room = group(&store, &alice, &[&alice, &bob]).await;
    let other = group(&store, &bob, &[&alice, &bob]).await;

    let results = store
        .append(vec![
            JournalEntry::Message(new_message(room, &alice, "a1")),
            JournalEntry::Message(new_message(room, &bob, "b1")),
            JournalEntry::Message(new_message(other, &bob, "b2")),
            JournalEntry::Message(new_message(room, &alice, "a2")),
            // The same client id again in the same batch: stored once.
            JournalEntry::Message(new_message(room, &alice, "a1")),
        ])
        .await
        .unwrap();
    let appended: Vec<Appended> = results
        .into_iter()
        .map(|r| match r.unwrap() {
            JournalOutcome::Message(a) => a,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        appended.iter().map(|a| a.message.seq.0).collect::<Vec<_>>(),
        [1, 2, 1, 3, 1]
    );
    assert_eq!(
        appended.iter().map(|a| a.duplicate).collect::<Vec<_>>(),
        [false, false, false, false, true]
    );
    assert_eq!(
        appended[4].message, appended[0].message,
        "the earlier message is returned"
    );
    for pair in appended[..4].windows(2) {
        assert!(pair[0].message.pos < pair[1].message.pos, "positions grow");
    }
    assert_eq!(store.last_pos().await.unwrap(), appended[3].message.pos);
    assert_eq!(appended[0].message.sender, alice.address);
    assert_eq!(appended[0].message.body, "body of a1");
    assert_eq!(appended[0].message.conversation, room);

    // A resend in a later batch is recognised too, and writes nothing.
    let last = store.last_pos().await.unwrap();
    let resent =
        match append_one(&store, JournalEntry::Message(new_message(room, &bob, "b1"))).await {
            JournalOutcome::Message(a) => a,
            other => panic!("{other:?}"),
        };
    assert!(resent.duplicate);
    assert_eq!(resent.message, appended[1].message);
    assert_eq!(store.last_pos().await.unwrap(), last);

    let history = store.history(room, None, 100).await.unwrap();
    assert_eq!(seqs(&history), [1, 2, 3]);
    assert_eq!(history[0], appended[0].message);

    // The next message continues the numbering.
    let next = send(&store, room, &bob, "b3").await;
    assert_eq!(next.seq, Seq(4));
    assert!(next.pos > last);
}

async fn case_failed_entries_fail_alone(store: Arc<dyn Store>) {
    let alice = user(&store, "alice@example.org").await;
    let bob = user(&store, "bob@example.org").await;
    let room = group(&store, &alice, &[&alice, &bob]).await;
    let missing = ConversationId::random();
    let dave = addr("dave@remote.example");

    let results = store
        .append(vec![
            JournalEntry::Message(new_message(room, &alice, "ok-1")),
            JournalEntry::Message(new_message(missing, &alice, "lost")),
            // A change entry that fails half-way leaves nothing behind: the contact it put
            // before failing is rolled back with it.
            JournalEntry::Changes {
                changes: vec![
                    Change::PutContact(Contact::new(alice.id, dave.clone())),
                    Change::PutSettings {
                        user: UserId(987_654),
                        settings: settings(),
                    },
                ],
                events: vec![(alice.id, joined(room))],
            },
            JournalEntry::Message(new_message(room, &bob, "ok-2")),
            JournalEntry::Changes {
                changes: vec![Change::Block {
                    owner: bob.id,
                    peer: dave.clone(),
                }],
                events: vec![(bob.id, joined(room))],
            },
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 5);
    assert!(
        matches!(results[1], Err(StoreError::NotFound(_))),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(results[2], Err(StoreError::NotFound(_))),
        "{:?}",
        results[2]
    );
    let first = match &results[0] {
        Ok(JournalOutcome::Message(a)) => a.message.clone(),
        other => panic!("{other:?}"),
    };
    let second = match &results[3] {
        Ok(JournalOutcome::Message(a)) => a.message.clone(),
        other => panic!("{other:?}"),
    };
    let event = match &results[4] {
        Ok(JournalOutcome::Changes(events)) => events[0].clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (first.seq, second.seq),
        (Seq(1), Seq(2)),
        "no number is lost to the failure"
    );
    assert!(first.pos < second.pos && second.pos < event.pos);

    assert_eq!(seqs(&store.history(room, None, 10).await.unwrap()), [1, 2]);
    assert_eq!(store.contact(alice.id, &dave).await.unwrap(), None);
    assert!(store.is_blocked(bob.id, &dave).await.unwrap());
    assert_eq!(store.conversation(missing).await.unwrap(), None);
    let alice_events: Vec<Replayed> = store
        .replay(alice.id, Pos(0), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| matches!(r, Replayed::Account(_)))
        .collect();
    assert!(
        alice_events.is_empty(),
        "the failed entry's event was not written"
    );
    assert_eq!(store.last_pos().await.unwrap(), event.pos);

    // A message from an account that does not exist fails alone as well.
    let mut ghost = new_message(room, &alice, "ghost");
    ghost.sender = UserId(987_654);
    let results = store
        .append(vec![
            JournalEntry::Message(ghost),
            JournalEntry::Message(new_message(room, &bob, "ok-3")),
        ])
        .await
        .unwrap();
    assert!(results[0].is_err(), "{:?}", results[0]);
    match &results[1] {
        Ok(JournalOutcome::Message(a)) => assert_eq!(a.message.seq, Seq(3)),
        other => panic!("{other:?}"),
    }
}

async fn case_history_pages(store: Arc<dyn Store>) {
    let alice = user(&store, "alice@example.org").await;
    let room = group(&store, &alice, &[&alice]).await;
    let other = group(&store, &alice, &[&alice]).await;
    for i in 1..=10 {
        send(&store, room, &alice, &format!("m{i}")).await;
        send(&store, other, &alice, &format!("o{i}")).await;
    }
    let newest = store.history(room, None, 3).await.unwrap();
    assert_eq!(seqs(&newest), [8, 9, 10], "the newest, oldest first");
    assert!(newest.iter().all(|m| m.conversation == room));
    assert_eq!(
        seqs(&store.history(room, Some(Seq(8)), 3).await.unwrap()),
        [5, 6, 7]
    );
    assert_eq!(
        seqs(&store.history(room, Some(Seq(3)), 5).await.unwrap()),
        [1, 2]
    );
    assert!(
        store
            .history(room, Some(Seq(1)), 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.history(room, None, 0).await.unwrap().is_empty());
    assert_eq!(store.history(room, None, 100).await.unwrap().len(), 10);
    assert!(
        store
            .history(ConversationId::random(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn case_replay(store: Arc<dyn Store>) {
    let alice = user(&store, "alice@example.org").await;
    let bob = user(&store, "bob@example.org").await;
    let carol = user(&store, "carol@example.org").await;
    let ours = direct(&store, &alice, &bob).await;
    let theirs = direct(&store, &bob, &carol).await;
    let start = store.last_pos().await.unwrap();

    let m1 = send(&store, ours, &bob, "1").await;
    send(&store, theirs, &bob, "2").await;
    let e1 = changes(&store, vec![], vec![(alice.id, joined(ours))]).await;
    changes(&store, vec![], vec![(bob.id, joined(theirs))]).await;
    let m2 = send(&store, ours, &alice, "3").await;
    send(&store, theirs, &carol, "4").await;
    let e2 = changes(&store, vec![], vec![(alice.id, joined(theirs))]).await;

    let expected = vec![
        Replayed::Message(m1.clone()),
        Replayed::Account(e1[0].clone()),
        Replayed::Message(m2.clone()),
        Replayed::Account(e2[0].clone()),
    ];
    assert_eq!(store.replay(alice.id, start, 100).await.unwrap(), expected);
    assert_eq!(store.replay(alice.id, Pos(0), 100).await.unwrap(), expected);
    assert_eq!(
        store.replay(alice.id, m1.pos, 100).await.unwrap(),
        expected[1..]
    );
    assert_eq!(
        store.replay(alice.id, e1[0].pos, 100).await.unwrap(),
        expected[2..]
    );
    assert_eq!(
        store.replay(alice.id, start, 2).await.unwrap(),
        expected[..2]
    );
    assert!(
        store
            .replay(alice.id, e2[0].pos, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.replay(alice.id, start, 0).await.unwrap().is_empty());

    // Bob sees both conversations and only his own events.
    let bobs = store.replay(bob.id, start, 100).await.unwrap();
    assert_eq!(bobs.len(), 5);
    assert!(bobs.windows(2).all(|w| w[0].pos() < w[1].pos()));
    assert!(bobs.iter().all(|r| match r {
        Replayed::Account(e) => e.user == bob.id,
        Replayed::Message(_) => true,
    }));
}

/// Replays from every position against a model, so that every way the positions of several
/// conversations can interleave is covered, including the paging a resuming session does.
async fn case_replay_every_starting_point(store: Arc<dyn Store>) {
    let alice = user(&store, "alice@example.org").await;
    let bob = user(&store, "bob@example.org").await;
    let carol = user(&store, "carol@example.org").await;
    let a = group(&store, &alice, &[&alice, &bob]).await;
    let b = group(&store, &alice, &[&alice, &carol]).await;
    let hidden = group(&store, &bob, &[&bob, &carol]).await;
    let start = store.last_pos().await.unwrap();

    let mut model: Vec<Replayed> = Vec::new();
    for i in 0..60 {
        let pattern = (i * 7) % 5;
        match pattern {
            0 | 1 => model.push(Replayed::Message(
                send(&store, a, &bob, &format!("a{i}")).await,
            )),
            2 => model.push(Replayed::Message(
                send(&store, b, &alice, &format!("b{i}")).await,
            )),
            3 => {
                send(&store, hidden, &carol, &format!("h{i}")).await;
            }
            _ => {
                let e = changes(&store, vec![], vec![(alice.id, joined(a))]).await;
                model.push(Replayed::Account(e[0].clone()));
            }
        }
    }
    // Sends past the last one of a conversation, so that its messages end before others'.
    for i in 0..5 {
        model.push(Replayed::Message(
            send(&store, b, &carol, &format!("tail{i}")).await,
        ));
    }
    let end = store.last_pos().await.unwrap();
    for after in start.0..=end.0 {
        let expected: Vec<Replayed> = model
            .iter()
            .filter(|r| r.pos().0 > after)
            .cloned()
            .collect();
        let got = store.replay(alice.id, Pos(after), 1000).await.unwrap();
        assert_eq!(got, expected, "replay after {after}");
        let page = store.replay(alice.id, Pos(after), 3).await.unwrap();
        assert_eq!(
            page,
            expected[..expected.len().min(3)],
            "a page of 3 after {after}"
        );
    }
    // Paging through everything yields everything exactly once.
    let mut cursor = start;
    let mut paged = Vec::new();
    loop {
        let page = store.replay(alice.id, cursor, 4).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = last.pos();
        paged.extend(page);
    }
    assert_eq!(paged, model);
}

async fn case_undelivered(store: Arc<dyn Store>) {
    let alice = user(&store, "alice@example.org").await;
    let bob = user(&store, "bob@example.org").await;
    let carol = user(&store, "carol@example.org").await;
    let dm = direct(&store, &alice, &bob).await;
    let room = group(&store, &carol, &[&alice, &bob, &carol]).await;

    let b1 = send(&store, dm, &bob, "b1").await;
    let a1 = send(&store, dm, &alice, "a1").await;
    let c1 = send(&store, room, &carol, "c1").await;
    let b2 = send(&store, dm, &bob, "b2").await;
    let a2 = send(&store, room, &alice, "a2").await;
    let c2 = send(&store, room, &carol, "c2").await;

    assert_eq!(
        store.undelivered(alice.id, 100).await.unwrap(),
        vec![b1.clone(), c1.clone(), b2.clone(), c2.clone()],
        "messages from others, in position order"
    );
    assert_eq!(
        store.undelivered(alice.id, 2).await.unwrap(),
        vec![b1.clone(), c1.clone()]
    );
    assert_eq!(
        store.undelivered(bob.id, 100).await.unwrap(),
        vec![a1.clone(), c1.clone(), a2.clone(), c2.clone()]
    );

    store
        .advance_cursors(vec![
            CursorUpdate {
                conversation: dm,
                user: alice.id,
                delivered: Some(b1.seq),
                read: None,
            },
            CursorUpdate {
                conversation: room,
                user: alice.id,
                delivered: Some(c2.seq),
                read: None,
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        store.undelivered(alice.id, 100).await.unwrap(),
        vec![b2.clone()]
    );
    assert_eq!(
        store.undelivered(bob.id, 100).await.unwrap().len(),
        4,
        "alice's cursors are hers alone"
    );
    assert!(
        store
            .undelivered(UserId(987_654), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.undelivered(alice.id, 0).await.unwrap().is_empty());
}

async fn case_cursors_only_move_forward(store: Arc<dyn Store>) {
    let alice = user(&store, "alice@example.org").await;
    let bob = user(&store, "bob@example.org").await;
    let dm = direct(&store, &alice, &bob).await;
    for i in 0..5 {
        send(&store, dm, &bob, &format!("m{i}")).await;
    }
    let cursor = |delivered: Option<i64>, read: Option<i64>| CursorUpdate {
        conversation: dm,
        user: alice.id,
        delivered: delivered.map(Seq),
        read: read.map(Seq),
    };
    let me = async || {
        store
            .members(dm)
            .await
            .unwrap()
            .into_iter()
            .find(|m| m.user == alice.id)
            .map(|m| (m.delivered.0, m.read.0))
            .unwrap()
    };

    store
        .advance_cursors(vec![cursor(Some(3), None)])
        .await
        .unwrap();
    assert_eq!(me().await, (3, 0));
    store
        .advance_cursors(vec![cursor(Some(1), Some(2))])
        .await
        .unwrap();
    assert_eq!(me().await, (3, 2), "delivered does not move back");
    store
        .advance_cursors(vec![cursor(None, Some(1))])
        .await
        .unwrap();
    assert_eq!(me().await, (3, 2), "read does not move back");
    // Several moves of one cursor in one call: the furthest wins.
    store
        .advance_cursors(vec![cursor(Some(4), None), cursor(Some(2), Some(3))])
        .await
        .unwrap();
    assert_eq!(me().await, (4, 3));
    // Reading implies delivery.
    store
        .advance_cursors(vec![cursor(None, Some(5))])
        .await
        .unwrap();
    assert_eq!(me().await, (5, 5));
    // A cursor never passes the last message, so later messages are not swallowed.
    store
        .advance_cursors(vec![cursor(Some(50), Some(50))])
        .await
        .unwrap();
    assert_eq!(me().await, (5, 5));
    let next = send(&store, dm, &bob, "m5").await;
    assert_eq!(store.undelivered(alice.id, 10).await.unwrap(), vec![next]);
    // Cursors of a conversation or member that does not exist are ignored.
    store
        .advance_cursors(vec![CursorUpdate {
            conversation: ConversationId::random(),
            user: alice.id,
            delivered: Some(Seq(1)),
            read: None,
        }])
        .await
        .unwrap();
    store.advance_cursors(vec![]).await.unwrap();
    let bobs = store
        .members(dm)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.user == bob.id)
        .unwrap();
    assert_eq!((bobs.delivered, bobs.read), (Seq(0), Seq(0)));
}

async fn case_sessions(store: Arc<dyn Store>) {
    let alice = user(&store, "alice@example.org").await;
    let bob = user(&store, "bob@example.org").await;
    let s1 = session_record("s1", &alice, 1_000);
    let s2 = session_record("s2", &alice, 3_000);
    let s3 = session_record("s3", &bob, 2_000);
    for s in [&s1, &s2, &s3] {
        store.put_session(s.clone()).await.unwrap();
    }
    assert_eq!(store.session(&s1.id).await.unwrap(), Some(s1.clone()));
    assert_eq!(
        store.session(&SessionId("nope".into())).await.unwrap(),
        None
    );
    assert_eq!(
        store.sessions_of(alice.id).await.unwrap(),
        vec![s1.clone(), s2.clone()]
    );
    assert!(matches!(
        store
            .put_session(SessionRecord {
                user: UserId(987_654),
                ..session_record("s9", &alice, 1)
            })
            .await,
        Err(StoreError::NotFound(_))
    ));

    store.touch_session(&s1.id, 4_000, Pos(17)).await.unwrap();
    let away = Presence {
        show: Availability::Away,
        status: Some("lunch".to_string()),
    };
    store.set_session_presence(&s1.id, &away).await.unwrap();
    let got = store.session(&s1.id).await.unwrap().unwrap();
    assert_eq!((got.last_seen, got.acked), (4_000, Pos(17)));
    assert_eq!(got.presence, away);
    assert_eq!(got.created_at, s1.created_at);
    // The acknowledged position never moves back.
    store.touch_session(&s1.id, 4_500, Pos(3)).await.unwrap();
    let got = store.session(&s1.id).await.unwrap().unwrap();
    assert_eq!((got.last_seen, got.acked), (4_500, Pos(17)));

    // Putting a session again replaces it (moved to another node, say).
    let moved = SessionRecord {
        node: "node-2".to_string(),
        ..got.clone()
    };
    store.put_session(moved.clone()).await.unwrap();
    assert_eq!(store.session(&s1.id).await.unwrap(), Some(moved.clone()));

    let expired = store.expire_sessions(3_000).await.unwrap();
    assert_eq!(
        expired,
        vec![s3.clone()],
        "only sessions last seen before the limit"
    );
    assert_eq!(store.session(&s3.id).await.unwrap(), None);
    assert_eq!(store.sessions_of(alice.id).await.unwrap().len(), 2);

    store.delete_session(&s2.id).await.unwrap();
    store.delete_session(&s2.id).await.unwrap();
    assert_eq!(store.sessions_of(alice.id).await.unwrap(), vec![moved]);
    assert!(store.expire_sessions(0).await.unwrap().is_empty());
}

/// Many writers at once: group commit must still give every message its own number and
/// position, and every caller its own answer.
async fn case_personal_items(store: Arc<dyn Store>) {
    let alice = user(&store, "alice@example.org").await;
    let bob = user(&store, "bob@example.org").await;
    let item = |node: &str, id: &str, payload: &str, at: Millis| PersonalItem {
        node: node.into(),
        id: id.into(),
        payload: payload.into(),
        updated_at: at,
    };
    let avatar = "urn:xmpp:avatar:metadata";
    store
        .put_personal_item(alice.id, item(avatar, "a1", "<one/>", 1), 1)
        .await
        .unwrap();
    store
        .put_personal_item(bob.id, item(avatar, "b1", "<bob/>", 1), 1)
        .await
        .unwrap();
    // A node that keeps one item: the newer replaces the older.
    store
        .put_personal_item(alice.id, item(avatar, "a2", "<two/>", 2), 1)
        .await
        .unwrap();
    let items = store.personal_items(alice.id, avatar, 10).await.unwrap();
    assert_eq!(items, vec![item(avatar, "a2", "<two/>", 2)]);
    // Same id: replaced in place; a node keeping several keeps them newest first.
    let devices = "eu.siacs.conversations.axolotl.devicelist";
    for (id, at) in [("x", 1), ("y", 2), ("x", 3)] {
        store
            .put_personal_item(alice.id, item(devices, id, &format!("<v{at}/>"), at), 10)
            .await
            .unwrap();
    }
    let items = store.personal_items(alice.id, devices, 10).await.unwrap();
    assert_eq!(
        items,
        vec![
            item(devices, "x", "<v3/>", 3),
            item(devices, "y", "<v2/>", 2)
        ]
    );
    assert_eq!(
        store
            .personal_items(alice.id, devices, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    // Deleting one item, then a whole node; others' items stay.
    assert!(
        store
            .delete_personal_item(alice.id, devices, Some("y"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_personal_item(alice.id, devices, Some("y"))
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_personal_item(alice.id, avatar, None)
            .await
            .unwrap()
    );
    assert!(
        store
            .personal_items(alice.id, avatar, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .personal_items(bob.id, avatar, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // They go with the account.
    assert!(store.delete_account(bob.id).await.unwrap());
    assert!(
        store
            .personal_items(bob.id, avatar, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn case_concurrent_appends(store: Arc<dyn Store>) {
    let alice = user(&store, "alice@example.org").await;
    let bob = user(&store, "bob@example.org").await;
    let room = group(&store, &alice, &[&alice, &bob]).await;
    let start = store.last_pos().await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = store.clone();
        let sender = if t % 2 == 0 {
            alice.clone()
        } else {
            bob.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..25 {
                let client_id = format!("t{t}-{i}");
                let entries = vec![JournalEntry::Message(new_message(
                    room, &sender, &client_id,
                ))];
                let mut results = store.append(entries).await.unwrap();
                match results.pop().unwrap().unwrap() {
                    JournalOutcome::Message(a) => mine.push(a.message),
                    other => panic!("{other:?}"),
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    assert_eq!(all.len(), 400);
    let seqs: BTreeSet<i64> = all.iter().map(|m| m.seq.0).collect();
    assert_eq!(seqs, (1..=400).collect::<BTreeSet<_>>());
    let positions: BTreeSet<i64> = all.iter().map(|m| m.pos.0).collect();
    assert_eq!(positions.len(), 400);
    assert!(positions.iter().all(|p| *p > start.0));
    // Within the conversation, numbers and positions grow together.
    all.sort_by_key(|m| m.seq);
    assert!(all.windows(2).all(|w| w[0].pos < w[1].pos));
    assert_eq!(store.last_pos().await.unwrap(), all.last().unwrap().pos);
    assert_eq!(store.history(room, None, 1000).await.unwrap(), all);
}

async fn case_reopen_keeps_everything(harness: &Harness) {
    let (alice, bob, room, messages, last) = {
        let store = harness.open().await;
        let alice = user(&store, "alice@example.org").await;
        let bob = user(&store, "bob@example.org").await;
        let room = group(&store, &alice, &[&alice, &bob]).await;
        let mut messages = Vec::new();
        for i in 0..5 {
            messages.push(send(&store, room, &bob, &format!("m{i}")).await);
        }
        changes(
            &store,
            vec![Change::PutContact(Contact::new(
                alice.id,
                bob.address.clone(),
            ))],
            vec![(alice.id, joined(room))],
        )
        .await;
        store
            .create_login(login_record("login-1", &alice, b"token-1"))
            .await
            .unwrap();
        store
            .put_session(session_record("s1", &alice, 10))
            .await
            .unwrap();
        store
            .advance_cursors(vec![CursorUpdate {
                conversation: room,
                user: alice.id,
                delivered: Some(Seq(2)),
                read: Some(Seq(1)),
            }])
            .await
            .unwrap();
        let last = store.last_pos().await.unwrap();
        (alice, bob, room, messages, last)
    };
    // The store is dropped here; what was acknowledged must all be on disk.

    let store = harness.open().await;
    assert_eq!(store.last_pos().await.unwrap(), last);
    assert_eq!(store.account(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(
        store.account_by_address(&bob.address).await.unwrap(),
        Some(bob.clone())
    );
    assert_eq!(store.history(room, None, 100).await.unwrap(), messages);
    assert_eq!(store.contacts_of(alice.id).await.unwrap().len(), 1);
    assert!(
        store
            .login_by_token_hash(b"token-1")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .session(&SessionId("s1".into()))
            .await
            .unwrap()
            .is_some()
    );
    let undelivered = store.undelivered(alice.id, 100).await.unwrap();
    assert_eq!(undelivered, messages[2..]);
    let replayed = store.replay(alice.id, Pos(0), 100).await.unwrap();
    assert_eq!(replayed.len(), 6);

    // Numbering continues above the old numbers.
    let next = send(&store, room, &alice, "after-reopen").await;
    assert_eq!(next.seq, Seq(6));
    assert!(next.pos > last);
    let dup = match append_one(&store, JournalEntry::Message(new_message(room, &bob, "m0"))).await {
        JournalOutcome::Message(a) => a,
        other => panic!("{other:?}"),
    };
    assert!(dup.duplicate, "duplicates are recognised across a restart");
    assert_eq!(dup.message, messages[0]);
    let events = changes(&store, vec![], vec![(bob.id, joined(room))]).await;
    assert!(events[0].pos > next.pos);
    drop(store);

    // Once more, to check that a position handed out after the reopen survives as well.
    let store = harness.open().await;
    assert_eq!(store.last_pos().await.unwrap(), events[0].pos);
}
