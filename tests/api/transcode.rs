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
pub fn source_1080p() -> std::path::PathBuf {
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

/// The NAL unit type of the first coded slice of the first sample of a
/// media segment, read by FFmpeg's `trace_headers` on the init segment and
/// that one segment: an independent reading of what the ladder wrote.
/// 5 is an IDR picture; 1 a non-IDR slice (even an I slice).
fn first_slice_nal_type(work: &std::path::Path, init: &[u8], segment: &[u8]) -> u8 {
    let file = work.join("one-segment.mp4");
    std::fs::write(&file, [init, segment].concat()).unwrap();
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-i"])
        .arg(&file)
        .args(["-map", "0:v", "-frames:v", "1", "-c", "copy", "-bsf:v", "trace_headers", "-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    let log = String::from_utf8_lossy(&out.stderr);
    // The init segment's SPS (7) and PPS (8) come first, then SEI (6) and
    // delimiters; the first of types 1-5 is the first slice.
    log.lines()
        .filter(|l| l.contains(" nal_unit_type "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u8>().ok())
        .find(|t| (1..=5).contains(t))
        .unwrap_or_else(|| panic!("no slice in the segment: {log}"))
}

/// `avc1.PPCCLL` from what ffprobe reads of an init segment's stream (with
/// a media segment, without which it reads no level): profile and level
/// (the constraint byte as x264 writes it for High, Main and Constrained
/// Baseline).
fn avc_codec_of(work: &std::path::Path, init: &[u8], segment: &[u8]) -> String {
    let file = work.join("init.mp4");
    std::fs::write(&file, [init, segment].concat()).unwrap();
    let probe = ffprobe_json(file.to_str().unwrap(), "stream=profile,level");
    let stream = &probe["streams"][0];
    let (profile, constraints) = match stream["profile"].as_str().unwrap() {
        "High" => (100, 0),
        "Main" => (77, 0x40),
        "Constrained Baseline" => (66, 0xc0),
        other => panic!("unexpected profile {other}"),
    };
    format!("avc1.{profile:02x}{constraints:02x}{:02x}", stream["level"].as_u64().unwrap())
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
    listen_as(app, reqwest::Client::new()).await
}

/// `listen`, with `client`'s credentials.
pub async fn listen_as(
    app: &TestApp,
    client: reqwest::Client,
) -> tokio::sync::mpsc::UnboundedReceiver<serde_json::Value> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let url = app.url("/events");
    actix_web::rt::spawn(async move {
        let response = client.get(url).send().await.unwrap();
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

    // Every segment of every rung starts with an IDR frame: a player can
    // start or switch at any segment. Each rung's codec string is what its
    // init segment says, its BANDWIDTH the measured peak, and the MPD
    // states the same.
    assert!(master.contains("#EXT-X-INDEPENDENT-SEGMENTS"), "{master}");
    let work = tempfile::tempdir().unwrap();
    let dash_reps: Vec<&roxmltree::Node> = representations.iter().take(4).collect();
    let video_set = dash_reps[0].parent().unwrap();
    assert_eq!(video_set.attribute("startWithSAP"), Some("1"), "{mpd}");
    assert_eq!(video_set.attribute("frameRate"), Some("30/1"), "{mpd}");
    assert_ne!(video_set.attribute("bitstreamSwitching"), Some("true"), "each rung has its own init segment: {mpd}");
    for (rung, (_, _, bandwidth, codecs, uri)) in found.iter().enumerate() {
        let playlist_path = resolve(&master_path, uri);
        let playlist = app.client.get(app.url(&playlist_path)).send().await.unwrap().text().await.unwrap();
        assert!(playlist.contains("#EXT-X-INDEPENDENT-SEGMENTS"), "{playlist}");
        let init_uri =
            playlist.lines().find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\"")).unwrap().trim_end_matches('"');
        let init =
            app.client.get(app.url(&resolve(&playlist_path, init_uri))).send().await.unwrap().bytes().await.unwrap();
        let mut peak = 0f64;
        let mut starts = Vec::new();
        let mut video_codec = None;
        let mut lines = playlist.lines();
        while let Some(line) = lines.next() {
            let Some(extinf) = line.strip_prefix("#EXTINF:") else { continue };
            let seconds: f64 = extinf.trim_end_matches(',').parse().unwrap();
            let segment_uri = lines.by_ref().find(|l| !l.starts_with('#')).unwrap();
            let segment = app
                .client
                .get(app.url(&resolve(&playlist_path, segment_uri)))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            starts.push(first_slice_nal_type(work.path(), &init, &segment));
            video_codec.get_or_insert_with(|| avc_codec_of(work.path(), &init, &segment));
            peak = peak.max(segment.len() as f64 * 8.0 / seconds);
        }
        assert_eq!(starts, vec![5u8; 10], "rung {rung}: the first slice of each segment (5 = IDR, 1 = not)");
        let video_codec = video_codec.unwrap();
        assert_eq!(codecs.split(',').next(), Some(video_codec.as_str()), "rung {rung}: CODECS against avcC");
        assert_eq!(dash_reps[rung].attribute("codecs"), Some(video_codec.as_str()), "rung {rung}: MPD codecs");
        let dash_bandwidth: f64 = dash_reps[rung].attribute("bandwidth").unwrap().parse().unwrap();
        assert!((dash_bandwidth - peak).abs() <= 2.0, "rung {rung}: MPD bandwidth {dash_bandwidth}, peak {peak}");
        assert!(*bandwidth as f64 >= peak, "rung {rung}: BANDWIDTH {bandwidth} below the video's peak {peak}");
        let stream_inf = master.lines().filter(|l| l.starts_with("#EXT-X-STREAM-INF:")).nth(rung).unwrap();
        assert!(stream_inf.contains("FRAME-RATE=30.000"), "{stream_inf}");
        let average: u64 =
            stream_inf.split("AVERAGE-BANDWIDTH=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
        assert!(average <= *bandwidth && average as f64 > peak / 3.0, "{stream_inf}");
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

/// Runs `vidcache requeue-outdated` on the app's database and storage.
fn requeue_outdated(app: &TestApp, dry_run: bool) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vidcache"));
    command
        .arg("requeue-outdated")
        .env_remove("VIDCACHE_CONFIG")
        .env("VIDCACHE__STORAGE__ROOT", &app.root)
        .env("VIDCACHE__DATABASE__URL", &app.database_url)
        .env("VIDCACHE__LOG__FILTER", "warn");
    if dry_run {
        command.arg("--dry-run");
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Videos published by the first ladder (segments under `abr/seg/`, not
/// starting with IDR frames) are found by `vidcache requeue-outdated` and
/// transcoded again by it or by `POST /video/{hash}/transcode`; the new
/// renditions replace the old whole, under segment URLs of their own.
async fn an_old_ladder_is_found_and_transcoded_again(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.transcode.workers = 1;
        s.transcode.ladder = "180:300".into();
        s.transcode.preset = "ultrafast".into();
    })
    .await;
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("small.mp4");
    ffmpeg_to(&file, "-f lavfi -i testsrc2=size=320x180:rate=25 -t 4 -c:v libx264 -pix_fmt yuv420p");
    let uploaded = app.upload("https://example.com/small.mp4", "videos", None, std::fs::read(&file).unwrap()).await;
    let hash = uploaded["hash"].as_str().unwrap().to_owned();
    wait_for_transcode(&app, &hash, "ready", 120).await;
    let abr = app.root.join(".media").join(&hash).join("abr");
    assert!(abr.join("seg-v2").is_dir(), "the current ladder's segments");
    assert_eq!(requeue_outdated(&app, true).trim(), "0 outdated, 0 queued");

    // What the first ladder left: its segments under `seg/`.
    let make_old = || {
        std::fs::rename(abr.join("seg-v2"), abr.join("seg")).unwrap();
    };
    make_old();
    let listed = requeue_outdated(&app, true);
    assert_eq!(listed, format!("1 outdated, 0 queued\n{hash} ladder v1\n"));
    let master = app.client.get(app.url(&format!("/media/{hash}/hls/master.m3u8"))).send().await.unwrap();
    assert_eq!(master.status(), 200, "the old renditions are served meanwhile");

    // The command queues it; the daemon's worker transcodes it. Meanwhile
    // the video stays playable: /meta keeps its manifest URLs.
    assert!(requeue_outdated(&app, false).starts_with("1 outdated, 1 queued\n"));
    let meta = app.get_json(&format!("/meta/{hash}")).await;
    assert_eq!(meta["transcode"]["hls_url"], format!("/media/{hash}/hls/master.m3u8"), "{meta}");
    wait_for_transcode(&app, &hash, "ready", 120).await;
    assert!(abr.join("seg-v2").is_dir() && !abr.join("seg").exists(), "replaced whole");
    assert_eq!(requeue_outdated(&app, true).trim(), "0 outdated, 0 queued");

    // The endpoint does the same for one video.
    make_old();
    let response = app.client.post(app.url(&format!("/video/{hash}/transcode"))).send().await.unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["queued"], true);
    wait_for_transcode(&app, &hash, "ready", 120).await;
    assert!(abr.join("seg-v2").is_dir() && !abr.join("seg").exists());
    let playlist = app.client.get(app.url(&format!("/media/{hash}/hls/media_0.m3u8"))).send().await.unwrap();
    assert!(playlist.text().await.unwrap().contains("../seg-v2/chunk-0-00001.m4s"));
}

#[actix_web::test]
async fn an_old_ladder_is_found_and_transcoded_again_sqlite() {
    an_old_ladder_is_found_and_transcoded_again(Backend::Sqlite).await
}

#[actix_web::test]
async fn an_old_ladder_is_found_and_transcoded_again_postgres() {
    an_old_ladder_is_found_and_transcoded_again(Backend::Postgres).await
}
