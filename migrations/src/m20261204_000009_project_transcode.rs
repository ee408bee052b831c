//! A project's own view of a video's transcode (section 8). A project that
//! uploads bytes another project already holds is answered as for a new
//! video; so that reading its status afterwards does not tell either, its
//! view goes through `queued` and `processing` as a new video's would
//! (a transcode job of its own, on the same queue) before it follows the
//! video's own status. NULL: the project sees the video's own status.
//! And which upload made the project hold it, so that a commit a kill
//! interrupted after the claim answers as it would have (`new`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(VideoProjects::Table)
                    .add_column(ColumnDef::new(VideoProjects::TranscodeStatus).string_len(16))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(VideoProjects::Table)
                    .add_column(ColumnDef::new(VideoProjects::UploadId).string_len(64))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(VideoProjects::Table).drop_column(VideoProjects::UploadId).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter().table(VideoProjects::Table).drop_column(VideoProjects::TranscodeStatus).to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum VideoProjects {
    Table,
    TranscodeStatus,
    UploadId,
}
