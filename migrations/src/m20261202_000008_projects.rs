//! Projects as tenants: which projects hold each stored video (bytes are
//! stored once; each project that uploaded them holds the video), and the
//! project of each upload session. Videos stored before projects existed
//! are held by the ones their entries name, and by `default` (the project
//! of an open daemon's anonymous callers). Aliases are keyed by project
//! and URL (those from before are `default`'s).

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
                    .table(UploadSessions::Table)
                    .add_column(ColumnDef::new(UploadSessions::Public).boolean().not_null().default(false))
                    .to_owned(),
            )
            .await?;
        // A URL is each project's own: the aliases are keyed by (project, URL),
        // so two projects that ingest one URL each keep their alias. SQLite
        // cannot change a primary key, so they move to a new table,
        // `url_aliases` (no rename: on a pooled SQLite connection a rename
        // right after a drop can meet a stale schema).
        manager
            .create_table(
                Table::create()
                    .table(ProjectAliases::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Aliases::Url).text().not_null())
                    .col(ColumnDef::new(Aliases::ProjectId).string_len(128).not_null())
                    .col(ColumnDef::new(Aliases::Hash).string_len(64).not_null())
                    .col(ColumnDef::new(Aliases::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Aliases::Via).text())
                    .primary_key(Index::create().col(Aliases::ProjectId).col(Aliases::Url))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_project_aliases_hash")
                            .from(ProjectAliases::Table, Aliases::Hash)
                            .to(Videos::Table, Videos::Hash)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "INSERT INTO url_aliases (url, project_id, hash, created_at, via) \
             SELECT url, 'default', hash, created_at, via FROM aliases",
        )
        .await?;
        manager.drop_table(Table::drop().table(Aliases::Table).to_owned()).await?;
        for (name, column) in [
            ("idx_url_aliases_hash", Aliases::Hash),
            ("idx_url_aliases_url", Aliases::Url),
            ("idx_url_aliases_via", Aliases::Via),
        ] {
            manager
                .create_index(Index::create().name(name).table(ProjectAliases::Table).col(column).to_owned())
                .await?;
        }
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
        // The aliases stay in `url_aliases`, keyed by (project, URL): going
        // back would have to choose one project's alias per URL.
        manager
            .alter_table(Table::alter().table(UploadSessions::Table).drop_column(UploadSessions::Public).to_owned())
            .await?;
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
    Url,
    ProjectId,
    Hash,
    CreatedAt,
    Via,
}

#[derive(DeriveIden)]
enum ProjectAliases {
    #[sea_orm(iden = "url_aliases")]
    Table,
}

#[derive(DeriveIden)]
enum Videos {
    Table,
    Hash,
}

#[derive(DeriveIden)]
enum UploadSessions {
    Table,
    ProjectId,
    Public,
}
