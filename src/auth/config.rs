//! The `[auth]` section of the configuration: the password and ACL files,
//! anonymous access and the per-address failure budget.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::budget::BudgetConfig;
use super::matcher::AclDefault;

/// A setting of the `[auth]` section that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {key}: {message}")]
pub struct Invalid {
    pub key: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// mosquitto's `password_file` format (`shardmq passwd` writes it);
    /// unset: user names are not checked.
    pub password_file: Option<PathBuf>,
    /// mosquitto's `acl_file` format plus roles (README); unset: no ACL.
    pub acl_file: Option<PathBuf>,
    /// Clients without a user name may connect. Unset: true only while no
    /// password file is configured.
    pub allow_anonymous: Option<bool>,
    /// What the ACL answers where no rule speaks.
    pub acl_default: AclDefault,
    /// Failed logins from one address within `failure_window_s` after
    /// which its CONNECTs are refused for `failure_block_s`; 0 turns the
    /// budget off.
    pub failures_max: u32,
    pub failure_window_s: u64,
    pub failure_block_s: u64,
    /// Addresses the budget tracks per shard.
    pub failure_table_max: usize,
    /// Recent successful password checks remembered per shard.
    pub verify_cache_max: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            password_file: None,
            acl_file: None,
            allow_anonymous: None,
            acl_default: AclDefault::Deny,
            failures_max: 5,
            failure_window_s: 60,
            failure_block_s: 60,
            failure_table_max: 4096,
            verify_cache_max: 4096,
        }
    }
}

impl AuthConfig {
    /// `allow_anonymous` with its default applied.
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous.unwrap_or(self.password_file.is_none())
    }

    pub fn budget(&self) -> BudgetConfig {
        BudgetConfig {
            failures_max: self.failures_max,
            window: Duration::from_secs(self.failure_window_s),
            block: Duration::from_secs(self.failure_block_s),
            table_max: self.failure_table_max,
        }
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        if self.failures_max > 0 && (self.failure_window_s == 0 || self.failure_block_s == 0) {
            return Err(Invalid {
                key: "auth.failure_window_s",
                message: "window and block must be at least 1 s while failures_max > 0".to_string(),
            });
        }
        if self.failure_table_max == 0 {
            return Err(Invalid {
                key: "auth.failure_table_max",
                message: "must be at least 1".to_string(),
            });
        }
        Ok(())
    }
}
