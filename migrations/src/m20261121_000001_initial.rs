//! The first schema: stored videos, their URL aliases, and upload sessions.
//!
//! JSON values (client meta, a finished session's result) are kept as text so
//! that both back ends store them the same way.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Videos::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Videos::Hash).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(Videos::SizeBytes).big_integer().not_null())
                    .col(ColumnDef::new(Videos::DurationS).double())
                    .col(ColumnDef::new(Videos::Width).integer())
                    .col(ColumnDef::new(Videos::Height).integer())
                    .col(ColumnDef::new(Videos::VideoCodec).string())
                    .col(ColumnDef::new(Videos::AudioCodec).string())
                    .col(ColumnDef::new(Videos::Fps).double())
                    .col(ColumnDef::new(Videos::Container).string().not_null())
                    .col(ColumnDef::new(Videos::ContentType).string().not_null())
                    .col(ColumnDef::new(Videos::Bucket).string().not_null())
                    .col(ColumnDef::new(Videos::Prefix).string().not_null())
                    .col(ColumnDef::new(Videos::FilePath).string().not_null())
                    .col(ColumnDef::new(Videos::Meta).text().not_null())
                    .col(ColumnDef::new(Videos::TranscodeStatus).string().not_null())
                    .col(ColumnDef::new(Videos::FirstSeen).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Aliases::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Aliases::Url).text().not_null().primary_key())
                    .col(ColumnDef::new(Aliases::Hash).string_len(64).not_null())
                    .col(ColumnDef::new(Aliases::CreatedAt).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_aliases_hash")
                            .from(Aliases::Table, Aliases::Hash)
                            .to(Videos::Table, Videos::Hash)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("idx_aliases_hash").table(Aliases::Table).col(Aliases::Hash).to_owned())
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UploadSessions::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(UploadSessions::Id).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(UploadSessions::Url).text())
                    .col(ColumnDef::new(UploadSessions::Bucket).string().not_null())
                    .col(ColumnDef::new(UploadSessions::Prefix).string().not_null())
                    .col(ColumnDef::new(UploadSessions::Meta).text().not_null())
                    .col(ColumnDef::new(UploadSessions::State).string().not_null())
                    .col(ColumnDef::new(UploadSessions::DurableBytes).big_integer().not_null())
                    .col(ColumnDef::new(UploadSessions::CommitHash).string_len(64))
                    .col(ColumnDef::new(UploadSessions::CommitPath).text())
                    .col(ColumnDef::new(UploadSessions::Result).text())
                    .col(ColumnDef::new(UploadSessions::Error).text())
                    .col(ColumnDef::new(UploadSessions::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(UploadSessions::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_upload_sessions_updated_at")
                    .table(UploadSessions::Table)
                    .col(UploadSessions::UpdatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(UploadSessions::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Aliases::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Videos::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Videos {
    Table,
    Hash,
    SizeBytes,
    DurationS,
    Width,
    Height,
    VideoCodec,
    AudioCodec,
    Fps,
    Container,
    ContentType,
    Bucket,
    Prefix,
    FilePath,
    Meta,
    TranscodeStatus,
    FirstSeen,
}

#[derive(DeriveIden)]
enum Aliases {
    Table,
    Url,
    Hash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum UploadSessions {
    Table,
    Id,
    Url,
    Bucket,
    Prefix,
    Meta,
    State,
    DurableBytes,
    CommitHash,
    CommitPath,
    Result,
    Error,
    CreatedAt,
    UpdatedAt,
}
