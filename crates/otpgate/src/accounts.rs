//! What an operator does to accounts, credits, API keys and users, written
//! once: the `otpgate accounts|credits|keys|users` commands ([`crate::cli`])
//! and the admin API (`/admin/v1/...`) both parse their input into the types
//! here and call the same operations, so the same input gets the same answer
//! from either.
//!
//! Each rule lives in one parser: [`AccountName`], [`opening_credits`],
//! [`Label`], [`CreditChange`]; an operation takes only parsed values and
//! adds the refusals only the store can make (a taken name or email, a
//! balance that would go below zero, a record that is not there). A refusal
//! is a [`Problem`] (field, stable code, sentence); the API sends it in its
//! error envelope, the command line prints its sentence and code.
//!
//! Where the command line and the admin API used to differ, the stricter rule
//! holds for both:
//!
//! - An account name is trimmed, and at most [`MAX_NAME_CHARS`] characters
//!   (the command line kept surrounding spaces and any length).
//! - A key label, and a ledger note, are at most [`MAX_NAME_CHARS`]
//!   characters (the command line took any length).
//! - Adding zero SMS and zero phone credits is refused, `nothing_to_add`
//!   (the command line wrote an empty ledger entry).
//! - A taken account name or email, and a balance that would go below zero,
//!   are refused with the admin API's sentences (`name_taken`, `email_taken`,
//!   `negative_balance`), which the command line now prints too.
//!
//! Passwords are parsed by [`crate::users::NewPassword`] under the mode's
//! [`crate::users::PasswordRules`] on both sides, and hashed by the caller
//! (the server through its bounded pool, the command line directly).

use std::fmt;

use otp_store::{
    Account, AccountId, AccountLimits, ApiKeyRecord, NewUser, Scopes, SharedStore, StoreError, User,
};

use crate::auth::issue_key_with_scopes;
use crate::users::Email;

/// Longest account name, key label or ledger note accepted.
pub const MAX_NAME_CHARS: usize = 100;

/// One thing wrong with an operation's input, or a refusal by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The input at fault (the admin API's field name), or `non_field_errors`.
    pub field: &'static str,
    /// Stable and machine-readable, e.g. `too_long`, `name_taken`.
    pub code: &'static str,
    /// A sentence for a person.
    pub message: String,
}

impl Problem {
    fn new(field: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Problem {
            field,
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for Problem {}

/// Why an operation did nothing.
#[derive(Debug)]
pub enum Refusal {
    /// The store refused it: a taken name or email, or a balance that would
    /// go below zero (the API's 409).
    Conflict(Problem),
    /// The account, key or user is not there (or the key is revoked already).
    NotFound,
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Store(e)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Conflict(problem) => problem.fmt(f),
            Refusal::NotFound => f.write_str("not found"),
            Refusal::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Refusal {}

/// A text of at most [`MAX_NAME_CHARS`] characters, as `field`.
fn short(field: &'static str, text: &str) -> Result<(), Problem> {
    if text.chars().count() > MAX_NAME_CHARS {
        return Err(Problem::new(
            field,
            "too_long",
            format!("{field} may have at most {MAX_NAME_CHARS} characters."),
        ));
    }
    Ok(())
}

/// An account's name: trimmed, not blank, at most [`MAX_NAME_CHARS`]
/// characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountName(String);

impl AccountName {
    pub fn parse(raw: &str) -> Result<AccountName, Problem> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(Problem::new("name", "blank", "name may not be blank."));
        }
        short("name", name)?;
        Ok(AccountName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key label or a ledger note, as `field`: at most [`MAX_NAME_CHARS`]
/// characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label(String);

impl Label {
    pub fn parse(field: &'static str, raw: String) -> Result<Label, Problem> {
        short(field, &raw)?;
        Ok(Label(raw))
    }

    /// A label the server writes itself.
    pub fn ours(text: &'static str) -> Label {
        Label(text.to_owned())
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// An account's opening balance, as `field`: not negative.
pub fn opening_credits(field: &'static str, credits: i64) -> Result<i64, Problem> {
    if credits < 0 {
        return Err(Problem::new(
            field,
            "out_of_range",
            format!("{field} cannot be negative."),
        ));
    }
    Ok(credits)
}

/// Credits to add to an account (negative numbers remove them): not both
/// zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditChange {
    sms: i64,
    phone: i64,
}

impl CreditChange {
    pub fn new(sms: i64, phone: i64) -> Result<CreditChange, Problem> {
        if sms == 0 && phone == 0 {
            return Err(Problem::new(
                "non_field_errors",
                "nothing_to_add",
                "Give sms or phone, not zero.",
            ));
        }
        Ok(CreditChange { sms, phone })
    }

    pub fn sms(&self) -> i64 {
        self.sms
    }

    pub fn phone(&self) -> i64 {
        self.phone
    }
}

/// A key just made: its record, and the whole key, which is shown only now.
pub struct NewKey {
    pub record: ApiKeyRecord,
    pub api_key: String,
}

/// Creates an account with opening balances (from [`opening_credits`]) and
/// its first API key.
pub async fn create_account(
    store: &SharedStore,
    name: &AccountName,
    sms_credits: i64,
    phone_credits: i64,
    scopes: Scopes,
) -> Result<(Account, NewKey), Refusal> {
    let account = store
        .create_account(name.as_str(), sms_credits, phone_credits)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => Refusal::Conflict(Problem::new(
                "name",
                "name_taken",
                "An account with this name exists.",
            )),
            other => other.into(),
        })?;
    let key = create_key(
        store,
        account.id,
        Some(Label::ours("created with the account")),
        scopes,
    )
    .await?;
    tracing::info!(
        account_id = account.id,
        sms = sms_credits,
        phone = phone_credits,
        "account created"
    );
    Ok((account, key))
}

/// Adds `change` to an account's balances, recorded in its ledger with `note`.
pub async fn add_credits(
    store: &SharedStore,
    account_id: AccountId,
    change: CreditChange,
    note: Label,
) -> Result<Account, Refusal> {
    let account = store
        .add_credits(account_id, change.sms, change.phone, &note.0)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => Refusal::Conflict(Problem::new(
                "non_field_errors",
                "negative_balance",
                "A balance cannot go below zero; nothing was changed.",
            )),
            StoreError::NotFound(_) => Refusal::NotFound,
            other => other.into(),
        })?;
    tracing::info!(
        account_id,
        sms = change.sms,
        phone = change.phone,
        "credits added"
    );
    Ok(account)
}

/// Disables an account (`true`) or enables it again (`false`). While
/// disabled, its API keys and its users are refused (403 `account_disabled`)
/// and it accepts no send, on every node at once; what it accepted before is
/// still delivered, receipts and refunds still apply, and its webhook still
/// hears of them. Disabling twice keeps the first time.
pub async fn set_disabled(
    store: &SharedStore,
    account_id: AccountId,
    disabled: bool,
) -> Result<Account, Refusal> {
    let at = disabled.then(otp_store::now_micros);
    let account = store
        .set_account_disabled(account_id, at)
        .await?
        .ok_or(Refusal::NotFound)?;
    if disabled {
        tracing::info!(account_id, "account disabled");
    } else {
        tracing::info!(account_id, "account enabled");
    }
    Ok(account)
}

/// Issues a new API key for an account.
pub async fn create_key(
    store: &SharedStore,
    account_id: AccountId,
    label: Option<Label>,
    scopes: Scopes,
) -> Result<NewKey, Refusal> {
    let issued = issue_key_with_scopes(account_id, label.map(Label::into_string), scopes);
    let record = store.create_key(issued.record).await?;
    tracing::info!(
        account_id,
        key_id = %record.key_id,
        scopes = %record.scopes,
        "key created"
    );
    Ok(NewKey {
        record,
        api_key: issued.plaintext,
    })
}

/// Revokes an active key by its public id.
pub async fn revoke_key(store: &SharedStore, key_id: &str) -> Result<(), Refusal> {
    if !store.revoke_key(key_id).await? {
        return Err(Refusal::NotFound);
    }
    tracing::info!(key_id = %key_id, "key revoked");
    Ok(())
}

/// Sets an account's own send rate and daily spend cap (`None`: the
/// configured default; `Some(0)`: no limit); a limit not given is kept.
pub async fn set_limits(
    store: &SharedStore,
    account_id: AccountId,
    max_rps: Option<Option<i64>>,
    daily_spend_cap: Option<Option<i64>>,
) -> Result<AccountLimits, Refusal> {
    let limits = store
        .account_limits(account_id)
        .await?
        .ok_or(Refusal::NotFound)?;
    if max_rps.is_none() && daily_spend_cap.is_none() {
        return Ok(limits);
    }
    let limits = store
        .set_account_limits(
            account_id,
            max_rps.unwrap_or(limits.max_rps),
            daily_spend_cap.unwrap_or(limits.daily_spend_cap),
        )
        .await?;
    tracing::info!(account_id, "account limits set");
    Ok(limits)
}

/// Creates a user of an account, with a password already hashed.
pub async fn create_user(
    store: &SharedStore,
    account_id: AccountId,
    email: &Email,
    password_hash: String,
) -> Result<User, Refusal> {
    let user = store
        .create_user(NewUser {
            account_id,
            email: email.as_str().to_owned(),
            password_hash,
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => Refusal::Conflict(Problem::new(
                "email",
                "email_taken",
                "A user with this email exists.",
            )),
            StoreError::NotFound(_) => Refusal::NotFound,
            other => other.into(),
        })?;
    tracing::info!(
        user_id = user.id,
        account_id = user.account_id,
        "user created"
    );
    Ok(user)
}

/// Makes a user an operator ([`otp_store::User::operator`]). The command
/// line creates the user first and then calls this: should this step fail,
/// the user is left an account user, which opens less, never more.
pub async fn make_operator(store: &SharedStore, user_id: i64) -> Result<User, Refusal> {
    let user = store
        .set_operator(user_id, true)
        .await?
        .ok_or(Refusal::NotFound)?;
    tracing::info!(user_id = user.id, "user made an operator");
    Ok(user)
}

/// Sets a user's password (already hashed): its tokens stop working, its
/// sessions are revoked and its failed logins forgotten.
pub async fn set_password(
    store: &SharedStore,
    user_id: i64,
    password_hash: &str,
) -> Result<User, Refusal> {
    let user = store
        .set_password(user_id, password_hash)
        .await?
        .ok_or(Refusal::NotFound)?;
    tracing::info!(user_id = user.id, "password set");
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_trimmed_and_held_to_its_length() {
        assert_eq!(AccountName::parse("  shop ").unwrap().as_str(), "shop");
        assert_eq!(AccountName::parse("   ").unwrap_err().code, "blank");
        let longest = "n".repeat(MAX_NAME_CHARS);
        assert!(AccountName::parse(&longest).is_ok());
        assert_eq!(
            AccountName::parse(&format!("{longest}n")).unwrap_err().code,
            "too_long"
        );
    }

    #[test]
    fn labels_are_counted_in_characters_and_credits_must_change_something() {
        assert!(Label::parse("label", "ा".repeat(MAX_NAME_CHARS)).is_ok());
        let refused = Label::parse("note", "x".repeat(MAX_NAME_CHARS + 1)).unwrap_err();
        assert_eq!((refused.field, refused.code), ("note", "too_long"));
        assert_eq!(CreditChange::new(0, 0).unwrap_err().code, "nothing_to_add");
        assert_eq!(CreditChange::new(0, -3).unwrap().phone(), -3);
        assert_eq!(
            opening_credits("sms_credits", -1).unwrap_err().code,
            "out_of_range"
        );
    }
}
