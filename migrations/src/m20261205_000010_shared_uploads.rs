//! Chunked uploads that any daemon takes (S3 backend). A session records
//! the S3 multipart upload its chunks go to (`staged`) and who finalizes
//! it until when (`claimed_until`); a piece records the BLAKE3 chaining
//! values of its subtrees (`tree`) and, once the bucket has it, the part's
//! ETag (`etag`). A piece with a tree and no ETag is reserved, not stored.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one at a time.
        let columns = [
            (UploadSessions::Table.into_iden(), ColumnDef::new(UploadSessions::Staged).string_len(1024).to_owned()),
            (
                UploadSessions::Table.into_iden(),
                ColumnDef::new(UploadSessions::ClaimedUntil).timestamp_with_time_zone().to_owned(),
            ),
            (UploadPieces::Table.into_iden(), ColumnDef::new(UploadPieces::Tree).text().to_owned()),
            (UploadPieces::Table.into_iden(), ColumnDef::new(UploadPieces::Etag).string_len(256).to_owned()),
        ];
        for (table, mut column) in columns {
            manager.alter_table(Table::alter().table(table).add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            (UploadPieces::Table.into_iden(), UploadPieces::Etag.into_iden()),
            (UploadPieces::Table.into_iden(), UploadPieces::Tree.into_iden()),
            (UploadSessions::Table.into_iden(), UploadSessions::ClaimedUntil.into_iden()),
            (UploadSessions::Table.into_iden(), UploadSessions::Staged.into_iden()),
        ];
        for (table, column) in columns {
            manager.alter_table(Table::alter().table(table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum UploadSessions {
    Table,
    Staged,
    ClaimedUntil,
}

#[derive(DeriveIden)]
enum UploadPieces {
    Table,
    Tree,
    Etag,
}
