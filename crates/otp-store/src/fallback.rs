//! Channel fallback: an SMS send that asked for it ([`NewOtp::fallback`])
//! becomes a call reading the same code when the SMS is not verified in
//! time, or comes back undeliverable, rejected, expired or failed sooner.
//!
//! - Accepting the send reserves the call's phone credits in the same debit
//!   as the SMS ([`charge`]), so a send that cannot pay for both is refused
//!   like any send without credit, and writes the fallback `pending`.
//! - An account may have a default call ([`AccountFallback`], on the account
//!   row): a text send that does not say ([`SendFallback::AccountDefault`])
//!   gets it, resolved by the accepting transaction from the account row it
//!   reads for the balances ([`SendFallback::resolve`]), so a default set
//!   through one node is used by the next send on every node.
//! - [`Store::start_fallbacks`](crate::Store::start_fallbacks) (run every
//!   delivery poll) takes the pending fallbacks that are due under their row
//!   lock (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: the writer) and
//!   decides each one ([`Due::step`]): a code still live is called (the
//!   send's delivery job, finished as an SMS, is queued again on the voice
//!   channel: `started`, history event and webhook `fallback_started`), a
//!   code verified or expired gets its reserved credits back (`refunded`).
//!   The SMS's job must have finished first, so a call never races the SMS
//!   attempt on the same job.
//! - Verifying a code cancels the pending fallbacks of its chain and gives
//!   their credits back in the verifying transaction, so once a verification
//!   has committed no node starts the call.
//! - The call's outcome moves `started` to `sent`, or to `failed` (credits
//!   back), or to `cancelled` when the code was verified before the call was
//!   placed (credits back; see `jobs::finish`).
//!
//! Every move is conditional on the state it leaves ([`Move`]), so each
//! reserved credit goes back at most once whichever node or path gets there.

use otp_domain::channel::{Channel, Voice};
use otp_domain::credits::Cost;

use crate::{AccountId, Micros, OtpRecord, OtpStatus};

/// The shortest and longest wait before the call, in seconds.
pub const AFTER_SECONDS_RANGE: (i64, i64) = (10, 3600);
/// The wait when a send does not say.
pub const DEFAULT_AFTER_SECONDS: i64 = 60;

/// A send's fallback call, as it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewFallback {
    /// The voice that reads the code.
    pub voice: Voice,
    /// When the call is due if the SMS is not verified by then.
    pub due_at: Micros,
    /// Phone credits reserved for the call.
    pub phone_credits: i64,
}

/// What a send says about a fallback call ([`NewOtp::fallback`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFallback {
    /// No call: a voice send, a send that opted out (`fallback_channel:
    /// "none"`), or one whose code a call cannot read.
    None,
    /// The call the send asked for itself; the account's default is not read.
    Call(NewFallback),
    /// The account's default call, if it has one when the accepting
    /// transaction reads the account row; `phone_credits` is what that call
    /// reserves.
    AccountDefault { phone_credits: i64 },
}

impl SendFallback {
    /// The call a send accepted at `created_at` writes, given its account's
    /// default as the accepting transaction read it.
    pub fn resolve(
        self,
        created_at: Micros,
        default: Option<&AccountFallback>,
    ) -> Option<NewFallback> {
        match self {
            SendFallback::None => None,
            SendFallback::Call(call) => Some(call),
            SendFallback::AccountDefault { phone_credits } => {
                default.map(|d| d.call(created_at, phone_credits))
            }
        }
    }

    /// The phone credits the send's call reserves (none without a call).
    pub fn phone_credits(&self) -> i64 {
        match self {
            SendFallback::None => 0,
            SendFallback::Call(call) => call.phone_credits,
            SendFallback::AccountDefault { phone_credits } => *phone_credits,
        }
    }
}

/// An account's default fallback call: its text sends that do not give
/// `fallback_channel` get it (the call is by voice, the one fallback channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountFallback {
    /// The voice that reads the code.
    pub voice: Voice,
    /// Seconds after the send that the call is due, within
    /// [`AFTER_SECONDS_RANGE`].
    pub after_seconds: i64,
}

impl AccountFallback {
    /// The call this choice gives a send accepted at `created_at`, reserving
    /// `phone_credits`.
    pub fn call(&self, created_at: Micros, phone_credits: i64) -> NewFallback {
        NewFallback {
            voice: self.voice,
            due_at: created_at + self.after_seconds * 1_000_000,
            phone_credits,
        }
    }

    /// A default calling after `after_seconds`, or why it cannot be one.
    pub fn new(voice: Voice, after_seconds: i64) -> Result<AccountFallback, String> {
        let (min, max) = AFTER_SECONDS_RANGE;
        if (min..=max).contains(&after_seconds) {
            Ok(AccountFallback {
                voice,
                after_seconds,
            })
        } else {
            Err(format!(
                "the wait before the call must be between {min} and {max} seconds"
            ))
        }
    }

    /// The stored columns (`fallback_channel, fallback_after_seconds,
    /// fallback_voice`) of a default, or of none.
    pub(crate) fn columns(
        default: Option<&AccountFallback>,
    ) -> (Option<&'static str>, Option<i64>, Option<&'static str>) {
        match default {
            Some(d) => (
                Some(Channel::Voice.as_str()),
                Some(d.after_seconds),
                Some(d.voice.as_str()),
            ),
            None => (None, None, None),
        }
    }
}

/// What accepting a send of cost `cost` debits when it writes `fallback`:
/// its own cost and the phone credits the call reserves.
pub fn charge(cost: Cost, fallback: Option<&NewFallback>) -> Cost {
    Cost {
        sms: cost.sms,
        phone: cost.phone + fallback.map_or(0, |f| f.phone_credits),
    }
}

/// Where a fallback call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FallbackState {
    /// Waiting for its due time, with its credits reserved.
    Pending,
    /// The call is queued or ringing.
    Started,
    /// The call was answered and the code read out.
    Sent,
    /// The call reached no one; its credits went back.
    Failed,
    /// No call was needed (the code was verified or expired first); its
    /// credits went back.
    Refunded,
    /// The code was verified after the call was queued and before it was
    /// placed; it was not placed and its credits went back.
    Cancelled,
}

impl FallbackState {
    pub const ALL: [FallbackState; 6] = [
        FallbackState::Pending,
        FallbackState::Started,
        FallbackState::Sent,
        FallbackState::Failed,
        FallbackState::Refunded,
        FallbackState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FallbackState::Pending => "pending",
            FallbackState::Started => "started",
            FallbackState::Sent => "sent",
            FallbackState::Failed => "failed",
            FallbackState::Refunded => "refunded",
            FallbackState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        FallbackState::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// A stored OTP's fallback call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback {
    pub channel: Channel,
    pub voice: Voice,
    pub due_at: Micros,
    /// Phone credits reserved for it.
    pub credits: i64,
    pub state: FallbackState,
    /// When it last changed state (`None` while pending).
    pub at: Option<Micros>,
}

impl OtpRecord {
    /// The record as the voice channel delivers it: an SMS whose fallback
    /// call was started is claimed by the voice worker, and reads as a voice
    /// OTP in the fallback's voice. Any other record is left as it is.
    pub(crate) fn into_delivered_form(mut self) -> OtpRecord {
        if let (Channel::Text, Some(f)) = (self.channel, self.fallback)
            && f.state == FallbackState::Started
        {
            self.channel = Channel::Voice;
            self.voice = Some(f.voice);
            self.length_factor = None;
        }
        self
    }
}

/// What the scan reads of a due fallback, `FROM otps o`.
pub(crate) const DUE_COLUMNS: &str =
    "o.id, o.account_id, o.status, o.expires_at, o.verified_at, o.fallback_credits";

/// The scan's condition on `otps o` and its job `delivery_jobs j`, with the
/// time as `{now}`: pending, and due (its time came, the SMS came back
/// failed, or the code expired); a call also waits for the SMS's job to have
/// finished.
pub(crate) fn due_filter(now: &str) -> String {
    format!(
        "o.fallback_state = 'pending' AND (o.expires_at <= {now} OR o.verified_at IS NOT NULL \
         OR ((o.fallback_due_at <= {now} \
         OR o.status IN ('undeliverable', 'rejected', 'expired', 'failed')) \
         AND j.state IN ('done', 'failed')))"
    )
}

/// A pending fallback the scan found due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Due {
    pub id: i64,
    pub account_id: AccountId,
    pub status: OtpStatus,
    pub expires_at: Micros,
    pub verified_at: Option<Micros>,
    pub credits: i64,
}

impl Due {
    /// Call, or give the credits back when the code can no longer be used.
    pub fn step(&self, now: Micros) -> Step {
        if self.verified_at.is_some() || self.status == OtpStatus::Verified {
            Step::Refund(self.refund("the code was verified; no call needed"))
        } else if now >= self.expires_at {
            Step::Refund(self.refund("the code expired before the call was due"))
        } else {
            let detail = if self.status.is_failure() {
                format!("the SMS came back {}; calling", self.status.as_str())
            } else {
                "the SMS was not verified in time; calling".to_owned()
            };
            Step::Start {
                started: Move {
                    otp_id: self.id,
                    account_id: self.account_id,
                    from: FallbackState::Pending,
                    to: FallbackState::Started,
                    phone: 0,
                    note: String::new(),
                },
                detail,
            }
        }
    }

    fn refund(&self, note: &str) -> Move {
        Move {
            otp_id: self.id,
            account_id: self.account_id,
            from: FallbackState::Pending,
            to: FallbackState::Refunded,
            phone: self.credits,
            note: note.to_owned(),
        }
    }
}

/// What the scan does with a due fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Queue the call on the send's job; record `fallback_started` with
    /// `detail`.
    Start { started: Move, detail: String },
    /// Give the reserved credits back.
    Refund(Move),
}

/// A fallback moving from one state to another, written only if it is still
/// in `from` (so it happens once); `phone` credits go back to the account
/// with `note` in the ledger and the history when it is not zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Move {
    pub otp_id: i64,
    pub account_id: AccountId,
    pub from: FallbackState,
    pub to: FallbackState,
    pub phone: i64,
    pub note: String,
}

impl Move {
    /// The history event a move records, if any (a start records its own).
    pub fn event(&self) -> Option<&'static str> {
        match self.to {
            FallbackState::Refunded => Some("fallback_refunded"),
            FallbackState::Cancelled => Some("fallback_cancelled"),
            _ => None,
        }
    }
}

/// What a verification writes: each pending fallback of the chain given
/// back.
pub(crate) fn cancelled_by_verification(otp_id: i64, account_id: AccountId, credits: i64) -> Move {
    Move {
        otp_id,
        account_id,
        from: FallbackState::Pending,
        to: FallbackState::Refunded,
        phone: credits,
        note: "the code was verified; no call needed".to_owned(),
    }
}

/// How many due fallbacks a scan started and gave back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FallbackScan {
    pub started: usize,
    pub refunded: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(status: OtpStatus) -> Due {
        Due {
            id: 4,
            account_id: 2,
            status,
            expires_at: 1_000,
            verified_at: None,
            credits: 1,
        }
    }

    #[test]
    fn a_live_code_is_called_and_says_why() {
        let Step::Start { started, detail } = due(OtpStatus::Undeliverable).step(500) else {
            panic!("a call");
        };
        assert_eq!(
            (started.from, started.to, started.phone),
            (FallbackState::Pending, FallbackState::Started, 0)
        );
        assert_eq!(detail, "the SMS came back undeliverable; calling");
        let Step::Start { detail, .. } = due(OtpStatus::Delivered).step(500) else {
            panic!("a call");
        };
        assert_eq!(detail, "the SMS was not verified in time; calling");
    }

    #[test]
    fn a_verified_or_expired_code_gets_its_reserved_credits_back() {
        let verified = Due {
            verified_at: Some(400),
            ..due(OtpStatus::Verified)
        };
        for (d, now) in [(verified, 500), (due(OtpStatus::Sent), 1_000)] {
            let Step::Refund(m) = d.step(now) else {
                panic!("a refund");
            };
            assert_eq!(
                (m.to, m.phone, m.event()),
                (FallbackState::Refunded, 1, Some("fallback_refunded"))
            );
        }
    }

    #[test]
    fn a_send_gets_its_own_call_or_its_accounts_default_or_none() {
        let default = AccountFallback::new(Voice::NpBinod, 45).unwrap();
        let own = NewFallback {
            voice: Voice::NpRija,
            due_at: 7,
            phone_credits: 2,
        };
        let asks = SendFallback::AccountDefault { phone_credits: 1 };
        assert_eq!(
            asks.resolve(1_000, Some(&default)),
            Some(NewFallback {
                voice: Voice::NpBinod,
                due_at: 1_000 + 45_000_000,
                phone_credits: 1
            })
        );
        assert_eq!(asks.resolve(1_000, None), None, "no default, no call");
        assert_eq!(
            SendFallback::Call(own).resolve(1_000, Some(&default)),
            Some(own)
        );
        assert_eq!(SendFallback::None.resolve(1_000, Some(&default)), None);
        let cost = Cost { sms: 1, phone: 0 };
        assert_eq!(charge(cost, Some(&own)), Cost { sms: 1, phone: 2 });
        assert!(AccountFallback::new(Voice::NpRija, 9).is_err());
        assert!(AccountFallback::new(Voice::NpRija, 3601).is_err());
    }

    #[test]
    fn fallback_states_read_back_from_their_names() {
        let states = FallbackState::ALL.map(|s| FallbackState::parse(s.as_str()));
        assert!(states.iter().all(Option::is_some));
        assert_eq!(FallbackState::parse("ringing"), None);
    }
}
