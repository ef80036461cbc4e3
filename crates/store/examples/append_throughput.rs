//! Measures how many durable messages per second the SQLite store commits, the way the hub's
//! journal drives it: many concurrent appends, each a small batch, which the writer thread
//! folds into group commits.
//!
//! `cargo run --release -p switchboard-store --example append_throughput [messages] [writers]
//! [batch] [pairs]`: `writers` concurrent appenders, each sending batches of `batch` messages,
//! spread over the direct conversations of `pairs` pairs of people.

use std::sync::Arc;
use std::time::Instant;

use switchboard_core::address::Address;
use switchboard_core::model::*;
use switchboard_core::store::Store;
use switchboard_store::{SqliteOptions, SqliteStore};

#[tokio::main]
async fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let total = args.next().unwrap_or(200_000);
    let writers = args.next().unwrap_or(64);
    let batch = args.next().unwrap_or(1);
    let pair_count = args.next().unwrap_or(500);

    let dir = tempfile::tempdir().expect("a temporary directory");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("bench.sqlite"), SqliteOptions::default())
            .expect("opening the store"),
    );
    let verifier = ScramVerifier {
        salt: vec![0; 16],
        iterations: 4096,
        stored_key: vec![0; 32],
        server_key: vec![0; 32],
    };
    let mut pairs = Vec::new();
    for w in 0..pair_count {
        let mut accounts = Vec::new();
        for side in ["a", "b"] {
            let address = Address::parse_full(&format!("{side}{w}@bench.example")).unwrap();
            let account = store
                .create_account(NewAccount {
                    address,
                    credentials: Credentials {
                        scram_sha1: verifier.clone(),
                        scram_sha256: verifier.clone(),
                    },
                    settings: AccountSettings {
                        visibility: Visibility::Contacts,
                        message_policy: MessagePolicy::Anyone,
                        display_name: None,
                    },
                })
                .await
                .unwrap();
            accounts.push(account);
        }
        let (a, b) = (accounts[0].clone(), accounts[1].clone());
        let id = ConversationId::direct(&a.address, &b.address);
        store
            .append(vec![JournalEntry::Changes {
                changes: vec![Change::CreateConversation {
                    conversation: Conversation {
                        id,
                        kind: ConversationKind::Direct,
                        title: None,
                        confidential: false,
                        created_by: a.address.clone(),
                        created_at: now_millis(),
                    },
                    members: vec![(a.id, a.address.clone()), (b.id, b.address.clone())],
                }],
                events: vec![],
            }])
            .await
            .unwrap();
        pairs.push((a, id));
    }

    let body = "x".repeat(100);
    let per_writer = total / writers;
    let started = Instant::now();
    let pairs = Arc::new(pairs);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let body = body.clone();
        let pairs = pairs.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while i < per_writer {
                let entries = (0..batch.min(per_writer - i))
                    .map(|k| {
                        let (sender, conversation) = &pairs[(w + (i + k) * writers) % pairs.len()];
                        JournalEntry::Message(NewMessage {
                            id: MessageId::random(),
                            conversation: *conversation,
                            sender: sender.id,
                            sender_address: sender.address.clone(),
                            client_id: format!("{w}-{}", i + k),
                            body: body.clone(),
                            sent_at: now_millis(),
                            to_endpoint: None,
                            from_endpoint: None,
                            private: false,
                        })
                    })
                    .collect::<Vec<_>>();
                i += entries.len();
                for result in store.append(entries).await.unwrap() {
                    result.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let done = per_writer * writers;
    println!(
        "{done} messages in {:.2} s: {:.0} messages/s ({writers} writers, batches of {batch}, \
         {pair_count} conversations)",
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64()
    );
}
