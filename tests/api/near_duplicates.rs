//! Perceptual near-duplicates end to end: the generated corpus through the
//! real upload path, with precision and recall; merge and keep; the index
//! rebuilt at start-up; a deleted video forgotten.

use crate::corpus::corpus;
use crate::helpers::{Backend, TestApp, blake3_hex, spawn_app_with};
use serde_json::Value;
use vidcache::config::NearDuplicatePolicy;

async fn upload_file(app: &TestApp, url: &str, path: &std::path::Path) -> Value {
    app.upload(url, "corpus", None, std::fs::read(path).unwrap()).await
}

#[actix_web::test]
async fn the_corpus_is_found_with_precision_and_recall_of_one() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.dedup.near_duplicate = NearDuplicatePolicy::Keep).await;
    let corpus = corpus();
    // hash -> family of every stored video
    let mut family_of = std::collections::HashMap::new();
    let (mut tp, mut fp, mut fn_) = (0u32, 0u32, 0u32);
    let mut report = Vec::new();
    for (family, variant, path) in &corpus {
        let result = upload_file(&app, &format!("https://corpus.test/{family}/{variant}"), path).await;
        assert_eq!(result["status"], "new", "keep stores every video: {result}");
        family_of.insert(result["hash"].as_str().unwrap().to_owned(), family.clone());
        let found = result["near_duplicate_of"].as_str().map(|h| family_of[h].clone());
        let distance = result["phash_distance"].as_u64();
        report.push(format!("{family}/{variant}: {found:?} at {distance:?}"));
        match (variant.as_str(), found) {
            ("source", None) => {}
            ("source", Some(_)) => fp += 1,
            (_, Some(f)) if &f == family => {
                tp += 1;
                assert!(distance.is_some_and(|d| d <= 13), "{family}/{variant}: {result}");
            }
            (_, Some(_)) => {
                fp += 1;
                fn_ += 1;
            }
            (_, None) => fn_ += 1,
        }
    }
    let precision = f64::from(tp) / f64::from((tp + fp).max(1));
    let recall = f64::from(tp) / f64::from((tp + fn_).max(1));
    println!("corpus: {} videos, precision {precision:.3}, recall {recall:.3}\n{}", corpus.len(), report.join("\n"));
    assert_eq!(tp as usize, corpus.len() - crate::corpus::source_count(), "{}", report.join("\n"));
    assert_eq!((precision, recall), (1.0, 1.0), "{}", report.join("\n"));
}

#[actix_web::test]
async fn a_near_duplicate_is_merged_into_the_stored_video_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let corpus = corpus();
    let path = |family: &str, variant: &str| {
        corpus.iter().find(|(f, v, _)| f == family && v == variant).map(|(_, _, p)| p.clone()).unwrap()
    };
    let db = vidcache::config::Settings::sqlite_url_under(dir.path());
    let source_hash = {
        let app = spawn_app_with(Backend::Sqlite, |s| {
            s.storage.root = root.clone();
            s.database.url = db.clone();
        })
        .await;
        let source = upload_file(&app, "https://m.test/source", &path("life", "source")).await;
        assert_eq!(source["status"], "new");
        let copy_bytes = std::fs::read(path("life", "240p")).unwrap();
        let copy = app.upload("https://m.test/240p", "corpus", None, copy_bytes.clone()).await;
        assert_eq!(copy["status"], "duplicate", "{copy}");
        assert_eq!(copy["hash"], source["hash"]);
        assert_eq!(copy["match"], "perceptual", "{copy}");
        let d = copy["phash_distance"].as_u64().expect("a distance");
        assert!(d <= 13, "within the rule: {copy}");
        assert_ne!(copy["variant"], source["hash"], "a perceptual, not an exact, match: {copy}");
        let resolved = app.get_json("/resolve?url=https://m.test/240p").await;
        assert_eq!(resolved["hash"], source["hash"]);
        let meta = app.get_json(&format!("/meta/{}", source["hash"].as_str().unwrap())).await;
        assert_eq!(meta["aliases"].as_array().unwrap().len(), 2, "{meta}");
        assert!(meta["analysis"]["samples"].as_u64().unwrap() >= 10, "{meta}");
        assert_eq!(meta["analysis"]["audio"], "fingerprinted", "{meta}");
        // The copy's bytes are kept, as a variant, and read back whole.
        let variant = copy["variant"].as_str().expect("the variant's hash").to_owned();
        assert_eq!(variant, blake3_hex(&copy_bytes));
        assert_eq!(crate::helpers::files_under(&root.join("corpus")).len(), 2, "the copy's bytes are kept");
        let read = app.client.get(app.url(&format!("/video/{variant}"))).send().await.unwrap();
        assert_eq!(blake3_hex(&read.bytes().await.unwrap()), variant);
        let listed = &meta["variants"][0];
        assert_eq!(listed["hash"], variant.as_str(), "{meta}");
        assert_eq!(listed["url"], "https://m.test/240p");
        assert_eq!(listed["match"]["audio"], "agree", "the soundtracks agree: {meta}");
        assert!(listed["match"]["matched_samples"].as_u64().unwrap() >= 3, "{meta}");
        let own = app.get_json(&format!("/meta/{variant}")).await;
        assert_eq!(own["variant_of"], source["hash"], "{own}");
        assert_eq!(own["transcode"]["status"], "none", "a variant is not transcoded");
        let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("vidcache_perceptual_merges_total 1"), "{metrics}");
        source["hash"].as_str().unwrap().to_owned()
    };
    // The index a restart rebuilds holds the stored video, not its variant.
    let repo = vidcache::storage::Repository::connect(&db, 1).await.unwrap();
    let settings = vidcache::config::Settings::load(None).unwrap();
    let indexed = vidcache::dedup::NearDuplicates::new(&settings.dedup).rebuild(&repo).await.unwrap();
    assert_eq!(indexed, 1, "variants are not indexed");
    drop(repo);
    // A second daemon on the same database (its own storage root, since the
    // first still holds this one) rebuilds the index at start-up.
    let app = spawn_app_with(Backend::Sqlite, |s| s.database.url = db.clone()).await;
    let copy = upload_file(&app, "https://m.test/crop", &path("life", "crop5")).await;
    assert_eq!(copy["status"], "duplicate", "{copy}");
    assert_eq!(copy["hash"], source_hash.as_str());
    // Another source is new; the exact bytes again are a duplicate at 0.
    let other = upload_file(&app, "https://m.test/other", &path("gradients", "source")).await;
    assert_eq!(other["status"], "new", "{other}");
    assert!(other.get("phash_distance").is_none());
    let again = upload_file(&app, "https://m.test/again", &path("life", "source")).await;
    assert_eq!((again["status"].as_str(), again["phash_distance"].as_u64()), (Some("duplicate"), Some(0)));
    // Deleted, the source is forgotten, with its variants: its copy is new now.
    let variants = app.get_json(&format!("/meta/{source_hash}")).await["variants"].clone();
    assert_eq!(variants.as_array().unwrap().len(), 2, "{variants}");
    let deleted = app.client.delete(app.url(&format!("/video/{source_hash}"))).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    for variant in variants.as_array().unwrap() {
        let gone = app.client.get(app.url(&format!("/meta/{}", variant["hash"].as_str().unwrap()))).send().await;
        assert_eq!(gone.unwrap().status(), 404, "a deleted video's variants go with it");
    }
    let copy_bytes = std::fs::read(path("life", "watermark")).unwrap();
    let after = app.upload("https://m.test/wm", "corpus", None, copy_bytes.clone()).await;
    assert_eq!(after["status"], "new", "{after}");
    assert_eq!(after["hash"], blake3_hex(&copy_bytes));
}

#[actix_web::test]
async fn keep_records_the_near_duplicate_in_meta() {
    let app = spawn_app_with(Backend::Postgres, |s| s.dedup.near_duplicate = NearDuplicatePolicy::Keep).await;
    let corpus = corpus();
    let path = |variant: &str| corpus.iter().find(|(f, v, _)| f == "mandelbrot" && v == variant).unwrap().2.clone();
    let source = upload_file(&app, "https://k.test/s", &path("source")).await;
    let copy = upload_file(&app, "https://k.test/c", &path("15fps")).await;
    assert_eq!(copy["status"], "new");
    assert_eq!(copy["near_duplicate_of"], source["hash"]);
    let meta = app.get_json(&format!("/meta/{}", copy["hash"].as_str().unwrap())).await;
    assert_eq!(meta["near_duplicate_of"], source["hash"]);
    assert_eq!(meta["phash_distance"], copy["phash_distance"]);
    assert_eq!(app.objects().len(), 2);
}

/// An upload that arrives faster than it decodes: finalize answers on what
/// the analysis had by then, and the complete signature replaces it soon
/// after, in the database and in the index.
#[actix_web::test]
async fn a_signature_handed_over_at_finalize_is_completed_after_the_upload() {
    // The 1.5 MB source is over the 1 MiB that is always decoded before finalize.
    let app = spawn_app_with(Backend::Sqlite, |s| s.analysis.finish_budget_ms = 0).await;
    let corpus = corpus();
    let path = |variant: &str| corpus.iter().find(|(f, v, _)| f == "testsrc2" && v == variant).unwrap().2.clone();
    let source = upload_file(&app, "https://h.test/source", &path("source")).await;
    assert_eq!(source["status"], "new");
    let hash = source["hash"].as_str().unwrap().to_owned();
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("vidcache_analyses_handed_over_total 1"), "finalize went on a partial analysis");
    let mut samples = 0;
    for _ in 0..100 {
        let meta = app.get_json(&format!("/meta/{hash}")).await;
        samples = meta["analysis"]["samples"].as_u64().unwrap_or(0);
        if samples >= 10 {
            assert_eq!(meta["analysis"]["packets_skipped"], 0, "the background pass decoded every frame: {meta}");
            assert_eq!(meta["analysis"]["audio"], "fingerprinted", "and its sound: {meta}");
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(samples >= 10, "the signature was completed: {samples} samples");
    // The completed signature is in the index: a copy matches it.
    let app_ok = spawn_app_with(Backend::Sqlite, |s| s.database.url = app.database_url.clone()).await;
    let copy = upload_file(&app_ok, "https://h.test/copy", &path("crop5")).await;
    assert_eq!((copy["status"].as_str(), copy["hash"].as_str()), (Some("duplicate"), Some(hash.as_str())), "{copy}");
}

/// Every look-alike is a different video: none may be answered `duplicate`
/// (stills and black screens with different sound, blank pages, slides, a
/// shared intro, two halves of one video, one picture sequence with two
/// soundtracks), on both databases, under the default policy (merge).
async fn no_look_alike_is_taken_for_another(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let mut merged = Vec::new();
    for (name, path) in crate::corpus::lookalikes() {
        let result = upload_file(&app, &format!("https://look.test/{name}"), &path).await;
        if result["status"] != "new" {
            merged.push(format!("{name}: {result}"));
        }
    }
    assert!(merged.is_empty(), "look-alikes taken for another video:\n{}", merged.join("\n"));
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("vidcache_perceptual_merges_total 0"), "no perceptual merge");
    // The ones with the same pictures were told apart by their sound.
    let vetoes = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vidcache_audio_vetoes_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(vetoes >= 3, "the episodes and the re-scored pictures were vetoed by their sound: {vetoes}");
}
crate::both_backends!(no_look_alike_is_taken_for_another);

/// A wrong merge undone: the variant becomes its own video, with its URL,
/// its video entry, a transcode, and a place in the index (a copy of it
/// now matches it).
#[actix_web::test]
async fn unmerge_makes_a_variant_its_own_video_again() {
    let app = spawn_app_with(Backend::Postgres, |_| {}).await;
    let corpus = corpus();
    let path = |variant: &str| corpus.iter().find(|(f, v, _)| f == "testsrc2" && v == variant).unwrap().2.clone();
    let source = upload_file(&app, "https://u.test/source", &path("source")).await;
    let copy = upload_file(&app, "https://u.test/copy", &path("watermark")).await;
    assert_eq!(copy["match"], "perceptual", "{copy}");
    let variant = copy["variant"].as_str().unwrap().to_owned();
    // Not a variant: refused with a reason.
    let refused = app.client.post(app.url(&format!("/video/{}/unmerge", source["hash"].as_str().unwrap()))).send();
    let refused = refused.await.unwrap();
    assert_eq!(refused.status(), 409);
    assert_eq!(refused.json::<Value>().await.unwrap()["code"], "not-a-variant");
    let transcode = app.client.post(app.url(&format!("/video/{variant}/transcode"))).send().await.unwrap();
    assert_eq!(transcode.status(), 409, "a variant is not transcoded");

    let done = app.client.post(app.url(&format!("/video/{variant}/unmerge"))).send().await.unwrap();
    assert_eq!(done.status(), 200);
    let done: Value = done.json().await.unwrap();
    assert_eq!(done["aliases"], serde_json::json!(["https://u.test/copy"]), "{done}");
    assert_eq!(app.get_json("/resolve?url=https://u.test/copy").await["hash"], variant.as_str());
    let meta = app.get_json(&format!("/meta/{variant}")).await;
    assert_eq!(meta["variant_of"], Value::Null, "{meta}");
    assert_eq!(meta["near_duplicate_of"], source["hash"], "the match stays on record");
    assert!(["queued", "processing", "ready"].contains(&meta["transcode"]["status"].as_str().unwrap()), "{meta}");
    let stored = app.get_json(&format!("/meta/{}", source["hash"].as_str().unwrap())).await;
    assert_eq!(stored["variants"], serde_json::json!([]), "{stored}");
    assert_eq!(stored["aliases"], serde_json::json!(["https://u.test/source"]));
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("vidcache_unmerges_total 1"), "{metrics}");
    // Through the chunked door, `GET /videos/{id}` says why its upload was merged.
    let bytes = std::fs::read(path("crop5")).unwrap();
    let init = crate::chunked::init_chunked(&app, "crop.mp4", bytes.len(), 1 << 20).await;
    let id = init["upload_id"].as_str().unwrap().to_owned();
    for (i, chunk) in bytes.chunks(1 << 20).enumerate() {
        assert_eq!(crate::chunked::send_chunk(&app, &id, i, chunk, false).await.status(), 200);
    }
    let finished: Value =
        app.client.post(app.url(&format!("/videos/finalize/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(finished["match"], "perceptual", "{finished}");
    let entry = app.get_json(&format!("/videos/{}", finished["video_id"])).await;
    assert_eq!(entry["variant"], blake3_hex(&bytes).as_str(), "{entry}");
    assert!(entry["match"]["distance"].is_u64() && entry["match"]["audio"].is_string(), "{entry}");
    let again = app.client.post(app.url(&format!("/video/{variant}/unmerge"))).send().await.unwrap();
    assert_eq!(again.status(), 409, "unmerged once");
}

/// `dedup.variant_retention` in days is the operator's opt-in to lose
/// variant bytes: once past it, the sweep removes the variant, and its URL
/// stays an alias of the video it was merged into. (With `keep`, the
/// default, the merge test above finds its variants after a restart.)
#[actix_web::test]
async fn variants_past_their_retention_are_removed_and_their_urls_stay() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.dedup.variant_retention = vidcache::config::VariantRetention::Days(0);
        s.dedup.variant_sweep_secs = 1;
    })
    .await;
    let corpus = corpus();
    let path = |variant: &str| corpus.iter().find(|(f, v, _)| f == "gradients" && v == variant).unwrap().2.clone();
    let source = upload_file(&app, "https://r.test/source", &path("source")).await;
    let copy = upload_file(&app, "https://r.test/copy", &path("crf38")).await;
    let variant = copy["variant"].as_str().expect("kept as a variant first").to_owned();
    let mut status = 200;
    for _ in 0..100 {
        status = app.client.get(app.url(&format!("/video/{variant}"))).send().await.unwrap().status().as_u16();
        if status == 404 {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 404, "the variant was removed");
    assert_eq!(app.get_json("/resolve?url=https://r.test/copy").await["hash"], source["hash"]);
    let meta = app.get_json(&format!("/meta/{}", source["hash"].as_str().unwrap())).await;
    assert_eq!(meta["variants"], serde_json::json!([]), "{meta}");
    // The row goes first, then the file (a kill between leaves an orphan
    // file, never a row without its bytes): the file may trail the 404.
    for _ in 0..50 {
        if app.objects().len() == 1 {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(app.objects().len(), 1, "only the stored video's bytes are left");
}

/// The seed client's own example (issue 27): a test pattern with a steady
/// 440 Hz tone, re-encoded smaller (240p, CRF 32), is the same video. A
/// steady tone cannot tell one sound from another, so the sound abstains
/// and the pictures decide: the copy is merged, and so is the same picture
/// with a 660 Hz tone; the match says the audio abstained. A different
/// picture with the same tone stays new (the sound never makes a match).
#[actix_web::test]
async fn a_re_encode_with_a_steady_tone_is_matched_and_the_sound_abstains() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, args: &str| {
        let path = dir.path().join(name);
        crate::helpers::ffmpeg_to(&path, args);
        path
    };
    let x264 = "-c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac -shortest -movflags +faststart";
    let pattern = "-f lavfi -i testsrc2=size=640x360:rate=25:duration=12";
    let source = file("source.mp4", &format!("{pattern} -f lavfi -i sine=frequency=440:duration=12 {x264} -crf 20"));
    let smaller = file(
        "smaller.mp4",
        &format!("-i {} -vf scale=-2:240 -c:v libx264 -crf 32 -preset veryfast -c:a aac -b:a 64k", source.display()),
    );
    let other_tone = file("660.mp4", &format!("{pattern} -f lavfi -i sine=frequency=660:duration=12 {x264} -crf 23"));
    let other_picture = file(
        "other.mp4",
        &format!("-f lavfi -i mandelbrot=size=640x360:rate=25 -f lavfi -i sine=frequency=440:duration=12 -t 12 {x264}"),
    );
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let stored = upload_file(&app, "https://seed.test/source", &source).await;
    assert_eq!(stored["status"], "new", "{stored}");
    for (url, path) in [("https://seed.test/240p", &smaller), ("https://seed.test/660", &other_tone)] {
        let copy = upload_file(&app, url, path).await;
        assert_eq!(copy["status"], "duplicate", "{url}: {copy}");
        assert_eq!(copy["match"], "perceptual", "{url}: {copy}");
        assert_eq!(copy["hash"], stored["hash"], "{url}: {copy}");
    }
    let meta = app.get_json(&format!("/meta/{}", stored["hash"].as_str().unwrap())).await;
    let variants = meta["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2, "{meta}");
    for variant in variants {
        assert_eq!(variant["match"]["audio"], "abstained", "a steady tone says nothing: {meta}");
        assert!(variant["match"]["matched_samples"].as_u64().unwrap() >= 3, "{meta}");
    }
    let other = upload_file(&app, "https://seed.test/other", &other_picture).await;
    assert_eq!(other["status"], "new", "the same tone under another picture: {other}");
}
