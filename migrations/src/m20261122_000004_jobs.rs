//! The embedded durable queue (issue 5 groundwork): jobs by topic, leased
//! to one worker at a time, redelivered when a lease expires, dead after
//! too many attempts, with the last error kept.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Jobs::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(Jobs::Topic).string_len(64).not_null())
                    .col(ColumnDef::new(Jobs::Key).string_len(255).not_null())
                    .col(ColumnDef::new(Jobs::Payload).text().not_null())
                    .col(ColumnDef::new(Jobs::State).string_len(16).not_null())
                    .col(ColumnDef::new(Jobs::Attempts).integer().not_null())
                    .col(ColumnDef::new(Jobs::AvailableAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Jobs::LeasedBy).string_len(128))
                    .col(ColumnDef::new(Jobs::LastError).text())
                    .col(ColumnDef::new(Jobs::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Jobs::UpdatedAt).timestamp_with_time_zone().not_null())
                    // In the table itself, not a separate index: on SQLite a
                    // pooled connection can load the schema between the two
                    // statements, and then refuses `ON CONFLICT (topic, key)`.
                    .index(Index::create().name("uq_jobs_topic_key").col(Jobs::Topic).col(Jobs::Key).unique())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_jobs_topic_state_available")
                    .table(Jobs::Table)
                    .col(Jobs::Topic)
                    .col(Jobs::State)
                    .col(Jobs::AvailableAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Jobs::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
    Topic,
    Key,
    Payload,
    State,
    Attempts,
    AvailableAt,
    LeasedBy,
    LastError,
    CreatedAt,
    UpdatedAt,
}
