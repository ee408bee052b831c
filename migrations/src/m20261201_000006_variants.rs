//! Near-duplicates that keep their bytes: the audio fingerprint of each
//! signature, and whether its completion is pending (finalize went on a
//! partial analysis; start-up analyses such videos again); a video's `variant_of` (the stored video it was matched to)
//! and `match_info` (why); and each alias's `via` (the variant whose upload
//! brought it, so that unmerging gives it back).

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
                    .table(VideoSignatures::Table)
                    .add_column(ColumnDef::new(VideoSignatures::Audio).text())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(VideoSignatures::Table)
                    .add_column(ColumnDef::new(VideoSignatures::Pending).boolean().not_null().default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter().table(Videos::Table).add_column(ColumnDef::new(Videos::VariantOf).text()).to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter().table(Videos::Table).add_column(ColumnDef::new(Videos::MatchInfo).text()).to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter().table(Aliases::Table).add_column(ColumnDef::new(Aliases::Via).text()).to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("idx_videos_variant_of").table(Videos::Table).col(Videos::VariantOf).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("idx_videos_variant_of").table(Videos::Table).to_owned()).await?;
        manager.alter_table(Table::alter().table(Aliases::Table).drop_column(Aliases::Via).to_owned()).await?;
        manager.alter_table(Table::alter().table(Videos::Table).drop_column(Videos::MatchInfo).to_owned()).await?;
        manager.alter_table(Table::alter().table(Videos::Table).drop_column(Videos::VariantOf).to_owned()).await?;
        manager
            .alter_table(Table::alter().table(VideoSignatures::Table).drop_column(VideoSignatures::Pending).to_owned())
            .await?;
        manager
            .alter_table(Table::alter().table(VideoSignatures::Table).drop_column(VideoSignatures::Audio).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum VideoSignatures {
    Table,
    Audio,
    Pending,
}

#[derive(DeriveIden)]
enum Videos {
    Table,
    VariantOf,
    MatchInfo,
}

#[derive(DeriveIden)]
enum Aliases {
    Table,
    Via,
}
