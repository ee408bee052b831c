//! Several daemons on one database (issue 16's groundwork).

use crate::helpers::{Backend, fresh_database};
use crate::restart::{Daemon, free_port};

/// Two `serve` started at the same moment on one fresh PostgreSQL database
/// both come up: migrations take a database-wide advisory lock, so the
/// second waits for the first and finds nothing left to do (before, it
/// died with `column "kind" of relation "upload_sessions" already exists`).
#[actix_web::test]
async fn two_daemons_started_at_once_on_a_fresh_postgres_database_both_come_up() {
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        std::fs::create_dir_all(&one).unwrap();
        std::fs::create_dir_all(&two).unwrap();
        let database_url = fresh_database(Backend::Postgres, &one).await;
        let (a, b) = tokio::join!(
            Daemon::start(&one, &database_url, free_port()),
            Daemon::start(&two, &database_url, free_port())
        );
        let client = crate::helpers::http_client();
        for daemon in [&a, &b] {
            let ready = client.get(format!("{}/readyz", daemon.address)).send().await.unwrap();
            assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
            // Each serves the schema both migrated: an upload opens on either.
            let init = client
                .post(format!("{}/upload/init", daemon.address))
                .json(&serde_json::json!({"url": format!("https://cluster.test/{}.mp4", free_port()), "bucket": "b"}))
                .send()
                .await
                .unwrap();
            assert_eq!(init.status(), 200, "{}", init.text().await.unwrap());
        }
    }
}
