//! A bank account kept in Gater through cqrs-es, against a running server.
//!
//! Start a server (`cargo run --release -- dev`), then:
//!
//! ```text
//! cargo run -p gater-cqrs-es --example bank -- --server 127.0.0.1:7400 --certs .gater/certs
//! ```
//!
//! It connects over QUIC with the development certificates, creates the store
//! `bank` if needed, runs commands on a fresh account (one refused), reads the
//! account's view, events and snapshot back, shows optimistic locking between
//! two tellers, and replays every account event of the store. Each run uses a
//! new account, so it can run again and again.

#[path = "support/bank_account.rs"]
mod bank_account;

use std::collections::HashMap;
use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use bank_account::{AccountView, BankAccount, BankAccountCommand, BankAccountServices};
use cqrs_es::persist::{
    GenericQuery, PersistedEventRepository, PersistedEventStore, ViewRepository,
};
use cqrs_es::{AggregateError, CqrsFramework, EventStore};
use gater_core::{BoxGater, Gater, StoreConfig, StoreId};
use gater_cqrs_es::{GaterEventRepository, GaterViewRepository};
use gater_transport_quic::{connect, ClientOptions, ClientTls};

/// Where `gater dev` listens by default.
const SERVER_DEFAULT: &str = "127.0.0.1:7400";
/// Where `gater dev` writes its development certificates by default.
const CERTS_DEFAULT: &str = ".gater/certs";
/// The store the example uses.
const STORE: &str = "bank";
/// The view's name (its streams are `account_view-{account}`).
const VIEW_NAME: &str = "account_view";
/// A snapshot every this many events.
const SNAPSHOT_EVERY: usize = 3;

type Bank = CqrsFramework<BankAccount, PersistedEventStore<GaterEventRepository, BankAccount>>;

struct Args {
    servers: Vec<SocketAddr>,
    certs: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut servers = Vec::new();
    let mut certs = PathBuf::from(CERTS_DEFAULT);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--server" => servers.push(
                value
                    .parse()
                    .map_err(|e| format!("--server {value}: {e}"))?,
            ),
            "--certs" => certs = PathBuf::from(value),
            _ => {
                return Err(format!(
                    "unknown argument {arg} (use --server ADDR --certs DIR)"
                ))
            }
        }
    }
    if servers.is_empty() {
        servers.push(SERVER_DEFAULT.parse().map_err(|e| format!("{e}"))?);
    }
    Ok(Args { servers, certs })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let tls = ClientTls::from_dir(&args.certs)
        .map_err(|e| format!("certificates in {}: {e}", args.certs.display()))?;
    let client = connect(&args.servers, tls, ClientOptions::default()).await?;
    let gater: BoxGater = Arc::new(client);
    println!(
        "connected to {:?} with the certificates in {}",
        args.servers,
        args.certs.display()
    );
    let store = StoreId::new(STORE)?;
    gater.create_store(&store, StoreConfig::default()).await?;
    println!("store {store} ready");

    let repo = GaterEventRepository::new(Arc::clone(&gater), store.clone());
    let views = Arc::new(GaterViewRepository::<AccountView, BankAccount>::new(
        Arc::clone(&gater),
        store.clone(),
        VIEW_NAME,
    ));
    let bank: Bank = CqrsFramework::new(
        PersistedEventStore::new_snapshot_store(repo.clone(), SNAPSHOT_EVERY),
        vec![Box::new(GenericQuery::new(Arc::clone(&views)))],
        BankAccountServices,
    );

    let account = format!("acct-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    println!("\naccount {account} (stream BankAccount-{account}):");
    let commands = [
        BankAccountCommand::OpenAccount {
            owner: "ana".to_owned(),
        },
        BankAccountCommand::DepositMoney {
            amount_cents: 10_000,
        },
        BankAccountCommand::WithdrawMoney {
            amount_cents: 3_000,
        },
        BankAccountCommand::WithdrawMoney {
            amount_cents: 50_000,
        },
        BankAccountCommand::DepositMoney {
            amount_cents: 1_250,
        },
    ];
    for command in commands {
        let what = describe(&command);
        let metadata = HashMap::from([("teller".to_owned(), "example".to_owned())]);
        match bank
            .execute_with_metadata(&account, command, metadata)
            .await
        {
            Ok(()) => println!("  {what}: done"),
            Err(AggregateError::UserError(refused)) => println!("  {what}: refused ({refused})"),
            Err(e) => return Err(e.into()),
        }
    }

    show_view(&views, &account).await?;
    show_events(&repo, &account).await?;
    show_snapshot(&repo, &account).await?;
    two_tellers(&repo, &account).await?;
    replay_all(&repo).await?;
    Ok(())
}

fn describe(command: &BankAccountCommand) -> String {
    match command {
        BankAccountCommand::OpenAccount { owner } => format!("open for {owner}"),
        BankAccountCommand::DepositMoney { amount_cents } => {
            format!("deposit {}", money(*amount_cents))
        }
        BankAccountCommand::WithdrawMoney { amount_cents } => {
            format!("withdraw {}", money(*amount_cents))
        }
    }
}

fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

async fn show_view(
    views: &GaterViewRepository<AccountView, BankAccount>,
    account: &str,
) -> Result<(), Box<dyn Error>> {
    let Some((view, context)) = views.load_with_context(account).await? else {
        return Err("the account view was not written".into());
    };
    println!(
        "\nview {VIEW_NAME}-{account} (update {}): owner {}, balance {}",
        context.version,
        view.owner,
        money(view.balance_cents)
    );
    for (sequence, event_type, amount_cents) in &view.ledger {
        println!("  #{sequence} {event_type:<24} {amount_cents:>+8}");
    }
    Ok(())
}

async fn show_events(repo: &GaterEventRepository, account: &str) -> Result<(), Box<dyn Error>> {
    println!("\nevents read back:");
    for event in repo.get_events::<BankAccount>(account).await? {
        println!(
            "  sequence {} {} v{} payload {} metadata {}",
            event.sequence, event.event_type, event.event_version, event.payload, event.metadata
        );
    }
    Ok(())
}

async fn show_snapshot(repo: &GaterEventRepository, account: &str) -> Result<(), Box<dyn Error>> {
    match repo.get_snapshot::<BankAccount>(account).await? {
        Some(snapshot) => println!(
            "\nlatest snapshot (#{}, after sequence {}): {}",
            snapshot.current_snapshot, snapshot.current_sequence, snapshot.aggregate
        ),
        None => println!("\nno snapshot yet"),
    }
    let store =
        PersistedEventStore::<_, BankAccount>::new_snapshot_store(repo.clone(), SNAPSHOT_EVERY);
    let context = store.load_aggregate(account).await?;
    println!(
        "loaded from the snapshot and later events: balance {} at sequence {}",
        money(context.aggregate.balance_cents),
        context.current_sequence
    );
    Ok(())
}

/// Two tellers load the account at once and both try to commit a deposit.
async fn two_tellers(repo: &GaterEventRepository, account: &str) -> Result<(), Box<dyn Error>> {
    let store = PersistedEventStore::<_, BankAccount>::new_event_store(repo.clone());
    let first = store.load_aggregate(account).await?;
    let second = store.load_aggregate(account).await?;
    println!(
        "\ntwo tellers loaded sequence {} and both deposit 1.00:",
        first.current_sequence
    );
    let deposit = |balance_cents: u64| {
        vec![bank_account::BankAccountEvent::CustomerDepositedMoney {
            amount_cents: 100,
            balance_cents: balance_cents + 100,
        }]
    };
    let balance = first.aggregate.balance_cents;
    for (teller, context) in [("first", first), ("second", second)] {
        match store
            .commit(deposit(balance), context, HashMap::new())
            .await
        {
            Ok(events) => println!(
                "  {teller} teller: committed sequence {}",
                events[0].sequence
            ),
            Err(AggregateError::AggregateConflict) => {
                println!("  {teller} teller: conflict (optimistic lock), reload and retry")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Replays every account event of the store, page by page.
async fn replay_all(repo: &GaterEventRepository) -> Result<(), Box<dyn Error>> {
    let mut replay = repo.stream_all_events::<BankAccount>().await?;
    let mut events = 0u64;
    let mut accounts = std::collections::BTreeSet::new();
    while let Some(envelope) = replay.next::<BankAccount>(&[]).await {
        accounts.insert(envelope?.aggregate_id);
        events += 1;
    }
    println!(
        "\nreplayed every BankAccount event of store {}: {events} events of {} accounts",
        repo.store(),
        accounts.len()
    );
    Ok(())
}
