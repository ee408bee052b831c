//! Transcoding state on each video: the last error of a failed transcode
//! and the renditions a finished one produced (JSON), beside the existing
//! `transcode_status`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one column at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Videos::Table)
                    .add_column(ColumnDef::new(Videos::TranscodeError).text())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter().table(Videos::Table).add_column(ColumnDef::new(Videos::Renditions).text()).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Videos::Table).drop_column(Videos::Renditions).to_owned()).await?;
        manager.alter_table(Table::alter().table(Videos::Table).drop_column(Videos::TranscodeError).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Videos {
    Table,
    TranscodeError,
    Renditions,
}
