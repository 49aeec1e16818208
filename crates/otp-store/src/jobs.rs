//! Finishing a delivery job, and refunds: one decision both backends run
//! their SQL around.
//!
//! The finishing transaction loads the OTP of each result ([`OtpState`];
//! SQLite: in the writer, PostgreSQL: `FOR NO KEY UPDATE`), [`finish`] decides what
//! the result changes, and the backend writes that ([`Finish`]). Results of
//! one batch are decided in order, each on the state the ones before it left,
//! so a batch that finishes one OTP twice refunds it at most once. A result
//! whose OTP is gone (purged) still finishes its job and records its parts
//! and event; there is no status to move and nothing to refund.
//!
//! The rules:
//! - `Sent`: the job is done; a queued OTP is now sent (a receipt that
//!   overtook the record is never moved back from); its parts are recorded,
//!   each taking its id over from any older part and clearing its state.
//! - `Retry`: the job waits for `next_attempt_at` in the state it had (a job
//!   another report already finished is not queued again).
//! - `Failed`: the job failed; an OTP still in flight is now failed, and its
//!   credits go back to the account once ([`OtpState::refund`]).
//!
//! Each result records one history event and, when sent or failed, a webhook
//! when the OTP's account has one ([`OtpState::has_webhook`]).
//!
//! The job of an SMS whose fallback call was started carries the call
//! ([`crate::fallback`]); its outcome leaves the OTP's status (the SMS's) as
//! it is and moves the fallback instead: `Sent` to `sent`, `Failed` to
//! `failed`, or to `cancelled` when the code was verified meanwhile (the
//! worker did not place the call, or cancelled it while it rang), both
//! giving the reserved phone credits back once.

use otp_domain::channel::Channel;

use crate::fallback::{FallbackState, Move};
use crate::rows::{Columns, id_columns, parsed};
use crate::webhooks::WebhookEvent;
use crate::{AccountId, JobOutcome, JobResult, Micros, OtpStatus, StoreError};

/// The columns of [`OtpState`], read `FROM otps o`. The last one counts the
/// webhooks of the OTP's account (its key, so 0 or 1): a webhook event is
/// only written for an account that has one, so finishing a job or applying
/// a receipt decides none without it and runs no webhook insert.
pub(crate) const OTP_STATE_COLUMNS: &str = "o.id, o.account_id, o.status, o.refunded, o.channel, \
     o.credits_used, o.fallback_state, o.fallback_credits, \
     (SELECT COUNT(*) FROM webhooks w WHERE w.account_id = o.account_id)";

/// How many columns [`OTP_STATE_COLUMNS`] is: a column selected after them is at this index.
pub(crate) const OTP_STATE_WIDTH: usize = 9;

/// What finishing a job, or a receipt, needs to know of an OTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OtpState {
    pub id: i64,
    pub account_id: AccountId,
    pub status: OtpStatus,
    pub refunded: bool,
    pub channel: Channel,
    pub credits_used: i64,
    /// Where its fallback call is (`None`: the send asked for none).
    pub fallback: Option<FallbackState>,
    /// The phone credits reserved for the call.
    pub fallback_credits: i64,
    /// Whether its account has a webhook: only then does a status move call one.
    pub has_webhook: bool,
}

impl OtpState {
    /// The state of [`OTP_STATE_COLUMNS`].
    pub fn from_row(r: &impl Columns) -> Result<OtpState, StoreError> {
        Ok(OtpState {
            id: r.int(0)?,
            account_id: r.int(1)?,
            status: parsed("otps.status", &r.text(2)?, OtpStatus::parse)?,
            refunded: r.int(3)? != 0,
            channel: parsed("otps.channel", &r.text(4)?, Channel::parse)?,
            credits_used: r.int(5)?,
            fallback: match r.opt_text(6)? {
                Some(f) => Some(parsed("otps.fallback_state", &f, FallbackState::parse)?),
                None => None,
            },
            fallback_credits: r.int(7)?,
            has_webhook: r.int(8)? != 0,
        })
    }

    /// Whether its job now carries the fallback call.
    pub fn calling(&self) -> bool {
        self.channel == Channel::Text && self.fallback == Some(FallbackState::Started)
    }

    /// Whether it is still in flight (queued or sent): only then does a
    /// failure or a receipt move it.
    pub fn in_flight(&self) -> bool {
        matches!(self.status, OtpStatus::Queued | OtpStatus::Sent)
    }

    /// Its credits back to the account, with `note` in the ledger; `None`
    /// when they went back before.
    pub fn refund(&self, note: String) -> Option<Refund> {
        if self.refunded {
            return None;
        }
        let (sms, phone) = match self.channel {
            Channel::Text => (self.credits_used, 0),
            Channel::Voice => (0, self.credits_used),
        };
        Some(Refund {
            otp_id: self.id,
            account_id: self.account_id,
            sms,
            phone,
            note,
        })
    }
}

/// Credits going back to an account: the OTP is marked refunded (only if it
/// was not, so a refund happens once), the balances grow and the ledger gets
/// a `refund` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refund {
    pub otp_id: i64,
    pub account_id: AccountId,
    pub sms: i64,
    pub phone: i64,
    pub note: String,
}

/// One message part the carrier took, as `provider_messages` keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    pub route: String,
    pub message_id: String,
    pub part: i64,
    pub parts: i64,
    /// The id's forms ([`id_columns`]).
    pub text: String,
    pub hex_as_decimal: Option<String>,
    pub decimal_as_hex: Option<String>,
}

/// What one finished attempt writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finish {
    pub job_id: i64,
    pub otp_id: i64,
    pub at: Micros,
    /// The job's new state (`done`, `failed`); `None`: it keeps its state.
    pub job_state: Option<&'static str>,
    /// The job's and the OTP's `last_error` / `error` (`None` clears them).
    pub error: Option<String>,
    /// When the job is due again; `None`: unchanged.
    pub next_attempt_at: Option<Micros>,
    /// The OTP's new status (its `status_at` becomes `at`); `None`: unchanged.
    pub status: Option<OtpStatus>,
    /// The first part's id and the route, when the carrier gave them
    /// (`None` keeps what the OTP has).
    pub provider_message_id: Option<String>,
    pub route: Option<String>,
    pub parts: Vec<Part>,
    /// The history event: `sent`, `retry` or `failed`, with its detail.
    pub event: &'static str,
    pub detail: String,
    pub webhook: Option<WebhookEvent>,
    pub refund: Option<Refund>,
    /// The fallback call's move, when the job carried it.
    pub fallback: Option<Move>,
}

/// Decides what `result` changes for an OTP in state `otp` (`None`: gone),
/// and the state it leaves.
pub(crate) fn finish(otp: Option<&OtpState>, result: &JobResult) -> (Finish, Option<OtpState>) {
    let mut f = Finish {
        job_id: result.job_id,
        otp_id: result.otp_id,
        at: result.at,
        job_state: None,
        error: None,
        next_attempt_at: None,
        status: None,
        provider_message_id: None,
        route: None,
        parts: Vec::new(),
        event: "",
        detail: String::new(),
        webhook: None,
        refund: None,
        fallback: None,
    };
    if let Some(o) = otp.filter(|o| o.calling()) {
        return finish_call(o, result, f);
    }
    match &result.outcome {
        JobOutcome::Sent { route, message_ids } => {
            f.job_state = Some("done");
            f.status = otp
                .filter(|o| o.status == OtpStatus::Queued)
                .map(|_| OtpStatus::Sent);
            f.provider_message_id = message_ids.first().cloned();
            f.route = route.clone();
            let parts = message_ids.len() as i64;
            f.parts = message_ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    let (text, hex_as_decimal, decimal_as_hex) = id_columns(id);
                    Part {
                        route: route.clone().unwrap_or_default(),
                        message_id: id.clone(),
                        part: i as i64 + 1,
                        parts,
                        text,
                        hex_as_decimal,
                        decimal_as_hex,
                    }
                })
                .collect();
            f.event = "sent";
            f.detail = format!(
                "{} part(s) accepted by the carrier",
                message_ids.len().max(1)
            );
        }
        JobOutcome::Retry {
            next_attempt_at,
            error,
        } => {
            f.error = Some(error.clone());
            f.next_attempt_at = Some(*next_attempt_at);
            f.event = "retry";
            f.detail = error.clone();
        }
        JobOutcome::Failed { error } => {
            f.job_state = Some("failed");
            f.error = Some(error.clone());
            f.status = otp.filter(|o| o.in_flight()).map(|_| OtpStatus::Failed);
            f.event = "failed";
            f.detail = error.clone();
            f.refund = otp.and_then(|o| o.refund("never handed to a carrier".into()));
        }
    }
    f.webhook = WebhookEvent::for_job(f.event).filter(|_| otp.is_some_and(|o| o.has_webhook));
    let next = otp.map(|o| OtpState {
        status: f.status.unwrap_or(o.status),
        refunded: o.refunded || f.refund.is_some(),
        ..o.clone()
    });
    (f, next)
}

/// What the fallback call's outcome changes: the job, the history and the
/// fallback, never the OTP's status.
fn finish_call(otp: &OtpState, result: &JobResult, mut f: Finish) -> (Finish, Option<OtpState>) {
    let to = match &result.outcome {
        JobOutcome::Sent { .. } => {
            f.job_state = Some("done");
            f.event = "fallback_sent";
            f.detail = "the call was answered and the code read out".into();
            Some(FallbackState::Sent)
        }
        JobOutcome::Retry {
            next_attempt_at,
            error,
        } => {
            f.error = Some(error.clone());
            f.next_attempt_at = Some(*next_attempt_at);
            f.event = "retry";
            f.detail = error.clone();
            None
        }
        JobOutcome::Failed { error } => {
            f.job_state = Some("failed");
            f.error = Some(error.clone());
            f.event = "fallback_failed";
            f.detail = error.clone();
            Some(if otp.status == OtpStatus::Verified {
                FallbackState::Cancelled
            } else {
                FallbackState::Failed
            })
        }
    };
    f.fallback = to.map(|to| Move {
        otp_id: otp.id,
        account_id: otp.account_id,
        from: FallbackState::Started,
        to,
        phone: if to == FallbackState::Sent {
            0
        } else {
            otp.fallback_credits
        },
        note: match to {
            FallbackState::Cancelled => "the code was verified before the call was answered".into(),
            _ => "the fallback call reached no one".into(),
        },
    });
    let next = OtpState {
        fallback: to.or(otp.fallback),
        ..otp.clone()
    };
    (f, Some(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: OtpStatus) -> OtpState {
        OtpState {
            id: 7,
            account_id: 3,
            status,
            refunded: false,
            channel: Channel::Text,
            credits_used: 2,
            fallback: None,
            fallback_credits: 0,
            has_webhook: true,
        }
    }

    fn result(outcome: JobOutcome) -> JobResult {
        JobResult {
            job_id: 11,
            otp_id: 7,
            outcome,
            at: 500,
        }
    }

    fn failed() -> JobResult {
        result(JobOutcome::Failed {
            error: "no route".into(),
        })
    }

    #[test]
    fn a_failure_fails_the_otp_and_refunds_its_credits_once() {
        let (f, after) = finish(Some(&state(OtpStatus::Queued)), &failed());
        assert_eq!(f.job_state, Some("failed"));
        assert_eq!(f.status, Some(OtpStatus::Failed));
        assert_eq!(f.webhook, Some(WebhookEvent::Failed));
        let unhooked = OtpState {
            has_webhook: false,
            ..state(OtpStatus::Queued)
        };
        let (quiet, _) = finish(Some(&unhooked), &failed());
        assert_eq!(
            (quiet.webhook, quiet.status),
            (None, Some(OtpStatus::Failed)),
            "an account without a webhook gets no webhook event, and the rest stays"
        );
        let refund = f.refund.expect("a refund");
        assert_eq!(
            (refund.account_id, refund.sms, refund.phone),
            (3, 2, 0),
            "text credits go back as SMS credits"
        );
        let (again, _) = finish(after.as_ref(), &failed());
        assert_eq!(again.refund, None, "the second failure refunds nothing");
        assert_eq!(again.status, None, "a failed OTP is not in flight");
    }

    #[test]
    fn a_voice_otp_gets_phone_credits_back() {
        let voice = OtpState {
            channel: Channel::Voice,
            ..state(OtpStatus::Sent)
        };
        let refund = finish(Some(&voice), &failed()).0.refund.unwrap();
        assert_eq!((refund.sms, refund.phone), (0, 2));
    }

    #[test]
    fn a_failure_after_a_final_receipt_keeps_the_status() {
        let (f, _) = finish(Some(&state(OtpStatus::Delivered)), &failed());
        assert_eq!((f.status, f.event), (None, "failed"));
    }

    #[test]
    fn a_send_moves_only_a_queued_otp_and_records_every_part() {
        let sent = result(JobOutcome::Sent {
            route: Some("smsc".into()),
            message_ids: vec!["0x1F".into(), "20".into()],
        });
        let (f, after) = finish(Some(&state(OtpStatus::Queued)), &sent);
        assert_eq!(
            (f.job_state, f.status, f.refund.clone()),
            (Some("done"), Some(OtpStatus::Sent), None)
        );
        assert_eq!(after.unwrap().status, OtpStatus::Sent);
        assert_eq!(f.provider_message_id.as_deref(), Some("0x1F"));
        let parts: Vec<(i64, i64, &str)> = f
            .parts
            .iter()
            .map(|p| (p.part, p.parts, p.route.as_str()))
            .collect();
        assert_eq!(parts, [(1, 2, "smsc"), (2, 2, "smsc")]);
        assert_eq!(f.detail, "2 part(s) accepted by the carrier");
        assert_eq!(f.webhook, Some(WebhookEvent::Sent));
        let (overtaken, _) = finish(Some(&state(OtpStatus::Delivered)), &sent);
        assert_eq!(overtaken.status, None, "a receipt that came first stays");
    }

    #[test]
    fn a_retry_schedules_the_next_attempt_and_changes_nothing_else() {
        let retry = result(JobOutcome::Retry {
            next_attempt_at: 9_000,
            error: "throttled".into(),
        });
        let (f, after) = finish(Some(&state(OtpStatus::Queued)), &retry);
        assert_eq!(f.next_attempt_at, Some(9_000));
        assert_eq!((f.job_state, f.status), (None, None));
        assert_eq!((f.event, f.detail.as_str()), ("retry", "throttled"));
        assert_eq!((f.webhook, f.refund), (None, None));
        assert_eq!(after, Some(state(OtpStatus::Queued)));
    }

    #[test]
    fn a_result_for_an_otp_that_is_gone_finishes_the_job_and_moves_nothing() {
        let (f, after) = finish(None, &failed());
        assert_eq!((f.job_state, f.event), (Some("failed"), "failed"));
        assert_eq!((f.status, f.refund, after), (None, None, None));
        assert_eq!(f.webhook, None, "no account to call");
    }

    #[test]
    fn the_fallback_call_moves_the_fallback_and_never_the_sms_status() {
        let calling = OtpState {
            status: OtpStatus::Undeliverable,
            refunded: true,
            fallback: Some(FallbackState::Started),
            fallback_credits: 1,
            ..state(OtpStatus::Undeliverable)
        };
        let sent = result(JobOutcome::Sent {
            route: Some("sip".into()),
            message_ids: vec!["call-1".into()],
        });
        let (f, after) = finish(Some(&calling), &sent);
        let moved = f.fallback.clone().expect("a move");
        assert_eq!(
            (f.status, f.refund.clone(), f.event),
            (None, None, "fallback_sent")
        );
        assert_eq!((moved.to, moved.phone), (FallbackState::Sent, 0));
        assert!(f.parts.is_empty() && f.webhook.is_none());
        assert!(
            !after.unwrap().calling(),
            "a finished call is not finished again"
        );

        let (f, _) = finish(Some(&calling), &failed());
        let moved = f.fallback.expect("a move");
        assert_eq!(
            (moved.to, moved.phone, f.refund),
            (FallbackState::Failed, 1, None)
        );

        let verified = OtpState {
            status: OtpStatus::Verified,
            ..calling
        };
        let (f, _) = finish(Some(&verified), &failed());
        assert_eq!(f.fallback.unwrap().to, FallbackState::Cancelled);
    }
}
