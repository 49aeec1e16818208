//! The credit decision for a batch of sends, shared by both backends.
//!
//! The writer loads the balances of the accounts a batch touches (inside the
//! batch's transaction, locked where the backend needs it), then asks
//! [`Balances::take`] for each send in arrival order. A send is accepted only if
//! its account can pay for it at that point, so 200 concurrent sends against 100
//! credits accept exactly 100 whichever batches they land in.

use std::collections::HashMap;

use crate::{AcceptError, AccountId, NewOtp};

/// An account's balance as the batch goes along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    pub sms: i64,
    pub phone: i64,
    pub otp_count: i64,
    /// Whether any send of this batch changed it (so it must be written back).
    pub dirty: bool,
}

/// Balances of the accounts one batch touches.
#[derive(Debug, Default)]
pub struct Balances {
    map: HashMap<AccountId, Balance>,
}

/// What one accepted send takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub account_seq: i64,
    pub sms_left: i64,
    pub phone_left: i64,
}

impl Balances {
    pub fn insert(&mut self, account: AccountId, sms: i64, phone: i64, otp_count: i64) {
        self.map.insert(
            account,
            Balance {
                sms,
                phone,
                otp_count,
                dirty: false,
            },
        );
    }

    /// Debits the send's cost if the account can pay, and numbers it.
    pub fn take(&mut self, otp: &NewOtp) -> Result<Taken, AcceptError> {
        let balance = self
            .map
            .get_mut(&otp.account_id)
            .ok_or(AcceptError::AccountNotFound)?;
        if balance.sms < otp.cost.sms || balance.phone < otp.cost.phone {
            return Err(AcceptError::InsufficientCredits {
                sms_credits: balance.sms,
                phone_credits: balance.phone,
            });
        }
        balance.sms -= otp.cost.sms;
        balance.phone -= otp.cost.phone;
        balance.otp_count += 1;
        balance.dirty = true;
        Ok(Taken {
            account_seq: balance.otp_count,
            sms_left: balance.sms,
            phone_left: balance.phone,
        })
    }

    /// The accounts whose balance changed, to be written back once each.
    pub fn changed(&self) -> impl Iterator<Item = (AccountId, &Balance)> {
        self.map
            .iter()
            .filter(|(_, b)| b.dirty)
            .map(|(id, b)| (*id, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otp_domain::channel::{Channel, OtpOption};
    use otp_domain::credits::Cost;

    fn send(account: AccountId, sms: i64, phone: i64) -> NewOtp {
        NewOtp {
            account_id: account,
            api_key_id: None,
            phone_number: "9851023212".into(),
            e164: "+9779851023212".into(),
            template: "{otp}".into(),
            otp: "123456".into(),
            otp_option: OtpOption::Generated,
            channel: Channel::Text,
            voice: None,
            length_factor: None,
            company_name: None,
            segments: 1,
            cost: Cost { sms, phone },
            created_at: 0,
            expires_at: 600_000_000,
        }
    }

    #[test]
    fn sends_are_accepted_in_order_until_credits_run_out() {
        let mut b = Balances::default();
        b.insert(1, 3, 0, 10);
        let results: Vec<_> = (0..5).map(|_| b.take(&send(1, 1, 0)).is_ok()).collect();
        assert_eq!(results, [true, true, true, false, false]);
        let (_, bal) = b.changed().next().unwrap();
        assert_eq!((bal.sms, bal.otp_count), (0, 13));
    }

    #[test]
    fn a_cheaper_send_can_pass_after_a_dearer_one_fails() {
        let mut b = Balances::default();
        b.insert(1, 2, 0, 0);
        assert!(b.take(&send(1, 3, 0)).is_err());
        assert_eq!(b.take(&send(1, 2, 0)).unwrap().account_seq, 1);
    }

    #[test]
    fn an_unknown_account_is_refused_and_nothing_changes() {
        let mut b = Balances::default();
        b.insert(1, 2, 2, 0);
        assert!(matches!(
            b.take(&send(2, 1, 0)),
            Err(AcceptError::AccountNotFound)
        ));
        assert_eq!(b.changed().count(), 0);
    }

    #[test]
    fn voice_spends_phone_credits_only() {
        let mut b = Balances::default();
        b.insert(1, 0, 1, 0);
        let t = b.take(&send(1, 0, 1)).unwrap();
        assert_eq!((t.sms_left, t.phone_left), (0, 0));
        assert!(b.take(&send(1, 0, 1)).is_err());
    }
}
