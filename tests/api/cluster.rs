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

/// `docker-compose.yaml` is a valid compose file (Debian's docker-compose
/// checks it with no engine), with the stack the README describes, and
/// every `VIDCACHE__*` setting it gives names a setting the daemon has.
#[test]
fn the_compose_file_is_valid_and_names_real_settings() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let check = std::process::Command::new("docker-compose")
        .args(["-f", "docker-compose.yaml", "config", "-q"])
        .current_dir(dir)
        .output()
        .expect("docker-compose is installed (make test installs it)");
    assert!(check.status.success(), "docker-compose config: {}", String::from_utf8_lossy(&check.stderr));
    let services = std::process::Command::new("docker-compose")
        .args(["-f", "docker-compose.yaml", "config", "--services"])
        .current_dir(dir)
        .output()
        .unwrap();
    let services = String::from_utf8_lossy(&services.stdout).into_owned();
    for needed in ["postgres", "kafka", "s3", "serve-1", "serve-2", "worker", "lb"] {
        assert!(services.lines().any(|s| s == needed), "{needed} missing from {services}");
    }
    // The settings, as the daemon would read them from the environment.
    let text = std::fs::read_to_string(format!("{dir}/docker-compose.yaml")).unwrap();
    let mut tables = std::collections::BTreeMap::<String, Vec<String>>::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("VIDCACHE__") else { continue };
        let (name, value) = rest.split_once(':').unwrap();
        let value = value.trim().trim_matches('"');
        // `${VAR:-default}`: the default.
        let value = value.strip_prefix("${").map_or(value, |v| v.split(":-").nth(1).unwrap().trim_end_matches('}'));
        let key = name.to_lowercase().replace("__", ".");
        let quoted = if value.parse::<f64>().is_ok() || value == "true" || value == "false" {
            value.to_owned()
        } else {
            format!("{value:?}")
        };
        let (table, leaf) = key.rsplit_once('.').unwrap();
        // The worker's own values repeat the shared ones: the first counts.
        let lines = tables.entry(table.to_owned()).or_default();
        if !lines.iter().any(|l| l.starts_with(&format!("{leaf} ="))) {
            lines.push(format!("{leaf} = {quoted}"));
        }
    }
    let file: String = tables.iter().map(|(table, lines)| format!("[{table}]\n{}\n", lines.join("\n"))).collect();
    assert!(file.contains("[storage.s3]\nendpoint"), "{file}");
    let config = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
    std::fs::write(config.path(), &file).unwrap();
    let settings = vidcache::config::Settings::load(Some(config.path())).expect("the compose settings load");
    assert_eq!(settings.storage.backend, vidcache::config::StorageBackend::S3);
    assert_eq!(settings.storage.s3.endpoint, "http://s3:9000");
    assert_eq!(settings.database.url, "postgres://vidcache:vidcache@postgres/vidcache");
}
