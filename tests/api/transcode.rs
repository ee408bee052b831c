//! Transcoding through the embedded queue: a 20 s 1080p upload with audio
//! becomes an HLS master and a DASH MPD over one set of CMAF segments,
//! which ffprobe plays back rung by rung over HTTP; segments start on
//! keyframes aligned across rungs; media is served with the contract's
//! types, ranges, CORS and caching; events arrive over `GET /events`.

use crate::helpers::{Backend, TestApp, ffmpeg_to, spawn_app_with, wait_for_transcode};
use futures::StreamExt;
use std::collections::BTreeSet;
use std::process::Command;

/// 20 s of 1080p30 with a tone, made once per run.
fn source_1080p() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vidcache-fixtures-{}-3", env!("CARGO_PKG_VERSION")));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hd20.mp4");
    if !path.exists() {
        let tmp = dir.join(format!("hd20.{}.tmp.mp4", std::process::id()));
        ffmpeg_to(
            &tmp,
            "-f lavfi -i testsrc2=size=1920x1080:rate=30 -f lavfi -i sine=frequency=330:sample_rate=48000 -t 20 \
             -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -movflags +faststart",
        );
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

pub fn ffprobe_json(url: &str, entries: &str) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", entries, "-of", "json", url])
        .output()
        .expect("ffprobe runs");
    assert!(out.status.success(), "ffprobe {url}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Keyframe times (ms) of the first video stream at `url`.
fn keyframes_ms(url: &str) -> Vec<i64> {
    let probe = ffprobe_json(url, "packet=pts_time,flags");
    let mut keys: Vec<i64> = probe["packets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["flags"].as_str().unwrap_or("").starts_with('K'))
        .filter_map(|p| p["pts_time"].as_str()?.parse::<f64>().ok())
        .map(|t| (t * 1000.0).round() as i64)
        .collect();
    keys.sort();
    keys
}

/// `(width, height, bandwidth, codecs, uri)` of each variant of a master playlist.
fn variants(master: &str) -> Vec<(u32, u32, u64, String, String)> {
    let lines: Vec<&str> = master.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(attrs) = line.strip_prefix("#EXT-X-STREAM-INF:") else { continue };
        let attr = |name: &str| {
            let start = attrs.find(&format!("{name}="))? + name.len() + 1;
            let rest = &attrs[start..];
            Some(if let Some(quoted) = rest.strip_prefix('"') {
                quoted[..quoted.find('"')?].to_owned()
            } else {
                rest.split(',').next()?.to_owned()
            })
        };
        let (w, h) = attr("RESOLUTION").unwrap().split_once('x').map(|(w, h)| (w.to_owned(), h.to_owned())).unwrap();
        let uri = lines[i + 1..].iter().find(|l| !l.trim().is_empty()).unwrap().trim().to_owned();
        out.push((
            w.parse().unwrap(),
            h.parse().unwrap(),
            attr("BANDWIDTH").unwrap().parse().unwrap(),
            attr("CODECS").unwrap(),
            uri,
        ));
    }
    out
}

/// Resolves `rel` against the URL path `base` (a file's path).
fn resolve(base: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = base.split('/').collect();
    parts.pop();
    for piece in rel.split('/') {
        match piece {
            ".." => {
                parts.pop();
            }
            "." => {}
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Collects `GET /events` into a channel until the test ends; returns once
/// the stream is open.
pub async fn listen(app: &TestApp) -> tokio::sync::mpsc::UnboundedReceiver<serde_json::Value> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let url = app.url("/events");
    actix_web::rt::spawn(async move {
        let response = reqwest::get(url).await.unwrap();
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                if block.contains(": connected") {
                    let _ = tx.send(serde_json::json!({"type": "_connected"}));
                }
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                    let _ = tx.send(serde_json::from_str(data).unwrap());
                }
            }
        }
    });
    let mut rx = rx;
    let hello = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert_eq!(hello["type"], "_connected");
    rx
}

async fn a_1080p_upload_becomes_hls_and_dash_over_the_same_segments(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.transcode.workers = 1).await;
    let mut events = listen(&app).await;
    let bytes = std::fs::read(source_1080p()).unwrap();
    let uploaded = app.upload("https://example.com/hd20.mp4", "videos", None, bytes).await;
    let hash = uploaded["hash"].as_str().unwrap().to_owned();
    let meta = wait_for_transcode(&app, &hash, "ready", 600).await;
    assert_eq!(meta["transcode"]["hls_url"], format!("/media/{hash}/hls/master.m3u8"));
    assert_eq!(meta["transcode"]["dash_url"], format!("/media/{hash}/dash/manifest.mpd"));
    assert_eq!(meta["transcode"]["renditions"].as_array().unwrap().len(), 4);

    // The HLS master lists every rung, highest first, with its numbers.
    let master_path = format!("/media/{hash}/hls/master.m3u8");
    let response = app.client.get(app.url(&master_path)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/vnd.apple.mpegurl");
    let master = response.text().await.unwrap();
    let found = variants(&master);
    let sizes: Vec<(u32, u32)> = found.iter().map(|v| (v.0, v.1)).collect();
    assert_eq!(sizes, vec![(1920, 1080), (1280, 720), (854, 480), (426, 240)], "{master}");
    for ((_, _, bandwidth, codecs, _), kbps) in found.iter().zip([5000u64, 3000, 1500, 400]) {
        assert!(
            *bandwidth >= kbps * 1000 && *bandwidth <= (kbps + 400) * 1000 * 12 / 10,
            "BANDWIDTH {bandwidth} for a {kbps} kb/s rung"
        );
        assert!(codecs.starts_with("avc1.") && codecs.contains("mp4a.40.2"), "CODECS {codecs}");
    }
    assert!(master.contains("TYPE=AUDIO"), "an audio rendition group: {master}");

    // The MPD is XML with the same video representations and one audio.
    let mpd_path = format!("/media/{hash}/dash/manifest.mpd");
    let response = app.client.get(app.url(&mpd_path)).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/dash+xml");
    let mpd = response.text().await.unwrap();
    let doc = roxmltree::Document::parse(&mpd).expect("the MPD is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "MPD");
    let representations: Vec<roxmltree::Node> =
        doc.descendants().filter(|n| n.tag_name().name() == "Representation").collect();
    let video: Vec<(u32, u32)> = representations
        .iter()
        .filter(|r| r.attribute("mimeType") == Some("video/mp4") || r.attribute("width").is_some())
        .map(|r| (r.attribute("width").unwrap().parse().unwrap(), r.attribute("height").unwrap().parse().unwrap()))
        .collect();
    assert_eq!(video, sizes, "the MPD has the playlist's rungs");
    assert_eq!(representations.len(), 5, "four video and one audio representation");

    // Both point at the same segment files.
    let mut from_hls = BTreeSet::new();
    for (_, _, _, _, uri) in &found {
        let playlist_path = resolve(&master_path, uri);
        let playlist = app.client.get(app.url(&playlist_path)).send().await.unwrap().text().await.unwrap();
        for line in playlist.lines() {
            let uri = line
                .strip_prefix("#EXT-X-MAP:URI=\"")
                .map(|r| r.trim_end_matches('"'))
                .or_else(|| (!line.starts_with('#') && !line.trim().is_empty()).then_some(line.trim()));
            if let Some(uri) = uri {
                from_hls.insert(resolve(&playlist_path, uri));
            }
        }
    }
    let mut from_dash = BTreeSet::new();
    for (index, rep) in representations.iter().enumerate().take(4) {
        let template = rep
            .descendants()
            .chain(rep.parent().unwrap().children())
            .find(|n| n.tag_name().name() == "SegmentTemplate")
            .unwrap();
        let id = rep.attribute("id").unwrap();
        assert_eq!(id, index.to_string());
        let count = template
            .descendants()
            .filter(|n| n.tag_name().name() == "S")
            .map(|s| 1 + s.attribute("r").map_or(0, |r| r.parse::<usize>().unwrap()))
            .sum::<usize>();
        assert_eq!(count, 10, "10 segments of 2 s a rung");
        let init = template.attribute("initialization").unwrap().replace("$RepresentationID$", id);
        from_dash.insert(resolve(&mpd_path, &init));
        let media = template.attribute("media").unwrap();
        for number in 1..=count {
            let name = media.replace("$RepresentationID$", id).replace("$Number%05d$", &format!("{number:05}"));
            from_dash.insert(resolve(&mpd_path, &name));
        }
    }
    let hls_video: BTreeSet<String> = from_hls.iter().filter(|p| !p.contains("-4")).cloned().collect();
    assert_eq!(hls_video, from_dash, "HLS and DASH name the same segments");
    for path in from_hls.iter().take(3) {
        assert_eq!(app.client.head(app.url(path)).send().await.unwrap().status(), 200, "{path}");
    }

    // ffprobe plays each rung through the playlists and through the MPD.
    for ((w, h, _, _, uri), rung) in found.iter().zip(0..) {
        let url = app.url(&resolve(&master_path, uri));
        let probe = ffprobe_json(&url, "stream=width,height:format=duration");
        let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
        assert!((duration - 20.0).abs() < 0.5, "rung {rung} lasts {duration} s through HLS");
        assert_eq!(
            (probe["streams"][0]["width"].as_u64(), probe["streams"][0]["height"].as_u64()),
            (Some(u64::from(*w)), Some(u64::from(*h)))
        );
    }
    let probe = ffprobe_json(&app.url(&mpd_path), "stream=codec_type,width,height:format=duration");
    let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - 20.0).abs() < 0.5, "the MPD lasts {duration} s");
    let mut dash_sizes: Vec<(u64, u64)> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["codec_type"] == "video")
        .map(|s| (s["width"].as_u64().unwrap(), s["height"].as_u64().unwrap()))
        .collect();
    dash_sizes.sort_by(|a, b| b.cmp(a));
    assert_eq!(dash_sizes, sizes.iter().map(|&(w, h)| (u64::from(w), u64::from(h))).collect::<Vec<_>>());
    assert!(probe["streams"].as_array().unwrap().iter().any(|s| s["codec_type"] == "audio"));

    // Every segment starts with a keyframe, at the same times on every rung.
    let mut first: Option<Vec<i64>> = None;
    for (_, _, _, _, uri) in &found {
        let keys = keyframes_ms(&app.url(&resolve(&master_path, uri)));
        let start = keys[0];
        let relative: Vec<i64> = keys.iter().map(|k| k - start).collect();
        assert_eq!(relative, (0..10).map(|i| i * 2000).collect::<Vec<_>>(), "keyframes every 2 s: {keys:?}");
        match &first {
            None => first = Some(keys),
            Some(expected) => assert_eq!(&keys, expected, "keyframes align across rungs"),
        }
    }

    // Serving: ranges, types, caching, CORS; unknown and hostile paths 404.
    let segment = from_dash.iter().find(|p| p.contains("chunk-0-00002")).unwrap().clone();
    let response = app
        .client
        .get(app.url(&segment))
        .header("Range", "bytes=0-99")
        .header("Origin", "https://player.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(response.headers()["content-type"], "video/iso.segment");
    assert_eq!(response.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert!(response.headers()["content-range"].to_str().unwrap().starts_with("bytes 0-99/"));
    assert!(response.headers().contains_key("access-control-allow-origin"));
    assert_eq!(response.bytes().await.unwrap().len(), 100);
    let init = from_dash.iter().find(|p| p.contains("init-0")).unwrap().clone();
    let response = app.client.get(app.url(&init)).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "video/mp4");
    let body = response.bytes().await.unwrap();
    assert_eq!(&body[4..8], b"ftyp", "an init segment starts with ftyp");
    let response = app.client.get(app.url(&segment)).header("Range", "bytes=999999999-").send().await.unwrap();
    assert_eq!(response.status(), 416);
    for bad in [
        format!("/media/{hash}/hls/../../vidcache.db"),
        format!("/media/{hash}/..%2F..%2Fvidcache.db"),
        format!("/media/{hash}/.abr.tmp/x.m4s"),
        format!("/media/{hash}/seg/chunk-0-99999.m4s"),
        format!("/media/{hash}/hls/master.txt"),
        "/media/nothex/hls/master.m3u8".to_owned(),
    ] {
        let response = app.client.get(app.url(&bad)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{bad}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "not-found", "{bad}");
    }

    // The storyboard: a tile every 2 s in a sprite, mapped by WebVTT.
    let vtt = app.client.get(app.url(&format!("/media/{hash}/storyboard.vtt"))).send().await.unwrap();
    assert_eq!(vtt.headers()["content-type"], "text/vtt; charset=utf-8");
    let vtt = vtt.text().await.unwrap();
    assert!(vtt.starts_with("WEBVTT"));
    assert_eq!(vtt.matches("storyboard.jpg#xywh=").count(), 10, "{vtt}");
    let sprite = app.client.get(app.url(&format!("/media/{hash}/storyboard.jpg"))).send().await.unwrap();
    assert_eq!(sprite.headers()["content-type"], "image/jpeg");
    assert!(sprite.bytes().await.unwrap().starts_with(&[0xFF, 0xD8]));

    // Events: completed upload, then started, progress and completed.
    let mut kinds = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
        assert_eq!(event["version"], 1);
        let kind = event["type"].as_str().unwrap().to_owned();
        if kind == "transcode.completed" {
            assert_eq!(event["hash"], hash.as_str());
            kinds.push(kind);
            break;
        }
        kinds.push(kind);
    }
    assert_eq!(kinds.first().map(String::as_str), Some("upload.completed"), "{kinds:?}");
    assert_eq!(kinds.get(1).map(String::as_str), Some("transcode.started"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "transcode.progress"), "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("transcode.completed"), "{kinds:?}");

    // Asked again, a ready video is left alone; the video list says ready.
    let again = app.client.post(app.url(&format!("/video/{hash}/transcode"))).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<serde_json::Value>().await.unwrap()["status"], "ready");
}

#[actix_web::test]
async fn a_1080p_upload_becomes_hls_and_dash_over_the_same_segments_sqlite() {
    a_1080p_upload_becomes_hls_and_dash_over_the_same_segments(Backend::Sqlite).await
}
