//! The app's managed identity as the azure crates' `TokenCredential`, so the Table and Blob
//! clients put `Authorization: Bearer` on every request of an identity-based connection.
//!
//! Guarantees: the token comes from [`ManagedIdentity`] (cached and renewed there, never logged);
//! the crates ask for the scope `https://storage.azure.com/.default`, which is the resource
//! `https://storage.azure.com/`; a failure to get a token is an error whose `source()` chain holds
//! the [`IdentityError`], so [`super::azure_error::map_error`] answers it as storage being
//! unavailable (503), with the reason, not as a misconfiguration.

use std::fmt;

use async_trait::async_trait;
use azure_core::auth::{AccessToken, TokenCredential};
use azure_core::error::ErrorKind;
use time::OffsetDateTime;

use crate::identity::{IdentityError, ManagedIdentity};

/// Suffix the crates put on a resource to make a scope.
const DEFAULT_SCOPE_SUFFIX: &str = ".default";

/// A [`ManagedIdentity`] that the azure crates can ask for tokens.
#[derive(Clone)]
pub struct IdentityCredential(pub ManagedIdentity);

impl fmt::Debug for IdentityCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdentityCredential").field(&self.0).finish()
    }
}

#[async_trait]
impl TokenCredential for IdentityCredential {
    async fn get_token(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        let scope = scopes.first().copied().unwrap_or_default();
        let resource = scope.strip_suffix(DEFAULT_SCOPE_SUFFIX).unwrap_or(scope);
        let token = self.0.token(resource).await.map_err(|error| {
            azure_core::Error::full(ErrorKind::Credential, error, "no managed identity token")
        })?;
        let expires_on = i64::try_from(token.expires_on())
            .ok()
            .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Ok(AccessToken::new(token.secret().to_owned(), expires_on))
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        Ok(())
    }
}

/// The identity's reason, when `error` is a failure to get a managed identity token.
pub(crate) fn identity_failure(error: &azure_core::Error) -> Option<&IdentityError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(identity) = current.downcast_ref::<IdentityError>() {
            return Some(identity);
        }
        source = current.source();
    }
    None
}
