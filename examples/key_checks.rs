//! Key checks per second on one thread (issue 15's benchmark; run by
//! `tests/bench/auth_bench.py` pinned to one core), beside the floor they
//! stand on: bare HMAC-SHA256 over the same bytes, measured in the same run.
//!
//!     cargo run --release --example key_checks
#![allow(clippy::disallowed_methods)] // a one-shot measurement, nothing else runs

use hmac::{Hmac, Mac};
use std::time::Instant;
use vidcache::auth::Auth;
use vidcache::config::{ApiKey, Scope};
use vidcache::domain::ContentHash;

const N: u32 = 400_000;

fn rate(label: &str, mut f: impl FnMut(u32) -> bool) -> f64 {
    let mut ok = 0u32;
    let start = Instant::now();
    for i in 0..N {
        ok += u32::from(f(i));
    }
    let per_sec = f64::from(N) / start.elapsed().as_secs_f64();
    assert!(ok == N || ok == 0, "{label}: every check must answer alike ({ok} of {N})");
    println!("  {label:44} {:>10.0} /s", per_sec);
    per_sec
}

fn main() {
    let keys: Vec<ApiKey> = (0..100)
        .map(|i| ApiKey {
            id: format!("key{i}"),
            key: format!("secret-of-key-{i}"),
            project_id: "p".into(),
            scopes: Scope::all(),
        })
        .collect();
    let auth = Auth::in_memory(&keys, b"a-server-secret-for-the-benchmark");
    let hash = ContentHash::parse(&"ab".repeat(32)).unwrap();
    let (token, _) = auth.playback_token(&hash, Some("p"), 3600);
    let holders = [("p".to_owned(), false)];
    let hex = hash.to_hex();
    println!("checks per second on one thread ({N} each, 100 keys in the ring):");
    let floor = rate("bare HMAC-SHA256 (reference)", |_| {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"a-server-secret-for-the-benchmark").unwrap();
        mac.update(b"vidcache api key\0key42\0secret-of-key-42");
        std::hint::black_box(mac.finalize().into_bytes());
        true
    });
    let key = rate("API key (id, secret) right", |_| {
        std::hint::black_box(&auth).check("key42", "secret-of-key-42").is_some()
    });
    let wrong =
        rate("API key (id, secret) wrong secret", |_| std::hint::black_box(&auth).check("key42", "nope").is_some());
    let playback =
        rate("playback token", |_| std::hint::black_box(&auth).check_playback(&token, &hex, &holders).is_ok());
    println!(
        "  key/HMAC = {:.2}, wrong/right = {:.2} (alike: no early exit), playback/HMAC = {:.2}",
        key / floor,
        wrong / key,
        playback / floor
    );
    holders_lookup(&auth, &token, &hash);
}

/// What a signed media request pays besides the MAC: the look-up of the
/// projects holding the video (`admit_playback`), on a SQLite file as the
/// embedded default keeps it, on the same one thread. The repository keeps
/// the holders it read for a second, so all but the first are answered
/// from memory, as at every segment of a playing video.
fn holders_lookup(auth: &Auth, token: &str, hash: &ContentHash) {
    const LOOKUPS: u32 = 20_000;
    let dir = std::env::temp_dir().join(format!("vidcache-key-checks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("meta.db").display());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let repo = vidcache::storage::Repository::connect(&url, 1).await.unwrap();
        let hex = hash.to_hex();
        let start = Instant::now();
        for _ in 0..LOOKUPS {
            let holders: Vec<(String, bool)> =
                repo.holders(hash).await.unwrap().into_iter().map(|h| (h.project, h.pending)).collect();
            std::hint::black_box(auth.check_playback(token, &hex, &holders).is_ok());
        }
        let per_sec = f64::from(LOOKUPS) / start.elapsed().as_secs_f64();
        println!("  {:44} {:>10.0} /s", "playback token with the holders look-up", per_sec);
        println!("  one signed request's check: {:.1} µs", 1e6 / per_sec);
    });
    let _ = std::fs::remove_dir_all(&dir);
}
