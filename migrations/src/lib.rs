//! Schema migrations for vidcache, run at start-up by `vidcache serve` and on
//! demand by `vidcache migrate`. The same migrations serve SQLite and
//! PostgreSQL, so they use only portable column types.

pub use sea_orm_migration::prelude::*;

mod m20261121_000001_initial;
mod m20261121_000002_doors;
mod m20261122_000003_signatures;
mod m20261122_000004_jobs;
mod m20261122_000005_transcode;
mod m20261201_000006_variants;
mod m20261202_000007_api_keys;
mod m20261202_000008_projects;
mod m20261204_000009_project_transcode;
mod m20261205_000010_shared_uploads;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_initial::Migration),
            Box::new(m20261121_000002_doors::Migration),
            Box::new(m20261122_000003_signatures::Migration),
            Box::new(m20261122_000004_jobs::Migration),
            Box::new(m20261122_000005_transcode::Migration),
            Box::new(m20261201_000006_variants::Migration),
            Box::new(m20261202_000007_api_keys::Migration),
            Box::new(m20261202_000008_projects::Migration),
            Box::new(m20261204_000009_project_transcode::Migration),
            Box::new(m20261205_000010_shared_uploads::Migration),
        ]
    }
}
