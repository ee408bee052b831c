//! API keys minted at run time by an `admin` key (`/api/v1/keys`). The
//! secret is never stored: only its HMAC-SHA256 under the server secret.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(ApiKeys::Id).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(ApiKeys::ProjectId).string_len(128).not_null())
                    .col(ColumnDef::new(ApiKeys::Scopes).string_len(64).not_null())
                    .col(ColumnDef::new(ApiKeys::Mac).string_len(64).not_null())
                    .col(ColumnDef::new(ApiKeys::Label).string_len(255))
                    .col(ColumnDef::new(ApiKeys::CreatedBy).string_len(64))
                    .col(ColumnDef::new(ApiKeys::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ApiKeys::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    ProjectId,
    Scopes,
    Mac,
    Label,
    CreatedBy,
    CreatedAt,
}
