//! The upload front doors (chunked, multipart, tus): what kind of session an
//! upload is, its declared size and chunk size, who owns it; the pieces
//! (chunks or parts) each stored upload has received; and the user-facing
//! video entries with integer ids that `GET /videos` lists.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per statement.
        let columns = [
            ColumnDef::new(UploadSessions::Kind).string().not_null().default("stream").to_owned(),
            ColumnDef::new(UploadSessions::TotalSize).big_integer().to_owned(),
            ColumnDef::new(UploadSessions::ChunkSize).big_integer().to_owned(),
            ColumnDef::new(UploadSessions::Owner).string().to_owned(),
            ColumnDef::new(UploadSessions::EntryId).big_integer().to_owned(),
        ];
        for mut column in columns {
            manager.alter_table(Table::alter().table(UploadSessions::Table).add_column(&mut column).to_owned()).await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("idx_upload_sessions_owner_state")
                    .table(UploadSessions::Table)
                    .col(UploadSessions::Owner)
                    .col(UploadSessions::State)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UploadPieces::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(UploadPieces::UploadId).string_len(64).not_null())
                    .col(ColumnDef::new(UploadPieces::Number).integer().not_null())
                    .col(ColumnDef::new(UploadPieces::SizeBytes).big_integer().not_null())
                    .col(ColumnDef::new(UploadPieces::Hash).string_len(64).not_null())
                    .col(ColumnDef::new(UploadPieces::CreatedAt).timestamp_with_time_zone().not_null())
                    .primary_key(Index::create().col(UploadPieces::UploadId).col(UploadPieces::Number))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(VideoEntries::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(VideoEntries::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(VideoEntries::UploadId).string_len(64).unique_key())
                    .col(ColumnDef::new(VideoEntries::Hash).string_len(64))
                    .col(ColumnDef::new(VideoEntries::Filename).text().not_null())
                    .col(ColumnDef::new(VideoEntries::ContentType).string())
                    .col(ColumnDef::new(VideoEntries::ProjectId).string())
                    .col(ColumnDef::new(VideoEntries::Door).string().not_null())
                    .col(ColumnDef::new(VideoEntries::Status).string().not_null())
                    .col(ColumnDef::new(VideoEntries::Error).text())
                    .col(ColumnDef::new(VideoEntries::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(VideoEntries::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_video_entries_hash")
                    .table(VideoEntries::Table)
                    .col(VideoEntries::Hash)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(VideoEntries::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(UploadPieces::Table).to_owned()).await?;
        manager
            .drop_index(Index::drop().name("idx_upload_sessions_owner_state").table(UploadSessions::Table).to_owned())
            .await?;
        for column in [
            UploadSessions::Kind,
            UploadSessions::TotalSize,
            UploadSessions::ChunkSize,
            UploadSessions::Owner,
            UploadSessions::EntryId,
        ] {
            manager.alter_table(Table::alter().table(UploadSessions::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum UploadSessions {
    Table,
    State,
    Kind,
    TotalSize,
    ChunkSize,
    Owner,
    EntryId,
}

#[derive(DeriveIden)]
enum UploadPieces {
    Table,
    UploadId,
    Number,
    SizeBytes,
    Hash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum VideoEntries {
    Table,
    Id,
    UploadId,
    Hash,
    Filename,
    ContentType,
    ProjectId,
    Door,
    Status,
    Error,
    CreatedAt,
    UpdatedAt,
}
