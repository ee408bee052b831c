//! Section 5, frames: one frame at a time, many in one call (in request
//! order, equal to the single answers), PNG and JPEG, a width, and 416 for a
//! time beyond the end.

use crate::both_backends;
use crate::helpers::{Backend, assert_error, fixture, spawn_app};
use base64::Engine;
use serde_json::{Value, json};

fn decode(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory(bytes).expect("a decodable image").to_rgb8()
}

fn difference(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    let total: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
    total as f64 / a.as_raw().len() as f64
}

async fn frames_one_by_one_and_in_a_batch(backend: Backend) {
    let app = spawn_app(backend).await;
    let video = fixture("small");
    let result = app.upload("https://x.test/frames.mp4", "b", None, video).await;
    let hash = result["hash"].as_str().unwrap().to_owned();

    let single = |pts: i64, extra: &str| {
        let url = app.url(&format!("/video/{hash}/frame?pts_ns={pts}{extra}"));
        let client = app.client.clone();
        async move { client.get(url).send().await.unwrap() }
    };
    let first = single(0, "").await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "image/png");
    let first = first.bytes().await.unwrap();
    assert!(first.starts_with(b"\x89PNG"), "a PNG");
    assert_eq!(decode(&first).dimensions(), (320, 240));
    let later = single(1_500_000_000, "&format=jpeg&width=160").await;
    assert_eq!(later.headers()["content-type"], "image/jpeg");
    let later = later.bytes().await.unwrap();
    assert!(later.starts_with(&[0xff, 0xd8]), "a JPEG");
    assert_eq!(decode(&later).dimensions(), (160, 120));

    // A batch out of order answers in request order, each equal to its single answer.
    let times = [1_800_000_000i64, 0, 1_000_000_000, 400_000_000];
    let response = app
        .client
        .post(app.url(&format!("/video/{hash}/frames?as=json")))
        .json(&json!({"pts_ns": times}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let frames = body["frames"].as_array().unwrap();
    assert_eq!(frames.len(), times.len());
    let mut images = Vec::new();
    for (frame, pts) in frames.iter().zip(times) {
        assert_eq!(frame["pts_ns"], pts);
        let data = frame["data"].as_str().unwrap().strip_prefix("data:image/png;base64,").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD.decode(data).unwrap();
        let alone = single(pts, "").await.bytes().await.unwrap();
        assert_eq!(decode(&bytes), decode(&alone), "batch and single frame at {pts} differ");
        images.push(decode(&bytes));
    }
    // The test pattern moves: frames at different times differ.
    assert!(difference(&images[0], &images[1]) > 1.0);
    assert!(difference(&images[1], &decode(&first)) < 0.5, "the frame at 0 is the first frame");

    // multipart/mixed, the default.
    let response = app
        .client
        .post(app.url(&format!("/video/{hash}/frames")))
        .json(&json!({"pts_ns": [0, 1_000_000_000], "format": "jpeg"}))
        .send()
        .await
        .unwrap();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("multipart/mixed; boundary="), "{content_type}");
    let text = response.bytes().await.unwrap();
    assert_eq!(text.windows(b"Content-Type: image/jpeg".len()).filter(|w| w == b"Content-Type: image/jpeg").count(), 2);

    // Bad input.
    assert_error(single(60_000_000_000, "").await, 416, "frame-out-of-range").await;
    assert_error(single(-1, "").await, 416, "frame-out-of-range").await;
    assert_error(single(0, "&format=gif").await, 400, "invalid-format").await;
    assert_error(single(0, "&width=1").await, 400, "invalid-width").await;
    let unknown = blake3::hash(b"nothing").to_hex().to_string();
    let response = app.client.get(app.url(&format!("/video/{unknown}/frame?pts_ns=0"))).send().await.unwrap();
    assert_error(response, 404, "unknown-video").await;
    let response = app.client.get(app.url(&format!("/video/{hash}/frame"))).send().await.unwrap();
    assert_error(response, 400, "invalid-query").await;
    let response =
        app.client.post(app.url(&format!("/video/{hash}/frames"))).json(&json!({"pts_ns": []})).send().await.unwrap();
    assert_error(response, 400, "invalid-batch").await;
}
both_backends!(frames_one_by_one_and_in_a_batch, s3);

async fn a_thumbnail_is_made_once_and_goes_with_the_video(backend: Backend) {
    let app = spawn_app(backend).await;
    let result = app.upload("https://x.test/thumb.mp4", "b", None, fixture("large")).await;
    let hash = result["hash"].as_str().unwrap().to_owned();
    let meta = app.get_json(&format!("/meta/{hash}")).await;
    let url = meta["thumbnail_url"].as_str().expect("meta names the thumbnail").to_owned();
    assert_eq!(url, format!("/media/{hash}/thumbnail.jpg"));
    let kept = app.root.join(".media").join(&hash).join("thumbnail.jpg");
    assert!(kept.exists(), "the analysis made the thumbnail while the upload arrived");
    let first = app.client.get(app.url(&url)).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "image/jpeg");
    let first = first.bytes().await.unwrap();
    assert_eq!(decode(&first).dimensions(), (320, 180));
    assert_eq!(std::fs::read(&kept).unwrap(), first.as_ref(), "kept for the next request");
    let second = app.client.get(app.url(&url)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(second, first);
    // Without one (an older video, the analysis off), the first request makes it.
    std::fs::remove_file(&kept).unwrap();
    let made = app.client.get(app.url(&url)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(decode(&made).dimensions(), (320, 180));
    assert!(kept.exists());

    assert_eq!(app.client.delete(app.url(&format!("/video/{hash}"))).send().await.unwrap().status(), 204);
    assert!(!kept.exists(), "derived media go with the video");
    assert_error(app.client.get(app.url(&url)).send().await.unwrap(), 404, "unknown-video").await;
}
both_backends!(a_thumbnail_is_made_once_and_goes_with_the_video);

/// The frames of a video with B-frames and keyframes every 2 s, asked in a
/// batch spread over 12 s (so it is split between decoders and skips
/// unreferenced frames), equal to what the ffmpeg CLI extracts at the same
/// times (frame boundaries, so both mean the same frame).
#[actix_web::test]
async fn a_spread_batch_equals_the_ffmpeg_cli_frame_by_frame() {
    let app = spawn_app(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.mp4");
    crate::helpers::ffmpeg_to(
        &path,
        "-f lavfi -i testsrc2=size=320x240:rate=25 -t 12 -c:v libx264 -g 50 -bf 3 -pix_fmt yuv420p -movflags +faststart",
    );
    let video = std::fs::read(&path).unwrap();
    let result = app.upload("https://x.test/long.mp4", "b", None, video).await;
    let hash = result["hash"].as_str().unwrap().to_owned();
    let times_ms = [11_320i64, 520, 6_040, 2_200, 9_880, 4_000, 4_040, 11_960];
    let pts: Vec<i64> = times_ms.iter().map(|ms| ms * 1_000_000).collect();
    let response = app
        .client
        .post(app.url(&format!("/video/{hash}/frames?as=json")))
        .json(&json!({"pts_ns": pts}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    for (frame, ms) in body["frames"].as_array().unwrap().iter().zip(times_ms) {
        let data = frame["data"].as_str().unwrap().strip_prefix("data:image/png;base64,").unwrap();
        let ours = decode(&base64::engine::general_purpose::STANDARD.decode(data).unwrap());
        let cli = |ms: i64| {
            let reference = dir.path().join(format!("ref-{ms}.png"));
            crate::helpers::ffmpeg_to(
                &reference,
                &format!("-ss {}.{:03} -i {} -frames:v 1 -pix_fmt rgb24", ms / 1000, ms % 1000, path.display()),
            );
            decode(&std::fs::read(&reference).unwrap())
        };
        let theirs = cli(ms);
        assert_eq!(ours.dimensions(), theirs.dimensions());
        let d = difference(&ours, &theirs);
        assert!(d < 2.0, "frame at {ms} ms differs from the ffmpeg CLI's by {d:.2} per channel");
        // Nearer to that frame than to its neighbours: the very frame, not one beside it.
        for neighbour in [ms - 40, ms + 40].into_iter().filter(|t| (0..12_000).contains(t)) {
            let other = difference(&ours, &cli(neighbour));
            assert!(d < other, "frame at {ms} ms: {d:.2} from the CLI's, {other:.2} from the one at {neighbour} ms");
        }
        let single = app
            .client
            .get(app.url(&format!("/video/{hash}/frame?pts_ns={}", ms * 1_000_000)))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(decode(&single), ours, "single and batch at {ms} ms");
    }
}
