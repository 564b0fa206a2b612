//! The example's bank account aggregate under cqrs-es's own `TestFramework`:
//! given past events, a command yields the expected events or error.

mod support;

use cqrs_es::test::TestFramework;
use support::bank_account::{
    BankAccount, BankAccountCommand, BankAccountError, BankAccountEvent, BankAccountServices,
};

type AccountTest = TestFramework<BankAccount>;

fn opened() -> BankAccountEvent {
    BankAccountEvent::AccountOpened {
        owner: "ana".to_owned(),
    }
}

fn deposited(amount_cents: u64, balance_cents: u64) -> BankAccountEvent {
    BankAccountEvent::CustomerDepositedMoney {
        amount_cents,
        balance_cents,
    }
}

#[test]
fn opening_a_new_account_records_its_owner() {
    AccountTest::with(BankAccountServices)
        .given_no_previous_events()
        .when(BankAccountCommand::OpenAccount {
            owner: "ana".to_owned(),
        })
        .then_expect_events(vec![opened()]);
}

#[test]
fn opening_an_open_account_is_refused() {
    AccountTest::with(BankAccountServices)
        .given(vec![opened()])
        .when(BankAccountCommand::OpenAccount {
            owner: "bo".to_owned(),
        })
        .then_expect_error(BankAccountError::AlreadyOpen);
}

#[test]
fn a_deposit_raises_the_balance() {
    AccountTest::with(BankAccountServices)
        .given(vec![opened(), deposited(100, 100)])
        .when(BankAccountCommand::DepositMoney { amount_cents: 50 })
        .then_expect_events(vec![deposited(50, 150)]);
}

#[test]
fn a_withdrawal_within_the_balance_lowers_it() {
    AccountTest::with(BankAccountServices)
        .given(vec![opened(), deposited(100, 100)])
        .when(BankAccountCommand::WithdrawMoney { amount_cents: 30 })
        .then_expect_events(vec![BankAccountEvent::CustomerWithdrewCash {
            amount_cents: 30,
            balance_cents: 70,
        }]);
}

#[test]
fn a_withdrawal_over_the_balance_is_refused() {
    AccountTest::with(BankAccountServices)
        .given(vec![opened(), deposited(100, 100)])
        .when(BankAccountCommand::WithdrawMoney { amount_cents: 500 })
        .then_expect_error_message("funds are insufficient: balance 100, asked 500");
}

#[test]
fn money_moves_only_on_an_open_account_and_in_positive_amounts() {
    AccountTest::with(BankAccountServices)
        .given_no_previous_events()
        .when(BankAccountCommand::DepositMoney { amount_cents: 5 })
        .then_expect_error(BankAccountError::NotOpen);
    AccountTest::with(BankAccountServices)
        .given(vec![opened()])
        .when(BankAccountCommand::DepositMoney { amount_cents: 0 })
        .then_expect_error(BankAccountError::ZeroAmount);
}
