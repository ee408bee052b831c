//! API keys minted at run time, as the key ring loads and records them.

use super::entities::api_key;
use super::repo::{RepoError, Repository};
use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, EntityTrait, QueryOrder};

/// A stored key: everything but the secret, which only its MAC stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub id: String,
    pub project_id: String,
    /// Comma-separated scope names.
    pub scopes: String,
    /// Hex HMAC-SHA256 of the secret under the server secret.
    pub mac: String,
    pub label: Option<String>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Repository {
    pub async fn api_keys(&self) -> Result<Vec<StoredKey>, RepoError> {
        let rows = api_key::Entity::find().order_by_asc(api_key::Column::CreatedAt).all(self.conn()).await?;
        Ok(rows
            .into_iter()
            .map(|r| StoredKey {
                id: r.id,
                project_id: r.project_id,
                scopes: r.scopes,
                mac: r.mac,
                label: r.label,
                created_by: r.created_by,
                created_at: r.created_at,
            })
            .collect())
    }

    pub async fn insert_api_key(&self, key: &StoredKey) -> Result<(), RepoError> {
        api_key::Entity::insert(api_key::ActiveModel {
            id: Set(key.id.clone()),
            project_id: Set(key.project_id.clone()),
            scopes: Set(key.scopes.clone()),
            mac: Set(key.mac.clone()),
            label: Set(key.label.clone()),
            created_by: Set(key.created_by.clone()),
            created_at: Set(key.created_at),
        })
        .exec(self.conn())
        .await?;
        Ok(())
    }

    /// Removes a key; whether there was one.
    pub async fn delete_api_key(&self, id: &str) -> Result<bool, RepoError> {
        Ok(api_key::Entity::delete_by_id(id.to_owned()).exec(self.conn()).await?.rows_affected > 0)
    }
}
