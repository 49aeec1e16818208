//! An account's own sending rules: its approved message templates and its
//! sender ID per route ([`AccountRulesStore`]).
//!
//! **Approved templates.** An account with approved templates may send only
//! those texts: a send whose template, [`normalize`]d, is none of them is
//! refused inside the accepting transaction ([`TemplateRules`], checked by
//! [`admission`](crate::admission)) with
//! [`AcceptError::TemplateNotApproved`], so nothing is written or charged,
//! and a template removed on one node stops passing on every node at the
//! next batch. An account with none sends any text. A leaked API key then
//! cannot send other text under the operator's sender name. Templates are
//! stored normalized and keyed by the SHA-256 of that text; an account has at
//! most [`MAX_TEMPLATES`].
//!
//! **Senders.** An account may have a sender ID of its own per route; the
//! delivery that goes out on that route uses it instead of the route's
//! configured one. The senders of a claimed job's account come with the job
//! ([`ClaimedJob::senders`](crate::ClaimedJob)), read when it is claimed.

use std::collections::HashSet;

use otp_domain::message::{MessageTemplate, normalize};
use otp_domain::sender::SenderId;
use sha2::{Digest, Sha256};

use crate::{AcceptError, AccountId, Micros, NewOtp, StoreError};

/// The most approved templates one account may have.
pub const MAX_TEMPLATES: usize = 100;

/// The longest route name a sender is kept for, in bytes (route names come
/// from the configuration; this bounds what a request can make the store keep).
pub const MAX_ROUTE_BYTES: usize = 100;

/// One approved template, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovedTemplate {
    pub text: String,
    pub created_at: Micros,
}

/// An account's sender ID on one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSender {
    pub route: String,
    pub sender: SenderId,
    pub updated_at: Micros,
}

/// The key a normalized template is stored and looked up under.
pub(crate) fn template_key(normalized: &str) -> Vec<u8> {
    Sha256::digest(normalized.as_bytes()).to_vec()
}

/// The approved templates of an account, normalized and without repeats, in
/// the order given; refused with `Conflict` past [`MAX_TEMPLATES`].
pub(crate) fn distinct_templates(
    templates: &[MessageTemplate],
) -> Result<Vec<(Vec<u8>, String)>, StoreError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for t in templates {
        let text = t.normalized();
        let key = template_key(&text);
        if seen.insert(key.clone()) {
            out.push((key, text));
        }
    }
    if out.len() > MAX_TEMPLATES {
        return Err(too_many());
    }
    Ok(out)
}

pub(crate) fn too_many() -> StoreError {
    StoreError::Conflict(format!(
        "an account can have at most {MAX_TEMPLATES} approved templates"
    ))
}

/// Refuses a route name no configuration could have.
pub(crate) fn check_route(route: &str) -> Result<(), StoreError> {
    if route.is_empty() || route.len() > MAX_ROUTE_BYTES {
        return Err(StoreError::Conflict(format!(
            "a route name has 1 to {MAX_ROUTE_BYTES} bytes"
        )));
    }
    Ok(())
}

/// An account's templates and senders.
#[async_trait::async_trait]
pub trait AccountRulesStore: Send + Sync {
    /// The account's approved templates, oldest first (empty: it may send any
    /// text).
    async fn account_templates(
        &self,
        account: AccountId,
    ) -> Result<Vec<ApprovedTemplate>, StoreError>;
    /// Approves one more template; false when it was approved already.
    /// `NotFound` for no such account, `Conflict` when the account has
    /// [`MAX_TEMPLATES`] already.
    async fn add_account_template(
        &self,
        account: AccountId,
        template: &MessageTemplate,
        now: Micros,
    ) -> Result<bool, StoreError>;
    /// Makes `templates` the account's approved templates, in one transaction
    /// (empty: any text again). `NotFound` for no such account, `Conflict`
    /// past [`MAX_TEMPLATES`].
    async fn replace_account_templates(
        &self,
        account: AccountId,
        templates: Vec<MessageTemplate>,
        now: Micros,
    ) -> Result<Vec<ApprovedTemplate>, StoreError>;
    /// Withdraws the approved template that `text` normalizes to; false when
    /// there was none.
    async fn remove_account_template(
        &self,
        account: AccountId,
        text: &str,
    ) -> Result<bool, StoreError>;

    /// The account's senders, by route name.
    async fn account_senders(&self, account: AccountId) -> Result<Vec<AccountSender>, StoreError>;
    /// Sets the account's sender on `route` (replacing one set before).
    /// `NotFound` for no such account.
    async fn set_account_sender(
        &self,
        account: AccountId,
        route: &str,
        sender: &SenderId,
        now: Micros,
    ) -> Result<AccountSender, StoreError>;
    /// Removes the account's sender on `route`; false when it had none.
    async fn remove_account_sender(
        &self,
        account: AccountId,
        route: &str,
    ) -> Result<bool, StoreError>;
}

/// What the accepting transaction read of the templates of a batch's
/// accounts: which accounts are restricted, and which (account, template)
/// pairs of the batch are approved.
#[derive(Debug, Default)]
pub(crate) struct TemplateRules {
    restricted: HashSet<AccountId>,
    approved: HashSet<(AccountId, Vec<u8>)>,
}

impl TemplateRules {
    /// The distinct (account, template key) pairs of a batch, to load.
    pub fn wanted(otps: &[&NewOtp]) -> Vec<(AccountId, Vec<u8>)> {
        let mut seen = HashSet::new();
        otps.iter()
            .map(|o| (o.account_id, template_key(&o.template.normalized())))
            .filter(|pair| seen.insert(pair.clone()))
            .collect()
    }

    /// What was read for one pair: whether the account has any approved
    /// template, and whether this one is.
    pub fn insert(&mut self, account: AccountId, key: Vec<u8>, restricted: bool, approved: bool) {
        if restricted {
            self.restricted.insert(account);
        }
        if approved {
            self.approved.insert((account, key));
        }
    }

    /// Refuses a send of a restricted account whose template is not approved.
    pub fn check(&self, otp: &NewOtp) -> Result<(), AcceptError> {
        if !self.restricted.contains(&otp.account_id) {
            return Ok(());
        }
        let key = template_key(&otp.template.normalized());
        if self.approved.contains(&(otp.account_id, key)) {
            Ok(())
        } else {
            Err(AcceptError::TemplateNotApproved)
        }
    }
}

/// Normalizes `text` and gives its key (for a removal).
pub(crate) fn key_of_text(text: &str) -> Vec<u8> {
    template_key(&normalize(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::sample_otp;

    fn template(text: &str) -> MessageTemplate {
        MessageTemplate::parse(text).unwrap()
    }

    #[test]
    fn an_account_without_templates_sends_anything_and_one_with_them_only_those() {
        let mut otp = sample_otp(7);
        otp.template = template("Your  code is\n{otp}");
        let mut rules = TemplateRules::default();
        assert!(rules.check(&otp).is_ok(), "unrestricted");
        let wanted = TemplateRules::wanted(&[&otp, &otp]);
        assert_eq!(wanted.len(), 1, "a pair is loaded once");
        rules.insert(7, wanted[0].1.clone(), true, false);
        assert!(matches!(
            rules.check(&otp),
            Err(AcceptError::TemplateNotApproved)
        ));
        rules.insert(7, key_of_text("Your code is {otp}"), true, true);
        assert!(rules.check(&otp).is_ok(), "approved once normalized");
        otp.account_id = 8;
        assert!(
            rules.check(&otp).is_ok(),
            "another account is not restricted"
        );
    }

    #[test]
    fn repeated_templates_count_once_and_the_bound_holds() {
        let list = vec![
            template("A {otp}"),
            template(" A  {otp} "),
            template("B {otp}"),
        ];
        let distinct = distinct_templates(&list).unwrap();
        assert_eq!(
            distinct.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(),
            ["A {otp}", "B {otp}"]
        );
        let many: Vec<_> = (0..=MAX_TEMPLATES)
            .map(|i| template(&format!("{i} {{otp}}")))
            .collect();
        assert!(matches!(
            distinct_templates(&many),
            Err(StoreError::Conflict(_))
        ));
    }
}
