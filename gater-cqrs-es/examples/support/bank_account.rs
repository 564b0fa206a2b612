//! A bank account aggregate and its account view: the example's domain, also
//! checked by the crate's tests (cqrs-es `TestFramework`, and the adapter).

#![allow(dead_code, unreachable_pub)] // the example and each test binary use different parts

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent, EventEnvelope, View};
use serde::{Deserialize, Serialize};

/// The aggregate's state.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankAccount {
    pub opened: bool,
    pub balance_cents: u64,
}

/// What a customer asks of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BankAccountCommand {
    OpenAccount { owner: String },
    DepositMoney { amount_cents: u64 },
    WithdrawMoney { amount_cents: u64 },
}

/// What happened to an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankAccountEvent {
    AccountOpened {
        owner: String,
    },
    CustomerDepositedMoney {
        amount_cents: u64,
        balance_cents: u64,
    },
    CustomerWithdrewCash {
        amount_cents: u64,
        balance_cents: u64,
    },
}

impl DomainEvent for BankAccountEvent {
    fn event_type(&self) -> String {
        match self {
            BankAccountEvent::AccountOpened { .. } => "AccountOpened",
            BankAccountEvent::CustomerDepositedMoney { .. } => "CustomerDepositedMoney",
            BankAccountEvent::CustomerWithdrewCash { .. } => "CustomerWithdrewCash",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BankAccountError {
    #[error("account already open")]
    AlreadyOpen,
    #[error("account not open")]
    NotOpen,
    #[error("funds are insufficient: balance {balance_cents}, asked {amount_cents}")]
    InsufficientFunds {
        balance_cents: u64,
        amount_cents: u64,
    },
    #[error("amount must be positive")]
    ZeroAmount,
}

/// The services the account's commands use (none here).
#[derive(Debug, Default, Clone, Copy)]
pub struct BankAccountServices;

impl Aggregate for BankAccount {
    const TYPE: &'static str = "BankAccount";
    type Command = BankAccountCommand;
    type Event = BankAccountEvent;
    type Error = BankAccountError;
    type Services = BankAccountServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            BankAccountCommand::OpenAccount { owner } => {
                if self.opened {
                    return Err(BankAccountError::AlreadyOpen);
                }
                BankAccountEvent::AccountOpened { owner }
            }
            BankAccountCommand::DepositMoney { amount_cents } => {
                self.check_amount(amount_cents)?;
                BankAccountEvent::CustomerDepositedMoney {
                    amount_cents,
                    balance_cents: self.balance_cents.saturating_add(amount_cents),
                }
            }
            BankAccountCommand::WithdrawMoney { amount_cents } => {
                self.check_amount(amount_cents)?;
                let balance_cents = self.balance_cents.checked_sub(amount_cents).ok_or(
                    BankAccountError::InsufficientFunds {
                        balance_cents: self.balance_cents,
                        amount_cents,
                    },
                )?;
                BankAccountEvent::CustomerWithdrewCash {
                    amount_cents,
                    balance_cents,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            BankAccountEvent::AccountOpened { .. } => self.opened = true,
            BankAccountEvent::CustomerDepositedMoney { balance_cents, .. }
            | BankAccountEvent::CustomerWithdrewCash { balance_cents, .. } => {
                self.balance_cents = balance_cents;
            }
        }
    }
}

impl BankAccount {
    fn check_amount(&self, amount_cents: u64) -> Result<(), BankAccountError> {
        if !self.opened {
            return Err(BankAccountError::NotOpen);
        }
        if amount_cents == 0 {
            return Err(BankAccountError::ZeroAmount);
        }
        Ok(())
    }
}

/// The account as a customer sees it: owner, balance and ledger.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub account_id: String,
    pub owner: String,
    pub balance_cents: u64,
    /// One line per event: sequence, type and signed amount.
    pub ledger: Vec<(usize, String, i64)>,
}

impl View<BankAccount> for AccountView {
    fn update(&mut self, event: &EventEnvelope<BankAccount>) {
        self.account_id.clone_from(&event.aggregate_id);
        let amount = match &event.payload {
            BankAccountEvent::AccountOpened { owner } => {
                self.owner.clone_from(owner);
                0
            }
            BankAccountEvent::CustomerDepositedMoney {
                amount_cents,
                balance_cents,
            } => {
                self.balance_cents = *balance_cents;
                i64::try_from(*amount_cents).unwrap_or(i64::MAX)
            }
            BankAccountEvent::CustomerWithdrewCash {
                amount_cents,
                balance_cents,
            } => {
                self.balance_cents = *balance_cents;
                -i64::try_from(*amount_cents).unwrap_or(i64::MAX)
            }
        };
        self.ledger
            .push((event.sequence, event.payload.event_type(), amount));
    }
}
