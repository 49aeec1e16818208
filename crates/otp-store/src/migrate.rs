//! Embedded migrations, one list per backend, applied in order on open, and the
//! rules that let two releases share one database.
//!
//! Applied versions are recorded in `otpgate_migrations`; a migration runs in the
//! same transaction as its record, so a crash leaves it either applied or not.
//!
//! Each record also keeps the migration's SHA-256 and its `min_binary`: the
//! oldest otpgate release still able to run on a database that has it. Adding
//! a table or a column keeps the previous release working, so such a migration
//! declares the oldest release still supported; a migration that removes or
//! renames what an older release reads declares the release that stopped reading
//! it. The highest `min_binary` applied is kept in `otpgate_schema`.
//!
//! Before anything is applied, [`plan`] decides, from what the database recorded
//! and from nothing else, whether this binary may run on it:
//! - a known migration whose recorded name or checksum differs from this
//!   binary's is refused (an applied migration must never be edited);
//! - a migration this binary does not know (a newer release applied it) is
//!   accepted only if its `min_binary` is not above this binary's version: that
//!   is what lets old and new nodes run side by side during a rolling upgrade;
//! - a database whose `otpgate_schema.min_binary` is above this binary's version
//!   is refused.
//!
//! Records written by the first release (0.1.0) have no checksum; the first
//! newer binary to open the database stamps them with its own. Adding a
//! migration is one entry in each list below.

use std::fmt;

use crate::StoreError;

/// The version of this binary, as migrations' `min_binary` is compared with it:
/// this crate's, which is kept equal to the `otpgate` crate's (tested there).
pub const BINARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The first release; every migration it shipped declares it.
const FIRST_RELEASE: &str = "0.1.0";

/// One schema step.
#[derive(Debug)]
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    /// The oldest release still able to run on a database that has this step.
    pub min_binary: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// The SHA-256 of the SQL, lowercase hex.
    pub fn checksum(&self) -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(self.sql.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// An applied migration, as `otpgate_migrations` recorded it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub version: i64,
    pub name: String,
    /// `None` when the first release applied it.
    pub checksum: Option<String>,
    pub min_binary: Option<String>,
}

/// What this binary has to do to a database it may run on.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    /// Known migrations the database lacks, in order.
    pub apply: Vec<&'a Migration>,
    /// Known migrations recorded without a checksum: record this binary's.
    pub stamp: Vec<&'a Migration>,
    /// The highest `min_binary` once `apply` has run.
    pub floor: Version,
}

impl Plan<'_> {
    /// Whether the plan writes anything besides the floor.
    pub fn changes_records(&self) -> bool {
        !self.apply.is_empty() || !self.stamp.is_empty()
    }
}

/// A release number, `MAJOR.MINOR.PATCH`; a pre-release or build suffix is
/// ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Version(u64, u64, u64);

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let core = s.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        let v = Version(parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

fn refuse(message: String) -> StoreError {
    StoreError::Incompatible(message)
}

/// Decides whether a binary of version `binary` may run on a database that
/// recorded `recorded` (any order) and `floor`, and what it must apply.
pub(crate) fn plan<'a>(
    list: &'a [Migration],
    recorded: &[Recorded],
    floor: Option<&str>,
    binary: &str,
) -> Result<Plan<'a>, StoreError> {
    let this = Version::parse(binary).ok_or_else(|| {
        refuse(format!(
            "this binary's version {binary:?} is not MAJOR.MINOR.PATCH"
        ))
    })?;
    if let Some(floor) = floor {
        let needed = Version::parse(floor).ok_or_else(|| {
            refuse(format!(
                "otpgate_schema.min_binary {floor:?} is not a version; the database was not \
                 migrated by otpgate"
            ))
        })?;
        if needed > this {
            return Err(refuse(format!(
                "this database needs otpgate {needed} or newer, and this is otpgate {this}: a \
                 newer release has migrated it past what this binary supports. Run otpgate \
                 {needed} or newer."
            )));
        }
    }
    let mut highest = Version::parse(FIRST_RELEASE).expect("the first release is a version");
    let mut stamp = Vec::new();
    for r in recorded {
        let Some(m) = list.iter().find(|m| m.version == r.version) else {
            let needed = r
                .min_binary
                .as_deref()
                .and_then(Version::parse)
                .ok_or_else(|| {
                    refuse(format!(
                        "this database has migration {} ({}), which otpgate {this} does not know \
                     and which records no min_binary: it cannot tell whether it may run on it.",
                        r.version, r.name
                    ))
                })?;
            if needed > this {
                return Err(refuse(format!(
                    "this database has migration {} ({}), which otpgate {this} does not know \
                     and which needs otpgate {needed} or newer. Run otpgate {needed} or newer.",
                    r.version, r.name
                )));
            }
            highest = highest.max(needed);
            continue;
        };
        if r.name != m.name {
            return Err(refuse(format!(
                "migration {} is recorded as {:?} but this binary's migration {} is {:?}: the \
                 database was migrated by a different build. Run a binary built from the same \
                 migrations.",
                r.version, r.name, m.version, m.name
            )));
        }
        let ours = m.checksum();
        match &r.checksum {
            Some(theirs) if *theirs != ours => {
                return Err(refuse(format!(
                    "migration {} ({}) was changed after it was applied: the database recorded \
                     SHA-256 {theirs}, this binary has {ours}. An applied migration must never \
                     be edited; run a binary whose migration matches, or restore the file.",
                    m.version, m.name
                )));
            }
            Some(_) => {}
            None => stamp.push(m),
        }
        highest = highest.max(known_min_binary(m));
    }
    let apply: Vec<&Migration> = list
        .iter()
        .filter(|m| !recorded.iter().any(|r| r.version == m.version))
        .collect();
    for m in &apply {
        highest = highest.max(known_min_binary(m));
    }
    Ok(Plan {
        apply,
        stamp,
        floor: highest,
    })
}

fn known_min_binary(m: &Migration) -> Version {
    Version::parse(m.min_binary).expect("every listed min_binary is a version (tested)")
}

pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "receipts",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0002_receipts.sql"),
    },
    Migration {
        version: 3,
        name: "codes_at_rest",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0003_codes_at_rest.sql"),
    },
    Migration {
        version: 4,
        name: "send_limits",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0004_send_limits.sql"),
    },
    Migration {
        version: 5,
        name: "idempotency",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0005_idempotency.sql"),
    },
    Migration {
        version: 6,
        name: "users",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0006_users.sql"),
    },
    Migration {
        version: 7,
        name: "webhooks",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0007_webhooks.sql"),
    },
    Migration {
        version: 8,
        name: "account_limits",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0008_account_limits.sql"),
    },
    Migration {
        version: 9,
        name: "message_parts",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0009_message_parts.sql"),
    },
    Migration {
        version: 10,
        name: "key_scopes",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0010_key_scopes.sql"),
    },
    Migration {
        version: 11,
        name: "login_limits_and_sessions",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0011_login_limits_and_sessions.sql"),
    },
    Migration {
        version: 12,
        name: "verify_refusals",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0012_verify_refusals.sql"),
    },
    Migration {
        version: 13,
        name: "webhook_limits",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0013_webhook_limits.sql"),
    },
    Migration {
        version: 14,
        name: "receipt_id_forms",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0014_receipt_id_forms.sql"),
    },
    Migration {
        version: 15,
        name: "api_key_copies",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0015_api_key_copies.sql"),
    },
    Migration {
        version: 16,
        name: "resends",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0016_resends.sql"),
    },
    Migration {
        version: 17,
        name: "retention",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0017_retention.sql"),
    },
    Migration {
        version: 18,
        name: "operators",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0018_operators.sql"),
    },
    Migration {
        version: 19,
        name: "conversions",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0019_conversions.sql"),
    },
    Migration {
        version: 20,
        name: "account_disabled",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0020_account_disabled.sql"),
    },
    Migration {
        version: 21,
        name: "failed_otps_index",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0021_failed_otps_index.sql"),
    },
    Migration {
        version: 22,
        name: "channel_fallback",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0022_channel_fallback.sql"),
    },
    Migration {
        version: 23,
        name: "guard_holds",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0023_guard_holds.sql"),
    },
    Migration {
        version: 24,
        name: "route_windows",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0024_route_windows.sql"),
    },
    Migration {
        version: 25,
        name: "account_templates_and_senders",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0025_account_templates_and_senders.sql"),
    },
    Migration {
        version: 26,
        name: "account_fallback",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0026_account_fallback.sql"),
    },
    Migration {
        version: 27,
        name: "failure_indexes_without_in_lists",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0027_failure_indexes_without_in_lists.sql"),
    },
    Migration {
        version: 28,
        name: "partial_receipt_id_forms",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/sqlite/0028_partial_receipt_id_forms.sql"),
    },
];

pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "receipts",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0002_receipts.sql"),
    },
    Migration {
        version: 3,
        name: "codes_at_rest",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0003_codes_at_rest.sql"),
    },
    Migration {
        version: 4,
        name: "send_limits",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0004_send_limits.sql"),
    },
    Migration {
        version: 5,
        name: "idempotency",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0005_idempotency.sql"),
    },
    Migration {
        version: 6,
        name: "users",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0006_users.sql"),
    },
    Migration {
        version: 7,
        name: "webhooks",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0007_webhooks.sql"),
    },
    Migration {
        version: 8,
        name: "account_limits",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0008_account_limits.sql"),
    },
    Migration {
        version: 9,
        name: "message_parts",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0009_message_parts.sql"),
    },
    Migration {
        version: 10,
        name: "key_scopes",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0010_key_scopes.sql"),
    },
    Migration {
        version: 11,
        name: "login_limits_and_sessions",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0011_login_limits_and_sessions.sql"),
    },
    Migration {
        version: 12,
        name: "verify_refusals",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0012_verify_refusals.sql"),
    },
    Migration {
        version: 13,
        name: "webhook_limits",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0013_webhook_limits.sql"),
    },
    Migration {
        version: 14,
        name: "receipt_id_forms",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0014_receipt_id_forms.sql"),
    },
    Migration {
        version: 15,
        name: "api_key_copies",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0015_api_key_copies.sql"),
    },
    Migration {
        version: 16,
        name: "resends",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0016_resends.sql"),
    },
    Migration {
        version: 17,
        name: "retention",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0017_retention.sql"),
    },
    Migration {
        version: 18,
        name: "operators",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0018_operators.sql"),
    },
    Migration {
        version: 19,
        name: "conversions",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0019_conversions.sql"),
    },
    Migration {
        version: 20,
        name: "account_disabled",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0020_account_disabled.sql"),
    },
    Migration {
        version: 21,
        name: "failed_otps_index",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0021_failed_otps_index.sql"),
    },
    Migration {
        version: 22,
        name: "channel_fallback",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0022_channel_fallback.sql"),
    },
    Migration {
        version: 23,
        name: "guard_holds",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0023_guard_holds.sql"),
    },
    Migration {
        version: 24,
        name: "route_windows",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0024_route_windows.sql"),
    },
    Migration {
        version: 25,
        name: "account_templates_and_senders",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0025_account_templates_and_senders.sql"),
    },
    Migration {
        version: 26,
        name: "account_fallback",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0026_account_fallback.sql"),
    },
    Migration {
        version: 27,
        name: "failure_indexes_without_in_lists",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0027_failure_indexes_without_in_lists.sql"),
    },
    Migration {
        version: 28,
        name: "partial_receipt_id_forms",
        min_binary: FIRST_RELEASE,
        sql: include_str!("../migrations/postgres/0028_partial_receipt_id_forms.sql"),
    },
];

/// The bookkeeping tables, as the first release made them plus the columns and
/// the table added since; [`ADD_COLUMNS`] brings a first-release table up to date.
pub(crate) const CREATE_TABLES: &str = "CREATE TABLE IF NOT EXISTS otpgate_migrations (
    version    BIGINT PRIMARY KEY,
    name       TEXT   NOT NULL,
    applied_at BIGINT NOT NULL,
    checksum   TEXT,
    min_binary TEXT
);
CREATE TABLE IF NOT EXISTS otpgate_schema (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    min_binary TEXT   NOT NULL,
    written_by TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
)";

/// Columns of `otpgate_migrations` the first release did not have. Nullable:
/// that release inserts records without them.
pub(crate) const ADD_COLUMNS: &[(&str, &str)] = &[("checksum", "TEXT"), ("min_binary", "TEXT")];

/// Reads the records back.
pub(crate) const SELECT_RECORDED: &str =
    "SELECT version, name, checksum, min_binary FROM otpgate_migrations ORDER BY version";

/// Reads the records of a table the first release made (no checksum, no
/// min_binary), without changing it.
pub(crate) const SELECT_FIRST_RELEASE: &str = "SELECT version, name, CAST(NULL AS TEXT), \
     CAST(NULL AS TEXT) FROM otpgate_migrations ORDER BY version";

#[cfg(test)]
mod tests {
    use super::*;

    fn record(m: &Migration) -> Recorded {
        Recorded {
            version: m.version,
            name: m.name.to_owned(),
            checksum: Some(m.checksum()),
            min_binary: Some(m.min_binary.to_owned()),
        }
    }

    fn message(e: StoreError) -> String {
        match e {
            StoreError::Incompatible(m) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn both_lists_are_sorted_and_declare_the_same_steps_with_valid_min_binaries() {
        let this = Version::parse(BINARY_VERSION).unwrap();
        for list in [SQLITE, POSTGRES] {
            assert!(list.windows(2).all(|w| w[0].version < w[1].version));
            for m in list {
                let v = Version::parse(m.min_binary).expect(m.name);
                assert!(v <= this, "{} needs a binary newer than this one", m.name);
            }
        }
        let steps = |l: &[Migration]| -> Vec<_> {
            l.iter()
                .map(|m| (m.version, m.name, m.min_binary))
                .collect()
        };
        assert_eq!(steps(SQLITE), steps(POSTGRES));
    }

    #[test]
    fn versions_compare_by_number_and_ignore_suffixes() {
        assert!(Version::parse("0.10.0") > Version::parse("0.9.3"));
        assert_eq!(Version::parse("1.2.3-rc.1"), Some(Version(1, 2, 3)));
        for bad in ["", "1", "1.2", "1.2.3.4", "a.b.c", "1..3"] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_empty_database_gets_every_migration() {
        let p = plan(SQLITE, &[], None, BINARY_VERSION).unwrap();
        assert_eq!(p.apply.len(), SQLITE.len());
        assert_eq!(p.floor, Version::parse(FIRST_RELEASE).unwrap());
    }

    #[test]
    fn first_release_records_without_checksums_are_stamped() {
        let recorded: Vec<_> = SQLITE[..3]
            .iter()
            .map(|m| Recorded {
                checksum: None,
                min_binary: None,
                ..record(m)
            })
            .collect();
        let p = plan(SQLITE, &recorded, None, BINARY_VERSION).unwrap();
        assert_eq!(p.stamp.len(), 3);
        assert_eq!(p.apply.len(), SQLITE.len() - 3);
    }

    #[test]
    fn a_changed_migration_is_refused_by_number_and_name() {
        let mut recorded: Vec<_> = POSTGRES.iter().map(record).collect();
        recorded[2].checksum = Some("0".repeat(64));
        let m = message(plan(POSTGRES, &recorded, None, BINARY_VERSION).unwrap_err());
        assert!(m.contains("migration 3 (codes_at_rest) was changed"), "{m}");
    }

    #[test]
    fn a_renamed_migration_is_refused() {
        let mut recorded: Vec<_> = POSTGRES.iter().map(record).collect();
        recorded[0].name = "something_else".into();
        let m = message(plan(POSTGRES, &recorded, None, BINARY_VERSION).unwrap_err());
        assert!(
            m.contains("migration 1 is recorded as \"something_else\""),
            "{m}"
        );
    }

    #[test]
    fn unknown_migrations_are_accepted_only_up_to_this_binary() {
        let mut recorded: Vec<_> = SQLITE.iter().map(record).collect();
        recorded.push(Recorded {
            version: 999,
            name: "future".into(),
            checksum: Some("ab".repeat(32)),
            min_binary: Some("0.1.0".into()),
        });
        let p = plan(SQLITE, &recorded, Some("0.1.0"), "0.1.0").unwrap();
        assert!(p.apply.is_empty());

        recorded[SQLITE.len()].min_binary = Some("0.3.0".into());
        let m = message(plan(SQLITE, &recorded, None, "0.2.0").unwrap_err());
        assert!(
            m.contains("migration 999 (future)") && m.contains("needs otpgate 0.3.0 or newer"),
            "{m}"
        );
        assert_eq!(
            plan(SQLITE, &recorded, None, "0.3.0").unwrap().floor,
            Version(0, 3, 0)
        );

        recorded[SQLITE.len()].min_binary = None;
        let m = message(plan(SQLITE, &recorded, None, "9.0.0").unwrap_err());
        assert!(m.contains("records no min_binary"), "{m}");
    }

    #[test]
    fn a_floor_above_this_binary_is_refused() {
        let recorded: Vec<_> = SQLITE.iter().map(record).collect();
        let m = message(plan(SQLITE, &recorded, Some("0.5.0"), "0.2.0").unwrap_err());
        assert!(
            m.contains("needs otpgate 0.5.0 or newer, and this is otpgate 0.2.0"),
            "{m}"
        );
        assert!(plan(SQLITE, &recorded, Some("0.2.0"), "0.2.0").is_ok());
    }
}
