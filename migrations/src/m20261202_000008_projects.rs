//! Projects as tenants: which projects hold each stored video (bytes are
//! stored once; each project that uploaded them holds the video), and the
//! project of each upload session. Videos stored before projects existed
//! are held by the ones their entries name, and by `default` (the project
//! of an open daemon's anonymous callers). Each alias names the project
//! that ingested its URL (none: from before, `default`'s).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(VideoProjects::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(VideoProjects::Hash).string_len(64).not_null())
                    .col(ColumnDef::new(VideoProjects::ProjectId).string_len(128).not_null())
                    .col(ColumnDef::new(VideoProjects::CreatedAt).timestamp_with_time_zone().not_null())
                    // The project's own view of the video: where its upload
                    // asked for it to go, and its client metadata.
                    .col(ColumnDef::new(VideoProjects::Bucket).text())
                    .col(ColumnDef::new(VideoProjects::Prefix).text())
                    .col(ColumnDef::new(VideoProjects::FilePath).text())
                    .col(ColumnDef::new(VideoProjects::Meta).text())
                    // Its media may be fetched by anyone (`public`), not only
                    // with a key or a playback token.
                    .col(ColumnDef::new(VideoProjects::Public).boolean().not_null().default(false))
                    .primary_key(Index::create().col(VideoProjects::Hash).col(VideoProjects::ProjectId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_video_projects_project")
                    .table(VideoProjects::Table)
                    .col(VideoProjects::ProjectId)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(UploadSessions::Table)
                    .add_column(ColumnDef::new(UploadSessions::ProjectId).string_len(128))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Aliases::Table)
                    .add_column(ColumnDef::new(Aliases::ProjectId).string_len(128))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "INSERT INTO video_projects (hash, project_id, created_at) \
             SELECT hash, 'default', first_seen FROM videos WHERE true ON CONFLICT DO NOTHING",
        )
        .await?;
        db.execute_unprepared(
            "INSERT INTO video_projects (hash, project_id, created_at) \
             SELECT DISTINCT hash, project_id, created_at FROM video_entries \
             WHERE hash IS NOT NULL AND project_id IS NOT NULL ON CONFLICT DO NOTHING",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Aliases::Table).drop_column(Aliases::ProjectId).to_owned()).await?;
        manager
            .alter_table(Table::alter().table(UploadSessions::Table).drop_column(UploadSessions::ProjectId).to_owned())
            .await?;
        manager.drop_table(Table::drop().table(VideoProjects::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum VideoProjects {
    Table,
    Hash,
    ProjectId,
    CreatedAt,
    Bucket,
    Prefix,
    FilePath,
    Meta,
    Public,
}

#[derive(DeriveIden)]
enum Aliases {
    Table,
    ProjectId,
}

#[derive(DeriveIden)]
enum UploadSessions {
    Table,
    ProjectId,
}
