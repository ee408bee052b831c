//! Perceptual signatures: the sampled frame hashes of every stored video
//! (rebuilt into the in-memory near-duplicate index at start-up), the
//! keyframe index and timings of the analysis; and, on a video kept although
//! it near-duplicates another (`dedup.near_duplicate = "keep"`), which one
//! and at what distance.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(VideoSignatures::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(VideoSignatures::Hash).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(VideoSignatures::DurationMs).big_integer().not_null())
                    .col(ColumnDef::new(VideoSignatures::Samples).text().not_null())
                    .col(ColumnDef::new(VideoSignatures::KeyframesMs).text().not_null())
                    .col(ColumnDef::new(VideoSignatures::FramesDecoded).big_integer().not_null())
                    .col(ColumnDef::new(VideoSignatures::PacketsSkipped).big_integer().not_null())
                    .col(ColumnDef::new(VideoSignatures::FirstByteAt).timestamp_with_time_zone())
                    .col(ColumnDef::new(VideoSignatures::FirstHashAt).timestamp_with_time_zone())
                    .col(ColumnDef::new(VideoSignatures::BytesCompleteAt).timestamp_with_time_zone())
                    .col(ColumnDef::new(VideoSignatures::AnalysedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        let columns = [
            ColumnDef::new(Videos::NearDuplicateOf).string_len(64).to_owned(),
            ColumnDef::new(Videos::PhashDistance).integer().to_owned(),
        ];
        for mut column in columns {
            manager.alter_table(Table::alter().table(Videos::Table).add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Videos::NearDuplicateOf, Videos::PhashDistance] {
            manager.alter_table(Table::alter().table(Videos::Table).drop_column(column).to_owned()).await?;
        }
        manager.drop_table(Table::drop().table(VideoSignatures::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum VideoSignatures {
    Table,
    Hash,
    DurationMs,
    Samples,
    KeyframesMs,
    FramesDecoded,
    PacketsSkipped,
    FirstByteAt,
    FirstHashAt,
    BytesCompleteAt,
    AnalysedAt,
}

#[derive(DeriveIden)]
enum Videos {
    Table,
    NearDuplicateOf,
    PhashDistance,
}
