//! The rows both backends read, mapped once.
//!
//! Each backend selects the same column lists ([`OTP_COLUMNS`] and the
//! others) and hands its driver's row to one mapping here through
//! [`Columns`], which `sqlite/rows.rs` and `postgres/rows.rs` implement for
//! `rusqlite::Row` and `tokio_postgres::Row`. A stored word this version
//! cannot read (a channel, a status, a voice) is an error naming the column
//! and the word, a number or template that is not one an error naming the
//! column (not its value), never a plausible default: a corrupt row must not be
//! delivered, refunded or listed as something it is not.

use otp_domain::channel::{Channel, OtpOption, Voice};
use otp_domain::message::MessageTemplate;
use otp_domain::phone::E164;

use otp_domain::vault::CodeVault;

use crate::fallback::{AccountFallback, Due, Fallback, FallbackState};
use crate::model::{StoredCode, VerifyRow};
use crate::webhooks::{
    BalanceEvent, ClaimedDelivery, Credits, DeliveryState, EventOtp, WebhookDelivery, WebhookEvent,
    open_secret,
};
use crate::{
    Account, ApiKeyRecord, LedgerEntry, OtpRecord, OtpStatus, RecordCode, ResendHead, Scopes,
    StoreError,
};

/// An OTP's columns, read `FROM otps o`; [`otp`] maps them. The stored
/// `phone_number` (the display form, for the list's filter) and `message`
/// are not read: both follow from `e164`, `template` and the code.
pub(crate) const OTP_COLUMNS: &str = "o.id, o.account_id, o.account_seq, o.e164, o.template, \
     o.code_salt, o.otp_options, o.channel, o.voice_input, o.length_factor, o.company_name, \
     o.segments, o.credits_used, o.status, o.status_at, o.error, o.provider_message_id, \
     o.created_at, o.route, o.error_code, o.delivered_at, o.refunded, o.otp_cipher, o.key_id, \
     o.expires_at, o.verified_at, o.verify_attempts, o.resend_of, o.fallback_channel, \
     o.fallback_voice, o.fallback_due_at, o.fallback_credits, o.fallback_state, o.fallback_at";

/// What a resend takes of its chain's first record, read `FROM otps o`;
/// [`resend_head`] maps them.
pub(crate) const RESEND_HEAD_COLUMNS: &str =
    "o.id, o.account_id, o.e164, o.expires_at, o.code_salt, o.otp_cipher, o.key_id";

/// What verification reads of an OTP; [`verify`] maps them.
pub(crate) const VERIFY_COLUMNS: &str =
    "id, e164, code_salt, otp_hash, expires_at, verify_attempts, verified_at, resend_of";

/// An account's columns; [`account`] maps them.
pub(crate) const ACCOUNT_COLUMNS: &str = "id, name, sms_credits, phone_credits, otp_count, created_at, disabled_at, \
     fallback_channel, fallback_after_seconds, fallback_voice";

/// A ledger entry's columns; [`ledger_entry`] maps them.
pub(crate) const LEDGER_COLUMNS: &str =
    "id, account_id, kind, sms_delta, phone_delta, otp_id, note, created_at";

/// An API key's columns, read `FROM api_keys` (or returned by a change to
/// it), with whether its account is disabled; [`key`] maps them.
pub(crate) const KEY_COLUMNS: &str = "id, key_id, account_id, secret_hash, label, created_at, revoked_at, last_used, scopes, \
     (SELECT disabled_at FROM accounts WHERE accounts.id = api_keys.account_id)";

/// How many columns [`KEY_COLUMNS`] holds (a query reading more puts them after).
pub(crate) const KEY_COLUMN_COUNT: usize = 10;

/// One row as a driver returns it, read by position. A value of the wrong
/// type or a NULL where none is allowed is a [`StoreError::Internal`].
pub(crate) trait Columns {
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError>;
    fn opt_float(&self, i: usize) -> Result<Option<f64>, StoreError>;
    fn text(&self, i: usize) -> Result<String, StoreError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError>;
    fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError>;
}

/// A row as stored: the record (code not yet revealed) and what is kept of the code.
pub(crate) type OtpRow = (OtpRecord, StoredCode);

/// The error of a stored word this version cannot read.
pub(crate) fn unreadable(column: &str, value: &str) -> StoreError {
    StoreError::Internal(format!(
        "{column} holds {value:?}, which this version cannot read"
    ))
}

/// The error of a stored text this version cannot read, whose value is not
/// repeated: a number or a client's template has no place in a log.
pub(crate) fn unreadable_text(column: &str) -> StoreError {
    StoreError::Internal(format!("{column} holds a value this version cannot read"))
}

/// A stored word parsed, or [`unreadable`].
pub(crate) fn parsed<T>(
    column: &str,
    value: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, StoreError> {
    parse(value).ok_or_else(|| unreadable(column, value))
}

/// The record of [`RESEND_HEAD_COLUMNS`] with its code opened; `None` when
/// `vault` cannot open it (a resend must not repeat a code it cannot read).
pub(crate) fn resend_head(
    r: &impl Columns,
    vault: &CodeVault,
) -> Result<Option<ResendHead>, StoreError> {
    let code = StoredCode {
        salt: r.opt_bytes(4)?,
        cipher: r.opt_bytes(5)?,
        key_id: r.opt_text(6)?,
    };
    let Some(code) = code.open(vault, r.int(1)?, &r.text(2)?) else {
        return Ok(None);
    };
    Ok(Some(ResendHead {
        id: r.int(0)?,
        code,
        expires_at: r.int(3)?,
    }))
}

/// The OTP whose [`OTP_COLUMNS`] start at column `at`, its code not yet
/// revealed ([`RecordCode::Masked`]).
pub(crate) fn otp(r: &impl Columns, at: usize) -> Result<OtpRow, StoreError> {
    let code = StoredCode {
        salt: r.opt_bytes(at + 5)?,
        cipher: r.opt_bytes(at + 22)?,
        key_id: r.opt_text(at + 23)?,
    };
    let voice = match r.opt_text(at + 8)? {
        Some(v) => Some(parsed("otps.voice_input", &v, Voice::parse)?),
        None => None,
    };
    let segments = r.int(at + 11)?;
    let record = OtpRecord {
        id: r.int(at)?,
        account_id: r.int(at + 1)?,
        account_seq: r.int(at + 2)?,
        number: E164::parse(&r.text(at + 3)?).ok_or_else(|| unreadable_text("otps.e164"))?,
        template: MessageTemplate::from_stored(&r.text(at + 4)?)
            .ok_or_else(|| unreadable_text("otps.template"))?,
        code: RecordCode::Masked,
        otp_option: parsed("otps.otp_options", &r.text(at + 6)?, OtpOption::parse)?,
        channel: parsed("otps.channel", &r.text(at + 7)?, Channel::parse)?,
        voice,
        length_factor: r.opt_float(at + 9)?,
        company_name: r.opt_text(at + 10)?,
        segments: u32::try_from(segments)
            .map_err(|_| unreadable("otps.segments", &segments.to_string()))?,
        credits_used: r.int(at + 12)?,
        status: parsed("otps.status", &r.text(at + 13)?, OtpStatus::parse)?,
        status_at: r.int(at + 14)?,
        error: r.opt_text(at + 15)?,
        provider_message_id: r.opt_text(at + 16)?,
        created_at: r.int(at + 17)?,
        route: r.opt_text(at + 18)?,
        error_code: r.opt_text(at + 19)?,
        delivered_at: r.opt_int(at + 20)?,
        refunded: r.int(at + 21)? != 0,
        expires_at: r.int(at + 24)?,
        verified_at: r.opt_int(at + 25)?,
        verify_attempts: r.int(at + 26)?,
        resend_of: r.opt_int(at + 27)?,
        fallback: fallback(r, at + 28)?,
    };
    Ok((record, code))
}

/// The verification state of [`VERIFY_COLUMNS`].
pub(crate) fn verify(r: &impl Columns) -> Result<VerifyRow, StoreError> {
    Ok(VerifyRow {
        id: r.int(0)?,
        e164: r.text(1)?,
        salt: r.opt_bytes(2)?,
        hash: r.opt_bytes(3)?,
        expires_at: r.int(4)?,
        attempts: r.int(5)?,
        verified_at: r.opt_int(6)?,
        resend_of: r.opt_int(7)?,
    })
}

/// The ledger entry of [`LEDGER_COLUMNS`].
pub(crate) fn ledger_entry(r: &impl Columns) -> Result<LedgerEntry, StoreError> {
    Ok(LedgerEntry {
        id: r.int(0)?,
        account_id: r.int(1)?,
        kind: r.text(2)?,
        sms_delta: r.int(3)?,
        phone_delta: r.int(4)?,
        otp_id: r.opt_int(5)?,
        note: r.opt_text(6)?,
        created_at: r.int(7)?,
    })
}

/// The account of [`ACCOUNT_COLUMNS`].
pub(crate) fn account(r: &impl Columns) -> Result<Account, StoreError> {
    Ok(Account {
        id: r.int(0)?,
        name: r.text(1)?,
        sms_credits: r.int(2)?,
        phone_credits: r.int(3)?,
        otp_count: r.int(4)?,
        created_at: r.int(5)?,
        disabled_at: r.opt_int(6)?,
        fallback: account_fallback(r.opt_text(7)?, r.opt_int(8)?, r.opt_text(9)?)?,
    })
}

/// An account's default fallback from its columns `fallback_channel,
/// fallback_after_seconds, fallback_voice` (`None`: no default).
pub(crate) fn account_fallback(
    channel: Option<String>,
    after_seconds: Option<i64>,
    voice: Option<String>,
) -> Result<Option<AccountFallback>, StoreError> {
    let Some(channel) = channel else {
        return Ok(None);
    };
    if parsed("accounts.fallback_channel", &channel, Channel::parse)? != Channel::Voice {
        return Err(unreadable("accounts.fallback_channel", &channel));
    }
    let voice = parsed(
        "accounts.fallback_voice",
        voice.as_deref().unwrap_or_default(),
        Voice::parse,
    )?;
    let after = after_seconds.unwrap_or_default();
    AccountFallback::new(voice, after)
        .map(Some)
        .map_err(|_| unreadable("accounts.fallback_after_seconds", &after.to_string()))
}

/// The API key of [`KEY_COLUMNS`]. Scopes a newer version wrote grant
/// nothing here ([`Scopes::from_stored`]), on purpose: that is not corruption.
pub(crate) fn key(r: &impl Columns) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: r.int(0)?,
        key_id: r.text(1)?,
        account_id: r.int(2)?,
        secret_hash: r.bytes(3)?,
        label: r.opt_text(4)?,
        created_at: r.int(5)?,
        revoked_at: r.opt_int(6)?,
        last_used: r.opt_int(7)?,
        scopes: Scopes::from_stored(&r.text(8)?),
        account_disabled: r.opt_int(9)?.is_some(),
    })
}

/// What a webhook claim reads of a delivery `d`, its webhook `w` and its
/// OTP `o` (joined, in PostgreSQL, to the claiming update's `RETURNING`
/// under the name `d`); [`webhook_claim`] maps them.
pub(crate) const CLAIM_COLUMNS: &str = "d.id, d.account_id, d.event, d.otp_status, d.occurred_at, \
     d.attempts, d.created_at, w.url, w.secret_salt, w.secret_cipher, w.secret_key_id, \
     o.id, o.account_seq, o.e164, o.channel, o.created_at, o.expires_at, o.error_code, \
     d.credits, d.threshold, d.sms_credits, d.phone_credits";

/// What a list of webhook deliveries reads; [`webhook_delivery`] maps them.
pub(crate) const DELIVERY_COLUMNS: &str = "id, otp_id, event, otp_status, occurred_at, state, \
     next_attempt_at, created_at, finished_at";

/// A claimed delivery before its webhook's secret is opened.
pub(crate) struct SealedClaim {
    pub delivery: ClaimedDelivery,
    salt: Vec<u8>,
    cipher: Vec<u8>,
    key_id: String,
}

impl SealedClaim {
    /// The delivery with its secret opened (`None` when its key is gone).
    pub fn open(mut self, vault: &CodeVault) -> ClaimedDelivery {
        self.delivery.secret = open_secret(
            vault,
            self.delivery.account_id,
            &self.salt,
            &self.cipher,
            &self.key_id,
        );
        self.delivery
    }
}

/// The claimed delivery of [`CLAIM_COLUMNS`]; `None` when its webhook or
/// its OTP is gone (nowhere to send it, nothing to say).
pub(crate) fn webhook_claim(r: &impl Columns) -> Result<Option<SealedClaim>, StoreError> {
    let (Some(url), Some(otp_id)) = (r.opt_text(7)?, r.opt_int(11)?) else {
        return Ok(None);
    };
    let balance = match r.opt_text(18)? {
        Some(credits) => Some(BalanceEvent {
            credits: Credits::parse(&credits),
            threshold: r.int(19)?,
            sms_credits: r.int(20)?,
            phone_credits: r.int(21)?,
        }),
        None => None,
    };
    let delivery = ClaimedDelivery {
        id: r.int(0)?,
        account_id: r.int(1)?,
        event: WebhookEvent::stored(&r.text(2)?),
        otp_status: r.text(3)?,
        occurred_at: r.int(4)?,
        attempt: r.int(5)?,
        created_at: r.int(6)?,
        url,
        secret: None,
        otp: EventOtp {
            id: otp_id,
            account_seq: r.int(12)?,
            number: E164::parse(&r.text(13)?).ok_or_else(|| unreadable_text("otps.e164"))?,
            channel: parsed("otps.channel", &r.text(14)?, Channel::parse)?,
            created_at: r.int(15)?,
            expires_at: r.int(16)?,
            error_code: r.opt_text(17)?,
        },
        balance,
    };
    Ok(Some(SealedClaim {
        delivery,
        salt: r.bytes(8)?,
        cipher: r.bytes(9)?,
        key_id: r.text(10)?,
    }))
}

/// The delivery of [`DELIVERY_COLUMNS`], without its attempts.
pub(crate) fn webhook_delivery(r: &impl Columns) -> Result<WebhookDelivery, StoreError> {
    let state = DeliveryState::parse(&r.text(5)?);
    Ok(WebhookDelivery {
        id: r.int(0)?,
        otp_id: r.int(1)?,
        event: WebhookEvent::stored(&r.text(2)?),
        otp_status: r.text(3)?,
        occurred_at: r.int(4)?,
        state,
        next_attempt_at: state.next_attempt(r.int(6)?),
        created_at: r.int(7)?,
        finished_at: r.opt_int(8)?,
        attempts: Vec::new(),
    })
}

/// The forms columns of a part's id: (text, hex read in decimal, decimal
/// read in hex).
pub(crate) fn id_columns(id: &str) -> (String, Option<String>, Option<String>) {
    let f = smpp::receipt::ids::IdForms::of(id);
    (f.text, f.hex_as_decimal, f.decimal_as_hex)
}

/// The fallback whose columns (`fallback_channel, fallback_voice,
/// fallback_due_at, fallback_credits, fallback_state, fallback_at`, the end
/// of [`OTP_COLUMNS`]) start at column `at` (`None`: the send
/// asked for none).
pub(crate) fn fallback(r: &impl Columns, at: usize) -> Result<Option<Fallback>, StoreError> {
    let Some(channel) = r.opt_text(at)? else {
        return Ok(None);
    };
    Ok(Some(Fallback {
        channel: parsed("otps.fallback_channel", &channel, Channel::parse)?,
        voice: parsed(
            "otps.fallback_voice",
            &r.opt_text(at + 1)?.unwrap_or_default(),
            Voice::parse,
        )?,
        due_at: r.int(at + 2)?,
        credits: r.int(at + 3)?,
        state: parsed(
            "otps.fallback_state",
            &r.opt_text(at + 4)?.unwrap_or_default(),
            FallbackState::parse,
        )?,
        at: r.opt_int(at + 5)?,
    }))
}

/// A due fallback: the row of [`crate::fallback::DUE_COLUMNS`].
pub(crate) fn fallback_due(r: &impl Columns) -> Result<Due, StoreError> {
    Ok(Due {
        id: r.int(0)?,
        account_id: r.int(1)?,
        status: parsed("otps.status", &r.text(2)?, OtpStatus::parse)?,
        expires_at: r.int(3)?,
        verified_at: r.opt_int(4)?,
        credits: r.int(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_word_is_an_error_naming_its_column_and_value() {
        let e = parsed("otps.channel", "fax", Channel::parse).unwrap_err();
        assert!(
            matches!(&e, StoreError::Internal(m) if m.contains("otps.channel") && m.contains("\"fax\"")),
            "{e}"
        );
        assert_eq!(
            parsed("otps.status", "sent", OtpStatus::parse).unwrap(),
            OtpStatus::Sent
        );
    }
}
